"""KD against the best scratch recipe, not only the one KD was tuned for.

Why it exists: bench/zoo.py trains KD student and scratch baseline with one recipe, and that recipe is chosen on
KD runs (its gradient clip: bench/results/zoo_clip_sweep.json). A knob that suits the KD loss can weaken the
baseline, and the KD gain then grows for the wrong reason. Given finished zoo work folders that differ only in
the students' recipe, this picks, per student and protocol, the scratch recipe with the higher mean validation
top-1 (the test split only reports) and pairs each seed's KD test top-1 with that recipe's scratch run.

    .venv/bin/python bench/zoo_baselines.py --kd runs/bench-zoo-v7 \\
        --scratch "clip 4.0=runs/bench-zoo-v7" --scratch "clip 1.0=runs/bench-zoo-v6"
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo

from kd2trt.artifacts import atomic_write_json


def choose_baseline(candidates: dict[str, list[dict[str, float]]]) -> str:
    """The scratch recipe whose runs have the highest mean validation top-1 (the first named wins a tie)."""
    return max(candidates, key=lambda name: statistics.fmean(run["val_top1"] for run in candidates[name]))


def summary_of(work: Path, seed: int, arch_dir: str, protocol: str) -> dict[str, Any]:
    """A finished zoo run with both a KD student and a scratch baseline; {} when the run did not finish."""
    run_dir = work / f"seed{seed}" / arch_dir / f"labels{protocol}"
    summary = zoo.read_run_summary(run_dir)
    if summary and not all(isinstance(summary.get(role), dict) for role in ("student", "baseline")):
        zoo.fail(f"{run_dir / 'distill.json'}: has no KD student and scratch baseline; pass folders written by "
                 "bench/zoo.py (bench/zoo_sweep.py runs have no baseline)")
    return summary


def compare(kd_work: Path, scratch_works: dict[str, Path], seeds: int) -> dict[str, Any]:
    """Per student and protocol: KD test top-1, each scratch recipe's validation / test, the chosen one, gains."""
    rows: dict[str, Any] = {}
    for arch in zoo.STUDENTS:
        arch_dir = arch.replace(":", "_")
        for protocol in ("0.1", "1.0"):
            kd = [summary_of(kd_work, seed, arch_dir, protocol) for seed in range(seeds)]
            scratch = {name: [summary_of(work, seed, arch_dir, protocol) for seed in range(seeds)]
                       for name, work in scratch_works.items()}
            if not all(kd) or not all(all(runs) for runs in scratch.values()):
                continue  # a run missing from one of the folders: nothing to pair
            baselines = {name: [s["baseline"] for s in runs] for name, runs in scratch.items()}
            chosen = choose_baseline(baselines)
            kd_test = [s["student"]["test_top1"] for s in kd]
            gains = [k - b["test_top1"] for k, b in zip(kd_test, baselines[chosen], strict=True)]
            rows.setdefault(arch, {})[protocol] = {
                "kd_test_top1": zoo.mean_sd(kd_test),
                "scratch": {name: {"val_top1": zoo.mean_sd([b["val_top1"] for b in runs]),
                                   "test_top1": zoo.mean_sd([b["test_top1"] for b in runs])}
                            for name, runs in baselines.items()},
                "chosen_on_validation": chosen,
                "kd_gain": zoo.mean_sd(gains)}
    return rows


def markdown(rows: dict[str, Any], names: list[str]) -> str:
    head = ["student", "protocol", "KD"] + [f"scratch, {n} (val)" for n in names] + ["chosen", "KD gain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arch, protocols in rows.items():
        for protocol, cell in protocols.items():
            kd, gain = cell["kd_test_top1"], cell["kd_gain"]
            scratch = [f"{cell['scratch'][n]['test_top1']['mean']:.1f} ({cell['scratch'][n]['val_top1']['mean']:.1f})"
                       for n in names]
            lines.append(f"| `{arch}` | {float(protocol):.0%} | {kd['mean']:.1f} ± {kd['sd']:.1f} | "
                         + " | ".join(scratch) + f" | {cell['chosen_on_validation']} | "
                         f"{gain['mean']:+.1f} ± {gain['sd']:.1f} |")
    return "\n".join(lines)


def named_folder(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=FOLDER, e.g. 'clip 1.0=runs/bench-zoo-v6'")
    return name, Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kd", type=Path, required=True, help="the zoo work folder whose KD students count")
    parser.add_argument("--scratch", type=named_folder, action="append", required=True, metavar="NAME=FOLDER",
                        help="a zoo work folder whose scratch runs are a candidate baseline (repeat)")
    parser.add_argument("--seeds", type=zoo.positive_int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/zoo_baselines.json"))
    args = parser.parse_args()
    works = dict(args.scratch)
    for folder in [args.kd, *works.values()]:
        if not (folder / "seed0").is_dir():
            zoo.fail(f"{folder} is not a bench/zoo.py work folder (no seed0/); run bench/zoo.py --work {folder} "
                     "first")
    rows = compare(args.kd, works, args.seeds)
    table = markdown(rows, list(works))
    atomic_write_json(args.out, {"kd": str(args.kd), "scratch": {n: str(p) for n, p in works.items()},
                                 "seeds": args.seeds, "students": rows, "markdown": table})
    print(table)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
