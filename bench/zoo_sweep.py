"""A recipe sweep on one zoo student: the KD stage alone, against a finished zoo teacher, one run per setting.

Why it exists: bench/zoo.py gives every student one recipe (`--lr`, `--grad-clip`, …), and choosing that recipe
needs many cheap single-seed runs, not the whole zoo each time. Each setting is a JSON object of dotted
overrides on the zoo's recipe (`distill.temperature`, or `train.KEY` for the student's `student.train.KEY`);
results are appended to --out as JSON lines (KD test / validation top-1, best epoch, restarts, seconds).

    .venv/bin/python bench/zoo_sweep.py --work runs/bench-zoo-v5 --arch efficientnet_b0 \\
        --grid '[{"train.lr": 0.01, "train.grad_clip": 1.0}, {"train.lr": 0.02, "train.grad_clip": 1.0}]'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo

from kd2trt.config import load_config
from kd2trt.distill.train import run_distill
from kd2trt.errors import Kd2trtError


def overrides_for(args: argparse.Namespace, setting: dict[str, Any]) -> dict[str, Any]:
    """The zoo's overrides for seed `args.seed`, the student's recipe changed by `setting`, no scratch baseline."""
    recipe_args = zoo.build_parser().parse_args([])  # bench/zoo.py's defaults: the zoo's own recipe
    data_root = args.work / "data-all"
    overrides = {**zoo.recipe(recipe_args, data_root, args.seed), **zoo.student_overrides(args.arch),
                 "teacher.weights": str(teacher_checkpoint(args)),
                 "data.labeled_fraction": args.fraction, "distill.baseline": False}
    train = dict(overrides["student.train"])
    for key, value in setting.items():
        if key.startswith("train."):
            train[key.removeprefix("train.")] = value
        else:
            overrides[key] = value
    overrides["student.train"] = train
    return overrides


def teacher_checkpoint(args: argparse.Namespace) -> Path:
    return args.work / f"seed{args.seed}" / "teacher" / "teacher.pt"


def settings_of(text: str) -> list[dict[str, Any]]:
    """--grid: a JSON list of objects, or a one-line error (exit 2)."""
    try:
        grid = json.loads(text)
    except ValueError as exc:
        zoo.fail(f"--grid is not JSON ({exc}); pass a list such as '[{{\"train.lr\": 0.01}}]'")
    if not isinstance(grid, list) or not all(isinstance(setting, dict) for setting in grid):
        zoo.fail("--grid must be a JSON list of objects, e.g. '[{\"train.lr\": 0.01}]'")
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="a bench/zoo.py work folder (data and teachers)")
    parser.add_argument("--arch", required=True)
    parser.add_argument("--grid", required=True, help="a JSON list of settings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.1, help="labeled fraction")
    parser.add_argument("--threads", type=zoo.positive_int, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/zoo-sweep/sweep.jsonl"))
    args = parser.parse_args()
    grid = settings_of(args.grid)
    for needed in (teacher_checkpoint(args), args.work / "data-all"):
        if not needed.exists():
            zoo.fail(f"{needed} is missing; run bench/zoo.py --work {args.work} first (its data and "
                     f"seed-{args.seed} teacher are what the sweep trains against)")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for index, setting in enumerate(grid):
        run_dir = args.out.parent / args.arch.replace(":", "_") / f"seed{args.seed}-{int(time.time())}-{index}"
        started = time.perf_counter()
        try:
            summary = run_distill(load_config(None, overrides_for(args, setting)), run_dir, console=zoo.QUIET)
        except Kd2trtError as exc:
            zoo.fail(f"setting {setting}: {exc}")
        student = summary["student"]
        line = {"arch": args.arch, "seed": args.seed, "labeled_fraction": args.fraction, "setting": setting,
                "torch_threads": torch.get_num_threads(), "kd_test_top1": student["test_top1"],
                "kd_val_top1": student["val_top1"], "best_epoch": student["best_epoch"],
                "restarts": len(student.get("restarts", [])), "seconds": time.perf_counter() - started}
        with args.out.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
