"""The chest-X-ray recipe on a local stand-in: does `pipeline/imagefolder.yaml` make KD at least as good as scratch?

The stand-in has the chest-X-ray set's shape — grey images, two classes at 1:3 imbalance, 128 px, ROOT/{train,
val,test}/CLASS/ — written reproducibly from scikit-learn's digits (`kd2trt.data.write_digits_folder`, digits 3
and 8: 60 and 180 images, 20 % each to val and test), so it needs no download. With `--splits per-seed` (the
default) seed k also draws its own stratified split (`write_digits_folder(seed=k)`): one split's 47 test images
(12 of the minority class) cannot resolve less than one image, 2.1 points of top-1 or 4.2 of balanced accuracy,
and a different split per seed turns the seeds into repeated random sub-sampling; `--splits fixed` keeps split 0
for every seed (the earlier protocol). Per seed: teacher / KD / scratch
test top-1 and balanced accuracy (the figure that counts on imbalanced classes), the paired KD gains, epochs
chosen on validation and wall time. Writes bench/results/imagefolder.json.

    .venv/bin/python bench/imagefolder.py                              # the recipe as shipped, seeds (and splits) 0-4
    .venv/bin/python bench/imagefolder.py --set student.train.epochs=30 --out /tmp/imagefolder-30.json
    .venv/bin/python bench/imagefolder.py --resume --set distill.alpha=0.9 --out /tmp/imagefolder-a09.json

`--resume` keeps every stage of `--work` whose resume state was written for the same sections of the recipe
(the teacher: seed, data, teacher; the scratch baseline: seed, data, student), so a sweep of distillation knobs
trains each seed's teacher and baseline once. Validation figures are recorded beside the test ones: a sweep
chooses on validation, the test split only reports.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from kd2trt import __version__
from kd2trt.artifacts import atomic_write_json
from kd2trt.config import load_config, parse_override
from kd2trt.data import write_digits_folder
from kd2trt.distill.train import run_distill
from kd2trt.errors import Kd2trtError

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
DIGITS, PER_CLASS = [3, 8], [60, 180]


def mean_sd(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("pipeline/imagefolder.yaml"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-imagefolder"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/imagefolder.json"))
    parser.add_argument("--splits", choices=("per-seed", "fixed"), default="per-seed",
                        help="per-seed: seed k trains and tests on split k; fixed: split 0 for every seed")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the stages in --work whose resume state matches the recipe (kd2trt's "
                             "resume='matching'); the others train afresh")
    args = parser.parse_args()
    console = Console()
    started = time.perf_counter()

    def data_root(seed: int) -> Path:
        split = seed if args.splits == "per-seed" else 0
        root = args.work / f"data-split{split}"
        if not (root / "test").is_dir():
            write_digits_folder(root, image_size=128, channels=1, digits=DIGITS, per_class=PER_CLASS, seed=split)
        return root

    try:
        extra = dict(parse_override(pair) for pair in args.overrides)  # kd2trt's own --set parser
        load_config(args.recipe, extra)  # a bad recipe or key: one line before any training
    except Kd2trtError as exc:
        console.print(f"[red]error[/]: {exc}")
        raise SystemExit(2) from None

    per_seed = []
    for seed in range(args.seeds):
        seed_started = time.perf_counter()
        config = load_config(args.recipe, {"seed": seed, "data.spec": f"imagefolder:{data_root(seed)}", **extra})
        summary = run_distill(config, args.work / f"seed{seed}", resume="matching" if args.resume else False,
                              console=QUIET)
        summary["process_wall_seconds"] = time.perf_counter() - seed_started
        per_seed.append(summary)
        console.print(
            f"seed {seed}: " + "  ".join(
                f"{name} {summary[role]['test_top1']:.1f}% / bal. {summary[role]['test_balanced_accuracy']:.1f}%"
                for name, role in (("teacher", "teacher"), ("KD", "student"), ("scratch", "baseline")))
            + f"  ({summary['process_wall_seconds']:.0f}s)")

    def figure(role: str, key: str) -> dict[str, Any]:
        return mean_sd([s[role][key] for s in per_seed])

    first = per_seed[0]
    gains = [s["student"]["test_top1"] - s["baseline"]["test_top1"] for s in per_seed]
    balanced_gains = [s["student"]["test_balanced_accuracy"] - s["baseline"]["test_balanced_accuracy"]
                      for s in per_seed]
    result = {
        "recipe": str(args.recipe), "overrides": extra, "seeds": args.seeds, "resume": args.resume,
        "kd2trt": __version__, "torch": torch.__version__,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": first["device"]},
        "data": {"digits": DIGITS, "per_class": PER_CLASS, "image_size": 128, "channels": 1, "splits": args.splits,
                 "train_images": first["train_images"], "test_images": first["test_images"],
                 "test_class_counts": first.get("test_class_counts")},
        "params": {"teacher": first["teacher"]["params"], "student": first["student"]["params"]},
        "test_top1": {"teacher": figure("teacher", "test_top1"), "student_kd": figure("student", "test_top1"),
                      "student_scratch": figure("baseline", "test_top1")},
        "test_balanced_accuracy": {"teacher": figure("teacher", "test_balanced_accuracy"),
                                   "student_kd": figure("student", "test_balanced_accuracy"),
                                   "student_scratch": figure("baseline", "test_balanced_accuracy")},
        "val_balanced_accuracy": {"teacher": figure("teacher", "val_balanced_accuracy"),
                                  "student_kd": figure("student", "val_balanced_accuracy"),
                                  "student_scratch": figure("baseline", "val_balanced_accuracy")},
        "kd_gain_points": mean_sd(gains),
        "kd_gain_balanced_accuracy_points": mean_sd(balanced_gains),
        "best_epochs": {role: [s[role].get("best_epoch") for s in per_seed] for role in ("student", "baseline")},
        "seconds_per_epoch": {role: statistics.fmean(s[role].get("train_seconds_per_epoch", 0.0) for s in per_seed)
                              for role in ("teacher", "student", "baseline")},
        "wall_seconds": time.perf_counter() - started,
        "targets": {"kd_at_least_scratch_top1": statistics.fmean(gains) >= 0.0,
                    "kd_at_least_scratch_balanced_accuracy": statistics.fmean(balanced_gains) >= 0.0,
                    "kd_at_least_scratch_every_seed": all(g >= 0.0 for g in balanced_gains)},
    }
    atomic_write_json(args.out, result)
    console.print_json(data={k: result[k] for k in ("test_top1", "test_balanced_accuracy", "kd_gain_points",
                                                    "kd_gain_balanced_accuracy_points", "targets")})
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
