"""The chest-X-ray recipe on a local stand-in: does `pipeline/imagefolder.yaml` make KD at least as good as scratch?

The stand-in has the chest-X-ray set's shape — grey images, two classes at 1:3 imbalance, 128 px, ROOT/{train,
val,test}/CLASS/ — written reproducibly from scikit-learn's digits (`kd2trt.data.write_digits_folder`, digits 3
and 8: 60 and 180 images, 20 % each to val and test), so it needs no download. Per seed: teacher / KD / scratch
test top-1 and balanced accuracy (the figure that counts on imbalanced classes), the paired KD gains, epochs
chosen on validation and wall time. Writes bench/results/imagefolder.json.

    .venv/bin/python bench/imagefolder.py                              # the recipe as shipped, seeds 0-2
    .venv/bin/python bench/imagefolder.py --set student.train.epochs=30 --out /tmp/imagefolder-30.json
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
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-imagefolder"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/imagefolder.json"))
    args = parser.parse_args()
    console = Console()
    started = time.perf_counter()

    data_root = args.work / "data"
    if not (data_root / "test").is_dir():
        write_digits_folder(data_root, image_size=128, channels=1, digits=DIGITS, per_class=PER_CLASS, seed=0)
    try:
        extra = dict(parse_override(pair) for pair in args.overrides)  # kd2trt's own --set parser
        load_config(args.recipe, extra)  # a bad recipe or key: one line before any training
    except Kd2trtError as exc:
        console.print(f"[red]error[/]: {exc}")
        raise SystemExit(2) from None

    per_seed = []
    for seed in range(args.seeds):
        seed_started = time.perf_counter()
        config = load_config(args.recipe, {"seed": seed, "data.spec": f"imagefolder:{data_root}", **extra})
        summary = run_distill(config, args.work / f"seed{seed}", console=QUIET)
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
        "recipe": str(args.recipe), "overrides": extra, "seeds": args.seeds, "kd2trt": __version__,
        "torch": torch.__version__,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": first["device"]},
        "data": {"digits": DIGITS, "per_class": PER_CLASS, "image_size": 128, "channels": 1,
                 "train_images": first["train_images"], "test_images": first["test_images"],
                 "test_class_counts": first.get("test_class_counts")},
        "params": {"teacher": first["teacher"]["params"], "student": first["student"]["params"]},
        "test_top1": {"teacher": figure("teacher", "test_top1"), "student_kd": figure("student", "test_top1"),
                      "student_scratch": figure("baseline", "test_top1")},
        "test_balanced_accuracy": {"teacher": figure("teacher", "test_balanced_accuracy"),
                                   "student_kd": figure("student", "test_balanced_accuracy"),
                                   "student_scratch": figure("baseline", "test_balanced_accuracy")},
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
