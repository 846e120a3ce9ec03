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


def overrides_for(args: argparse.Namespace, setting: dict[str, Any]) -> dict[str, Any]:
    """The zoo's overrides for seed `args.seed`, the student's recipe changed by `setting`, no scratch baseline."""
    recipe_args = argparse.Namespace(lr=zoo.LR, grad_clip=zoo.GRAD_CLIP, warmup=0.1, epochs=6, teacher_lr=2e-3,
                                     teacher_epochs=6, image_size=32, batch_size=32, device="cpu")
    data_root = args.work / "data-all"
    overrides = {**zoo.recipe(recipe_args, data_root, args.seed), **zoo.student_overrides(args.arch),
                 "teacher.weights": str(args.work / f"seed{args.seed}" / "teacher" / "teacher.pt"),
                 "data.labeled_fraction": args.fraction, "distill.baseline": False}
    train = dict(overrides["student.train"])
    for key, value in setting.items():
        if key.startswith("train."):
            train[key.removeprefix("train.")] = value
        else:
            overrides[key] = value
    overrides["student.train"] = train
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="a bench/zoo.py work folder (data and teachers)")
    parser.add_argument("--arch", required=True)
    parser.add_argument("--grid", required=True, help="a JSON list of settings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.1, help="labeled fraction")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/zoo-sweep/sweep.jsonl"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for index, setting in enumerate(json.loads(args.grid)):
        run_dir = args.out.parent / args.arch.replace(":", "_") / f"seed{args.seed}-{int(time.time())}-{index}"
        started = time.perf_counter()
        summary = run_distill(load_config(None, overrides_for(args, setting)), run_dir, console=zoo.QUIET)
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
