"""`kd2trt run`: all stages from one recipe, up-to-date checks, interruption and resume, the imagefolder recipe."""

from __future__ import annotations

import json
import os
import re
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
    # a 2-epoch 8×8 model's INT8 predictions agree with its FP32 ones on only ~96 % of the test images: this test
    # is about kill -9, so the INT8 parity gate is set where such a model passes it
    tiny = tiny_overrides(**{**FAST_REST, "student.train.epochs": 30, "bench.int8_min_agreement": 90})
    for key, value in tiny.items():
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
    assert summary["student"]["resumed_from_epoch"] >= 1
    assert summary["teacher"]["resumed_from_epoch"] is None  # trained in one go before the kill …
    assert not re.search(r"teacher\s+epoch", result.stdout)  # … and not retrained after it
    assert (tmp_path / "run" / "report.json").is_file()


def test_imagefolder_recipe_end_to_end(digits_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pipeline/imagefolder.yaml (ResNet-18 teacher, class-weighted CE, selection on balanced accuracy) on digits
    written as PNG class folders."""
    monkeypatch.chdir(tmp_path)
    config = load_config(REPO / "pipeline" / "imagefolder.yaml", {
        "data.spec": f"imagefolder:{digits_folder}", "data.image_size": 32, "data.num_workers": 0,
        "teacher.train.epochs": 2, "student.train.epochs": 2, "device": "cpu", **FAST_REST})
    outcomes = run_pipeline(config, tmp_path / "run", console=QUIET)
    assert outcomes["distill"]["result"]["teacher"]["params"] > 10_000_000  # a real ResNet-18
    first_epoch = json.loads((tmp_path / "run" / "student.metrics.json").read_text())[0]
    assert "val_balanced_accuracy" in first_epoch and "loss_hint" not in first_epoch  # no hint: it lost to scratch
    assert outcomes["distill"]["result"]["student"]["select_metric"] == "balanced_accuracy"
    assert outcomes["export"]["status"] == outcomes["bench"]["status"] == "ran"
    assert [r["backend"] for r in outcomes["bench"]["result"]["rows"]].count("onnxruntime") == 3


# --------------------------------------------------------------------------------------------- bookkeeping
# The stages themselves replaced by stand-ins that write plain files: these tests check the pipeline's
# up-to-date decisions and manifests, not distillation, export, TensorRT or the bench.


@pytest.fixture
def fake_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Cheap distill/export/engines/bench; `state["gate_passes"]` decides the bench gate, `state["calls"]`
    counts the runs of each stage."""
    import kd2trt.bench.stage as bench_stage
    import kd2trt.distill.train as train
    import kd2trt.onnx.stage as onnx_stage
    import kd2trt.trt.stage as trt_stage
    from kd2trt.layout import RunLayout
    from kd2trt.results import StageResult

    monkeypatch.chdir(tmp_path)
    state: dict[str, object] = {"gate_passes": True, "calls": {}}

    def count(stage: str) -> None:
        calls = state["calls"]
        calls[stage] = calls.get(stage, 0) + 1

    def distill(config, run_dir, resume, console):
        count("distill")
        for role in ("teacher", "student") + (("baseline",) if config.distill.baseline else ()):
            (Path(run_dir) / f"{role}.pt").write_bytes(role.encode())
        (Path(run_dir) / "distill.json").write_text("{}")
        return {"student": {"test_top1": 90.0}, "teacher": {"test_top1": 95.0}}

    def export(request, config, console):
        count("export")
        run_dir = request.checkpoint.parent
        (run_dir / "student.onnx").write_bytes(b"onnx")
        (run_dir / "student.export.json").write_text("{}")
        return {"onnx": {"path": str(run_dir / "student.onnx")}, "preview": {"top1": {"student ONNX": 90.0}}}

    def build_engines(config, run_dir, console, *, onnx_path, model, checkpoint, engines_dir):
        count("engines")
        assert (onnx_path, model, checkpoint) == (run_dir / "student.onnx", "student", run_dir / "student.pt")
        assert engines_dir == RunLayout(run_dir).engines_dir
        engine = engines_dir / "student-fp32-sm90-trt10.3.0.engine"
        engine.parent.mkdir(parents=True, exist_ok=True)
        engine.write_bytes(f"plan for max_batch {config.build.max_batch}".encode())
        engine.with_name(engine.name + ".json").write_text("{}")
        return StageResult([engine], "1 engine")

    def bench(request, config, console, tolerances=None):
        count("bench")
        assert request.engines_dir == RunLayout(request.run_dir).engines_dir
        report = request.run_dir / "report.json"
        report.write_text("{}")
        passed = bool(state["gate_passes"])
        gates = [{"gate": "min_speedup", "row": "student fp32", "value": 1.0, "limit": 2.0, "passed": passed,
                  "message": f"student fp32: gate {passed}"}]
        return {"rows": [{}], "gates": gates, "files": {"json": str(report)}, "skipped": []}

    monkeypatch.setattr(train, "run_distill", distill)
    monkeypatch.setattr(onnx_stage, "run_export", export)
    monkeypatch.setattr(trt_stage, "build_engines", build_engines)
    monkeypatch.setattr(bench_stage, "run_bench", bench)
    return state


def _statuses(outcomes: dict) -> dict[str, str]:
    return {name: outcome["status"] for name, outcome in outcomes.items()}


def test_engines_outside_the_run_dir_are_up_to_date_and_rerun_the_bench(tmp_path: Path,
                                                                           fake_stages: dict) -> None:
    from kd2trt.layout import RunLayout

    run_dir = tmp_path / "run"
    assert RunLayout(run_dir).engines_dir == Path("engines/run")
    assert set(_statuses(run_pipeline(_config(), run_dir, console=QUIET)).values()) == {"ran"}
    manifest = json.loads((run_dir / "stages" / "engines.json").read_text())
    engine = tmp_path / "engines" / "run" / "student-fp32-sm90-trt10.3.0.engine"
    assert list(manifest["outputs"]) == [str(engine)]  # outside the run dir: an absolute key
    assert set(json.loads((run_dir / "stages" / "bench.json").read_text())["inputs"]) >= {
        str(engine), str(engine) + ".json", "student.onnx"}

    assert set(_statuses(run_pipeline(_config(), run_dir, console=QUIET)).values()) == {"up to date"}

    # the build section reruns the engines; the new engine bytes rerun the bench
    again = run_pipeline(_config(**{"build.max_batch": 16}), run_dir, console=QUIET)
    assert _statuses(again) == {"distill": "up to date", "export": "up to date", "engines": "ran", "bench": "ran"}

    engine.unlink()  # a vanished output reruns its stage; rebuilt byte for byte, the bench stays up to date
    again = run_pipeline(_config(**{"build.max_batch": 16}), run_dir, console=QUIET)
    assert _statuses(again) == {"distill": "up to date", "export": "up to date", "engines": "ran",
                                "bench": "up to date"}
    assert fake_stages["calls"] == {"distill": 1, "export": 1, "engines": 3, "bench": 2}


def test_engines_built_later_rerun_an_up_to_date_bench(tmp_path: Path, fake_stages: dict,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import kd2trt.trt.stage as trt_stage
    from kd2trt.layout import RunLayout
    from kd2trt.results import StageResult

    build = trt_stage.build_engines
    monkeypatch.setattr(trt_stage, "build_engines",
                        lambda *args, **kwargs: StageResult.skipped("no TensorRT here"))
    first = run_pipeline(_config(), tmp_path / "run", console=QUIET)
    assert first["engines"]["status"] == "skipped" and first["bench"]["status"] == "ran"
    assert run_pipeline(_config(), tmp_path / "run", console=QUIET)["bench"]["status"] == "up to date"
    run_dir = tmp_path / "run"
    build(_config(), run_dir, QUIET, onnx_path=run_dir / "student.onnx", model="student",  # `kd2trt export`
          checkpoint=run_dir / "student.pt", engines_dir=RunLayout(run_dir).engines_dir)  # on the target
    again = run_pipeline(_config(), tmp_path / "run", console=QUIET)
    assert again["engines"]["status"] == "skipped" and again["bench"]["status"] == "ran"


def test_a_failed_gate_fails_every_run_until_the_bench_changes(tmp_path: Path, fake_stages: dict) -> None:
    from typer.testing import CliRunner

    from kd2trt.cli import app

    flags = []
    for key, value in tiny_overrides(**FAST_REST).items():
        flags += ["--set", f"{key}={json.dumps(value)}"]
    command = ["run", "--out", str(tmp_path / "run"), *flags]
    fake_stages["gate_passes"] = False
    for _ in range(2):  # the second run finds the bench up to date: its recorded gate still fails
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1, result.output
        assert "FAIL student fp32: gate False" in result.output
    assert "bench    up to date" in result.output
    assert fake_stages["calls"]["bench"] == 1
    recorded = json.loads((tmp_path / "run" / "stages" / "bench.json").read_text())["record"]
    assert [gate["passed"] for gate in recorded["gates"]] == [False]

    fake_stages["gate_passes"] = True
    result = CliRunner().invoke(app, [*command, "--set", "bench.iterations=6"])
    assert result.exit_code == 0, result.output
    assert "PASS student fp32: gate True" in result.output
    result = CliRunner().invoke(app, [*command, "--set", "bench.iterations=6"])
    assert result.exit_code == 0 and "bench    up to date" in result.output, result.output


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"[1, 2, 3]", b"{\"config_hash\": 7}", b"",
                                     b"{\"config_hash\": null, \"inputs\": [], \"outputs\": \"x\"}"])
def test_a_corrupt_stage_manifest_reruns_the_stage(tmp_path: Path, fake_stages: dict, content: bytes) -> None:
    run_dir = tmp_path / "run"
    run_pipeline(_config(), run_dir, console=QUIET)
    (run_dir / "stages" / "export.json").write_bytes(content)
    manifest = json.loads((run_dir / "stages" / "bench.json").read_text())
    manifest["outputs"] = ["report.json"]
    (run_dir / "stages" / "bench.json").write_text(json.dumps(manifest))
    again = run_pipeline(_config(), run_dir, console=QUIET)
    assert _statuses(again) == {"distill": "up to date", "export": "ran", "engines": "up to date", "bench": "ran"}
    assert json.loads((run_dir / "stages" / "export.json").read_text())["stage"] == "export"


def test_a_bench_manifest_without_its_gates_reruns_the_bench(tmp_path: Path, fake_stages: dict) -> None:
    run_dir = tmp_path / "run"
    run_pipeline(_config(), run_dir, console=QUIET)
    manifest = json.loads((run_dir / "stages" / "bench.json").read_text())
    del manifest["record"]  # written before gates were recorded: whether they passed is unknown
    (run_dir / "stages" / "bench.json").write_text(json.dumps(manifest))
    assert run_pipeline(_config(), run_dir, console=QUIET)["bench"]["status"] == "ran"


def test_vanished_teacher_weights_rerun_distill_and_end_in_one_line(tmp_path: Path, fake_stages: dict) -> None:
    from typer.testing import CliRunner

    from kd2trt.cli import app
    from kd2trt.errors import Kd2trtError

    weights = tmp_path / "teacher-weights.pt"
    weights.write_bytes(b"weights")
    config = _config(**{"teacher.weights": str(weights)})
    run_pipeline(config, tmp_path / "run", console=QUIET)
    assert run_pipeline(config, tmp_path / "run", console=QUIET)["distill"]["status"] == "up to date"
    weights.unlink()
    with pytest.raises(Kd2trtError, match=r"teacher-weights\.pt: input of the distill stage cannot be read"):
        run_pipeline(config, tmp_path / "run", console=QUIET)
    assert fake_stages["calls"]["distill"] == 2  # out of date, so run again (the real distill refuses first)
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "run"), "--only", "distill",
                                      "--set", f"teacher.weights={json.dumps(str(weights))}"])
    assert result.exit_code == 2 and "teacher-weights.pt" in result.output and "Traceback" not in result.output
