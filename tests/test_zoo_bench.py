"""bench/zoo.py --jobs: runs in parallel processes give the figures the same runs give one after another.

The zoo benchmark meets its time budget on 2 cores only by running two 1-thread processes at once; that is
worth nothing if a run's result depends on where it ran (a teacher of the wrong seed, a shared RNG, a run
written into another run's folder, a worker on another thread count). Same thread count, same seeds: the
figures and every epoch's training loss of every run must be the same number for number.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

TINY = ["--students", "cnn,shufflenet_v2_x0_5", "--seeds", "2", "--protocols", "0.5", "--per-class", "12",
        "--image-size", "16", "--epochs", "1", "--teacher-epochs", "1", "--no-export", "--threads", "1"]


def zoo(tmp_path: Path, jobs: int) -> dict:
    out = tmp_path / f"zoo-jobs{jobs}.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "zoo.py"), *TINY, "--jobs", str(jobs),
                    "--work", str(tmp_path / f"work{jobs}"), "--out", str(out)],
                   check=True, cwd=REPO, capture_output=True, timeout=600)
    return json.loads(out.read_text())


def losses(work: Path) -> dict[str, list[float]]:
    """Every epoch's training loss of every model trained under `work` (exact floats: any reordering shows)."""
    return {str(path.relative_to(work)): [epoch["train_loss"] for epoch in json.loads(path.read_text())]
            for path in sorted(work.rglob("*.metrics.json"))}


def figures(result: dict) -> dict:
    return {"teacher": result["teacher_test_top1"]["values"],
            "students": {arch: {p: (f["kd"]["values"], f["scratch"]["values"]) for p, f in row["protocols"].items()}
                         for arch, row in result["students"].items()}}


def test_two_jobs_give_the_figures_of_one(tmp_path: Path) -> None:
    serial, parallel = zoo(tmp_path, 1), zoo(tmp_path, 2)
    assert parallel["machine"]["jobs"] == 2 and parallel["machine"]["torch_threads_per_job"] == 1
    assert set(parallel["students"]) == {"cnn", "shufflenet_v2_x0_5"}
    assert figures(parallel) == figures(serial)
    serial_losses = losses(tmp_path / "work1")
    assert len(serial_losses) == 2 + 2 * 2 * 2  # 2 teachers; 2 students × 2 seeds, each KD + scratch
    assert losses(tmp_path / "work2") == serial_losses
