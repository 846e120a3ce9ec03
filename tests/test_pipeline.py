"""`kd2trt run`: all stages from one recipe, up-to-date checks, interruption and resume, the imagefolder recipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

import kd2trt.onnx.stage as export_stage
from kd2trt.config import load_config
from kd2trt.pipeline import run_pipeline
from tests.conftest import REPO, child_pythonpath, tiny_overrides

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
FAST_REST = {"export.calib_images": 100, "bench.iterations": 5, "bench.warmup": 1, "bench.batch_sizes": [1, 4]}


def _config(**extra: object):
    return load_config(None, tiny_overrides(**{**FAST_REST, **extra}))


def test_run_all_then_nothing_then_only_what_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = run_pipeline(_config(), tmp_path / "run", console=QUIET)
    assert {k: v["status"] for k, v in first.items()} == {
        "distill": "ran", "export": "ran", "engines": "skipped", "bench": "ran"}
    assert "TensorRT" in first["engines"]["reason"] or "CUDA" in first["engines"]["reason"]
    for name in ("distill", "export", "bench"):
        assert (tmp_path / "run" / "stages" / f"{name}.json").is_file()
    assert (tmp_path / "run" / "report.md").is_file()

    second = run_pipeline(_config(), tmp_path / "run", console=QUIET)
    assert {k: v["status"] for k, v in second.items() if k != "engines"} == {
        "distill": "up to date", "export": "up to date", "bench": "up to date"}

    third = run_pipeline(_config(**{"bench.iterations": 6}), tmp_path / "run", console=QUIET)
    assert (third["distill"]["status"], third["export"]["status"], third["bench"]["status"]) == (
        "up to date", "up to date", "ran")

    forced = run_pipeline(_config(), tmp_path / "run", start="export", console=QUIET)
    assert (forced["distill"]["status"], forced["export"]["status"]) == ("up to date", "ran")

    only = run_pipeline(_config(), tmp_path / "run", only="bench", console=QUIET)
    assert list(only) == ["bench"] and only["bench"]["status"] == "ran"


def test_a_changed_artifact_reruns_its_consumers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_pipeline(_config(), tmp_path / "run", console=QUIET)
    (tmp_path / "run" / "student.onnx").write_bytes(b"tampered")
    again = run_pipeline(_config(), tmp_path / "run", console=QUIET)
    assert again["distill"]["status"] == "up to date"
    assert again["export"]["status"] == "ran"  # its output no longer matched its manifest


def test_interrupted_export_is_redone_without_redoing_distill(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    real = export_stage.export_int8

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_stage, "export_int8", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_config(), tmp_path / "run", console=QUIET)
    assert (tmp_path / "run" / "stages" / "distill.json").is_file()
    assert not (tmp_path / "run" / "stages" / "export.json").exists()
    assert not list((tmp_path / "run").glob(".*.tmp"))
    monkeypatch.setattr(export_stage, "export_int8", real)
    resumed = run_pipeline(_config(), tmp_path / "run", console=QUIET)
    assert resumed["distill"]["status"] == "up to date"
    assert resumed["export"]["status"] == resumed["bench"]["status"] == "ran"


def test_kill_9_during_distill_then_run_again_completes(tmp_path: Path) -> None:
    flags = []
    for key, value in tiny_overrides(**{**FAST_REST, "student.train.epochs": 30}).items():
        flags += ["--set", f"{key}={json.dumps(value)}"]
    command = [sys.executable, "-m", "kd2trt", "run", "--out", str(tmp_path / "run"), *flags]
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    metrics = tmp_path / "run" / "student.metrics.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and len(json.loads(metrics.read_text())) >= 2):
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "resuming at epoch" in result.stdout
    summary = json.loads((tmp_path / "run" / "distill.json").read_text())
    assert summary["teacher"]["resumed_from_epoch"] is not None  # the finished teacher was not retrained
    assert (tmp_path / "run" / "report.json").is_file()


def test_imagefolder_recipe_end_to_end(digits_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pipeline/imagefolder.yaml (ResNet-18 teacher, hint loss) on digits written as PNG class folders."""
    monkeypatch.chdir(tmp_path)
    config = load_config(REPO / "pipeline" / "imagefolder.yaml", {
        "data.spec": f"imagefolder:{digits_folder}", "data.image_size": 32, "data.num_workers": 0,
        "teacher.train.epochs": 2, "student.train.epochs": 2, "device": "cpu", **FAST_REST})
    outcomes = run_pipeline(config, tmp_path / "run", console=QUIET)
    assert outcomes["distill"]["result"]["teacher"]["params"] > 10_000_000  # a real ResNet-18
    assert "loss_hint" in json.loads((tmp_path / "run" / "student.metrics.json").read_text())[0]
    assert outcomes["export"]["status"] == outcomes["bench"]["status"] == "ran"
    assert [r["backend"] for r in outcomes["bench"]["result"]["rows"]].count("onnxruntime") == 3
