"""Benchmark of `kd2trt distill` on a recipe over several seeds; writes JSON.

Measures teacher / scratch student / KD student test top-1 (mean ± sd over seeds), the paired
KD gain, parameter counts, seconds per epoch (scratch vs KD, with and without the teacher
soft-label cache) and whole-run wall time, and checks them against the targets of the default
recipe. Run from the repository root:

    .venv/bin/python bench/distill.py                       # pipeline/digits.yaml, seeds 0-4
    .venv/bin/python bench/distill.py --seeds 3 --out bench/results/distill.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console

from kd2trt import __version__
from kd2trt.artifacts import atomic_write_json
from kd2trt.config import load_config
from kd2trt.distill.train import run_distill

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115


def mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("pipeline/digits.yaml"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-distill"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/distill.json"))
    args = parser.parse_args()
    console = Console()

    per_seed = []
    for seed in range(args.seeds):
        started = time.perf_counter()
        summary = run_distill(load_config(args.recipe, {"seed": seed}), args.work / f"seed{seed}", console=QUIET)
        summary["process_wall_seconds"] = time.perf_counter() - started
        per_seed.append(summary)
        console.print(f"seed {seed}: teacher {summary['teacher']['test_top1']:.2f}  KD "
                      f"{summary['student']['test_top1']:.2f}  scratch {summary['baseline']['test_top1']:.2f}  "
                      f"({summary['process_wall_seconds']:.1f}s)")

    # KD epoch cost without the soft-label cache: the teacher of seed 0 loaded, student only.
    no_cache = run_distill(load_config(args.recipe, {
        "seed": 0, "teacher.weights": str(args.work / "seed0" / "teacher.pt"), "distill.teacher_cache": "off",
        "distill.baseline": False}), args.work / "seed0-nocache", console=QUIET)

    def figure(role: str) -> dict[str, float]:
        return mean_sd([s[role]["test_top1"] for s in per_seed])

    gains = [s["student"]["test_top1"] - s["baseline"]["test_top1"] for s in per_seed]
    gaps = [s["teacher"]["test_top1"] - s["student"]["test_top1"] for s in per_seed]
    gain, gap = mean_sd(gains), mean_sd(gaps)
    first = per_seed[0]
    result = {
        "recipe": str(args.recipe), "seeds": args.seeds, "kd2trt": __version__, "torch": torch.__version__,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": first["device"]},
        "labeled_fraction": first["labeled_fraction"], "labeled_images": first["labeled_images"],
        "train_images": first["train_images"], "test_images": first["test_images"],
        "params": {"teacher": first["teacher"]["params"], "student": first["student"]["params"]},
        "compression": first["compression"],
        "test_top1": {"teacher": figure("teacher"), "student_kd": figure("student"),
                      "student_scratch": figure("baseline")},
        "kd_gain_points": gain, "teacher_gap_points": gap,
        "train_seconds_per_epoch": {
            "teacher": statistics.fmean(s["teacher"]["train_seconds_per_epoch"] for s in per_seed),
            "student_scratch": statistics.fmean(s["baseline"]["train_seconds_per_epoch"] for s in per_seed),
            "student_kd_cached_teacher": statistics.fmean(s["student"]["train_seconds_per_epoch"] for s in per_seed),
            "student_kd_live_teacher": no_cache["student"]["train_seconds_per_epoch"],
        },
        "distill_wall_seconds": mean_sd([s["process_wall_seconds"] for s in per_seed]),
        "targets": {
            "kd_beats_scratch_by_2_points": gain["mean"] >= 2.0,
            "kd_gain_exceeds_twice_paired_sd": gain["mean"] > 2 * gain["sd"],
            "kd_within_2_points_of_teacher": gap["mean"] <= 2.0,
            "at_least_10x_fewer_params": first["compression"] >= 10,
            "distill_under_3_minutes": max(s["process_wall_seconds"] for s in per_seed) < 180,
        },
    }
    atomic_write_json(args.out, result)
    console.print_json(data={k: result[k] for k in ("test_top1", "kd_gain_points", "teacher_gap_points",
                                                    "train_seconds_per_epoch", "targets")})
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
