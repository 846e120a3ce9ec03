"""Nothing measured on data the model trained on: recorded splits, changed data detected, recipe changes rerun."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console

from kd2trt.bench.stage import BenchRequest, run_bench
from kd2trt.config import BenchConfig, DataConfig, load_config
from kd2trt.data import data_fingerprint, split_record
from kd2trt.distill.checkpoint import data_of, read_checkpoint
from kd2trt.distill.train import run_distill
from kd2trt.errors import Kd2trtError
from kd2trt.pipeline import run_pipeline
from tests.conftest import tiny_overrides

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
FAST_BENCH = BenchConfig(batch_sizes=[1], warmup=0, iterations=5)


@pytest.fixture
def folder_run(digits_folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the digits image folder and a tiny distillation on it."""
    data = tmp_path / "data"
    shutil.copytree(digits_folder, data)
    config = load_config(None, tiny_overrides(**{"data.spec": f"imagefolder:{data}", "distill.baseline": False}))
    run_distill(config, tmp_path / "run", console=QUIET)
    return data, tmp_path / "run"


def test_checkpoints_record_their_splits_and_later_stages_use_exactly_them(folder_run: tuple[Path, Path]) -> None:
    data, run = folder_run
    checkpoint = read_checkpoint(run / "student.pt")
    recorded = checkpoint["splits"]
    assert sum(len(recorded[s]["keys"]) for s in ("train", "val", "test")) == 300
    assert not set(recorded["train"]["keys"]) & set(recorded["test"]["keys"])
    assert recorded["test"]["keys"][0].startswith("class_") and recorded["test"]["keys"][0].endswith(".png")
    # the folder grows: a seeded re-split would move images between splits; the recorded splits do not move
    extra = data / "class_0" / "999.png"
    shutil.copy(data / "class_0" / "000.png", extra)
    rebuilt = data_of(checkpoint)
    assert [s.key for s in rebuilt.test.samples] == recorded["test"]["keys"]
    assert split_record(rebuilt) == recorded


def test_deleted_images_are_an_error_not_a_silent_resplit(folder_run: tuple[Path, Path]) -> None:
    data, run = folder_run
    test_keys = read_checkpoint(run / "student.pt")["splits"]["test"]["keys"]
    for key in test_keys[:3]:
        (data / key).unlink()
    with pytest.raises(Kd2trtError, match=r"3 of the \d+ test images the model was distilled with are gone "
                                          r"\(e\.g\. class_"):
        run_bench(BenchRequest(run, engines_dir=run / "none"), FAST_BENCH, QUIET)


def test_a_changed_test_image_is_an_error(folder_run: tuple[Path, Path]) -> None:
    from PIL import Image

    data, run = folder_run
    key = read_checkpoint(run / "student.pt")["splits"]["test"]["keys"][0]
    Image.new("L", (8, 8), color=255).save(data / key)
    with pytest.raises(Kd2trtError, match="the test images changed since distillation"):
        data_of(read_checkpoint(run / "student.pt"))


def test_the_fingerprint_sees_deleted_added_and_touched_files(digits_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(digits_folder, data)
    config = DataConfig(spec=f"imagefolder:{data}")
    before = data_fingerprint(config)
    assert data_fingerprint(config) == before
    (data / "class_3" / "004.png").unlink()
    deleted = data_fingerprint(config)
    assert deleted != before
    os.utime(data / "class_5" / "001.png", ns=(1, 1))
    assert data_fingerprint(config) != deleted
    assert data_fingerprint(DataConfig()) == data_fingerprint(DataConfig())  # the embedded digits: stable


def test_old_checkpoints_without_splits_are_still_read(folder_run: tuple[Path, Path]) -> None:
    """Checkpoints of earlier kd2trt versions carry no split record: they re-split from the seed, as before."""
    _, run = folder_run
    checkpoint = read_checkpoint(run / "student.pt")
    recorded = checkpoint.pop("splits")
    rebuilt = data_of(checkpoint)  # the seeded re-split of the unchanged folder: the same splits
    assert [s.key for s in rebuilt.test.samples] == recorded["test"]["keys"]
    assert data_of({**checkpoint, "splits": recorded}).test.samples == rebuilt.test.samples


def test_kd2trt_run_reruns_distill_when_the_data_changed(digits_folder: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(digits_folder, data)
    config = load_config(None, tiny_overrides(**{
        "data.spec": f"imagefolder:{data}", "distill.baseline": False, "export.int8": False,
        "export.fp16": False, "export.teacher": False, "bench.iterations": 5, "bench.warmup": 0,
        "bench.batch_sizes": [1]}))
    first = run_pipeline(config, tmp_path / "run", console=QUIET)
    assert first["distill"]["status"] == "ran"
    assert run_pipeline(config, tmp_path / "run", console=QUIET)["distill"]["status"] == "up to date"
    for path in sorted((data / "class_2").glob("*.png"))[:20]:
        path.unlink()
    again = run_pipeline(config, tmp_path / "run", console=QUIET)
    assert again["distill"]["status"] == again["bench"]["status"] == "ran"
    test_keys = read_checkpoint(tmp_path / "run" / "student.pt")["splits"]["test"]["keys"]
    assert all((data / key).is_file() for key in test_keys)


def test_a_recipe_change_retrains_from_scratch_and_from_redoes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """`--set seed=1` on an existing run used to stop with "written by a run with another config"."""
    monkeypatch.chdir(tmp_path)
    fast = {"distill.baseline": False, "export.int8": False, "export.fp16": False, "export.teacher": False,
            "bench.iterations": 5, "bench.warmup": 0, "bench.batch_sizes": [1]}
    run_pipeline(load_config(None, tiny_overrides(**fast)), tmp_path / "run", console=QUIET)
    seed0 = torch.load(tmp_path / "run" / "student.pt", weights_only=True)["state_dict"]
    changed = run_pipeline(load_config(None, tiny_overrides(seed=1, **fast)), tmp_path / "run", console=QUIET)
    assert changed["distill"]["status"] == "ran"
    summary = json.loads((tmp_path / "run" / "distill.json").read_text())
    assert summary["seed"] == 1 and summary["student"]["resumed_from_epoch"] is None
    seed1 = torch.load(tmp_path / "run" / "student.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(seed0[k], seed1[k]) for k in seed0)
    forced = run_pipeline(load_config(None, tiny_overrides(seed=1, **fast)), tmp_path / "run", start="distill",
                          console=QUIET)
    assert forced["distill"]["status"] == "ran"
    assert forced["distill"]["result"]["student"]["resumed_from_epoch"] is None  # trained again, not resumed
