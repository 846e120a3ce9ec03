"""Run by tests/test_distill.py under `torchrun --nproc-per-node 2`: distil, then every rank saves the models
it ended with (OUT/rank<r>.pt) and the epochs it selected, so the test can compare the ranks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from rich.console import Console

from kd2trt.config import load_config
from kd2trt.distill.distributed import shutdown_distributed
from kd2trt.distill.train import DistillRun


def main(out: Path, overrides: str) -> None:
    config = load_config(None, json.loads(overrides))
    run = DistillRun(config, out, False, Console(file=open(os.devnull, "w")))  # noqa: SIM115
    teacher, teacher_report = run.teacher()
    student, student_report = run.student(teacher)
    baseline, baseline_report = run.baseline()
    models = {"teacher": teacher, "student": student, "baseline": baseline}
    torch.save({"state": {role: model.state_dict() for role, model in models.items()},
                "best_epochs": {r.role: r.fit.best_epoch for r in (teacher_report, student_report, baseline_report)}},
               out / f"rank{run.ctx.rank}.pt")
    shutdown_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
