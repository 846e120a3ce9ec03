"""bench/zoo_baselines.py: the scratch recipe a KD gain is measured against is chosen on validation, and each
seed's KD run is paired with the same seed's scratch run.

Choosing the baseline by its test figure would let the test split pick the comparison it reports; pairing seeds
wrongly would mix teachers and splits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import zoo_baselines


def write_run(work: Path, seed: int, kd_test: float, scratch_val: float, scratch_test: float) -> None:
    run = work / f"seed{seed}" / "cnn" / "labels0.1"
    run.mkdir(parents=True)
    (run / "distill.json").write_text(json.dumps({
        "student": {"test_top1": kd_test, "val_top1": 0.0},
        "baseline": {"test_top1": scratch_test, "val_top1": scratch_val}}))


def test_the_baseline_is_the_recipe_with_the_better_validation_not_the_better_test() -> None:
    candidates = {"a": [{"val_top1": 80.0, "test_top1": 95.0}, {"val_top1": 82.0, "test_top1": 94.0}],
                  "b": [{"val_top1": 90.0, "test_top1": 70.0}, {"val_top1": 88.0, "test_top1": 71.0}]}
    assert zoo_baselines.choose_baseline(candidates) == "b"
    tie = {"first": [{"val_top1": 50.0}], "second": [{"val_top1": 50.0}]}
    assert zoo_baselines.choose_baseline(tie) == "first"


def test_seeds_are_paired_and_a_student_missing_a_run_is_left_out(tmp_path: Path) -> None:
    kd, weak, strong = tmp_path / "kd", tmp_path / "weak", tmp_path / "strong"
    for seed, (kd_test, weak_test, strong_test) in enumerate([(96.0, 80.0, 90.0), (94.0, 82.0, 93.0)]):
        write_run(kd, seed, kd_test, scratch_val=50.0, scratch_test=0.0)
        write_run(weak, seed, 0.0, scratch_val=70.0, scratch_test=weak_test)
        write_run(strong, seed, 0.0, scratch_val=85.0, scratch_test=strong_test)
    rows = zoo_baselines.compare(kd, {"weak": weak, "strong": strong}, seeds=2)
    cell = rows["cnn"]["0.1"]
    assert cell["chosen_on_validation"] == "strong"
    assert cell["kd_gain"]["values"] == pytest.approx([6.0, 1.0])  # seed by seed, not mean minus mean
    assert cell["scratch"]["weak"]["test_top1"]["mean"] == pytest.approx(81.0)
    assert list(rows) == ["cnn"]  # the other students have no runs
    assert zoo_baselines.compare(kd, {"strong": strong}, seeds=3) == {}  # seed 2 missing: nothing to pair


@pytest.mark.parametrize(("record", "says"), [
    (None, "is not a bench/zoo.py work folder"),
    ("{not json", "unreadable run record"),
    (json.dumps({"student": {"test_top1": 90.0, "val_top1": 90.0}}), "has no KD student and scratch baseline"),
])
def test_bad_work_folders_are_one_line_and_exit_2(tmp_path: Path, record: str | None, says: str) -> None:
    if record is not None:  # a zoo_sweep run (no baseline) or a damaged record where a zoo run should be
        run = tmp_path / "seed0" / "cnn" / "labels0.1"
        run.mkdir(parents=True)
        (run / "distill.json").write_text(record)
    result = subprocess.run([sys.executable, str(REPO / "bench" / "zoo_baselines.py"), "--kd", str(tmp_path),
                             "--scratch", f"x={tmp_path}", "--seeds", "1", "--out", str(tmp_path / "out.json")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.json").exists()
