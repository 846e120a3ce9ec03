"""`kd2trt bench`: the latency harness, accuracy figures, gates, and an end-to-end run on a tiny student."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from kd2trt.bench.accuracy import accuracy
from kd2trt.bench.latency import Percentiles, measure
from kd2trt.bench.report import evaluate_gates
from kd2trt.bench.stage import BenchRequest, run_bench
from kd2trt.cli import app
from kd2trt.config import BenchConfig, ExportConfig
from kd2trt.errors import Kd2trtError
from kd2trt.models import build_model, model_spec
from kd2trt.onnx.export import export_onnx
from kd2trt.onnx.stage import ExportRequest, run_export
from kd2trt.runner import InputSpec, Runner, RunnerInfo

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
FAST = BenchConfig(batch_sizes=[1, 4], warmup=2, iterations=10, device="cpu")


class SleepRunner(Runner):
    """A runner whose every call takes ~2 ms: checks what the harness counts and times."""

    def __init__(self) -> None:
        self.info = RunnerInfo("student", "test", "fp32", "cpu")
        self.calls = 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        time.sleep(0.002)
        return np.zeros((len(batch), 10), np.float32)

    def time_compute(self, batch: np.ndarray, iterations: int) -> None:
        return None

    def close(self) -> None:
        pass


def test_percentiles_known_values() -> None:
    p = Percentiles.of(list(range(1, 101)))
    assert (p.median_ms, p.mean_ms, p.min_ms, p.max_ms) == (50.5, 50.5, 1.0, 100.0)
    assert p.p90_ms == pytest.approx(90.1) and p.p99_ms == pytest.approx(99.01)


def test_harness_warms_up_then_times() -> None:
    runner = SleepRunner()
    result = measure(runner, np.zeros((4, 1, 8, 8), np.float32), warmup=3, iterations=20)
    assert runner.calls == 23 and result.iterations == 20 and result.batch_size == 4
    assert 2.0 <= result.host.median_ms < 10.0
    assert result.throughput_ips == pytest.approx(4000 / result.host.mean_ms)
    assert result.gpu_compute is None


def test_harness_duration_mode() -> None:
    runner = SleepRunner()
    started = time.perf_counter()
    result = measure(runner, np.zeros((1, 1, 8, 8), np.float32), warmup=0, iterations=5, duration_s=0.1)
    assert time.perf_counter() - started >= 0.1 and result.iterations > 5


def test_accuracy_figures() -> None:
    labels = np.array([0, 1, 2, 0])
    teacher = np.eye(3)[[0, 1, 2, 1]] * 5.0
    model = np.eye(3)[[0, 1, 1, 1]] * 5.0
    out = accuracy(model, labels, teacher, reference_logits=teacher, classes=["a", "b", "c"])
    assert out["top1"] == 50.0
    assert out["agreement_with_teacher"] == 75.0
    assert out["max_abs_diff_vs_fp32_student"] == 5.0
    assert out["per_class_recall"] == {"a": 50.0, "b": 100.0, "c": 0.0}
    assert out["balanced_accuracy"] == 50.0  # (50 + 100 + 0) / 3
    assert "top5" not in out  # fewer than 10 classes
    assert accuracy(teacher, labels, teacher, None, ["a", "b", "c"])["kl_to_teacher"] == pytest.approx(0.0)
    assert out["kl_to_teacher"] > 1.0


def test_gates_name_row_and_figure() -> None:
    row = {"model": "student", "precision": "int8", "backend": "tensorrt", "device": "cuda:0",
           "delta_top1_vs_teacher": -3.0, "accuracy": {"agreement_with_teacher": 96.0}, "speedup_vs_teacher": 8.0}
    gates = evaluate_gates({"rows": [row]}, BenchConfig(max_top1_drop=2.0, min_agreement=95, min_speedup=10))
    verdicts = {g["gate"]: g["passed"] for g in gates}
    assert verdicts == {"max_top1_drop": False, "min_agreement": True, "min_speedup": False}
    failed = next(g for g in gates if g["gate"] == "max_top1_drop")
    assert failed["message"] == ("student int8 (tensorrt, cuda:0): top-1 drop vs teacher 3.00 points "
                                 "(required ≤ 2, --max-top1-drop)")
    assert evaluate_gates({"rows": [row]}, BenchConfig()) == []


def test_parity_gates_check_every_exported_form_against_the_fp32_student() -> None:
    """Each row's parity is measured by accuracy() with kd2trt.onnx.parity's rule and the export's tolerance for
    its precision; the gate reads that verdict. Guards the bench using the export's rule: a gate comparing
    max |Δlogit| with the absolute term alone (the old rule) fails the large-logit TensorRT FP32 row here."""
    from kd2trt.bench.report import ParityTolerances

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    reference = (rng.standard_normal((200, 10)) * 20 + np.eye(10)[labels] * 60).astype(np.float32)  # range ~140
    tolerances = ParityTolerances.of(ExportConfig(), BenchConfig(int8_min_agreement=97.0))

    def row(backend: str, precision: str, logits: np.ndarray) -> dict:
        figures = accuracy(logits, labels, reference, reference, [str(i) for i in range(10)],
                           tolerances.logits(precision))
        return {"model": "student", "precision": precision, "backend": backend, "device": "cuda:0",
                "delta_top1_vs_teacher": 0.0, "speedup_vs_teacher": 1.0,
                "accuracy": {**figures, "agreement_with_teacher": 99.0}}

    spread = (reference.max(1) - reference.min(1))[:, None]
    rounding = rng.uniform(-1, 1, reference.shape) * spread
    swapped = reference[:, [1, 0, *range(2, 10)]]  # classes 0 and 1 swapped
    flipped = reference.copy()
    flipped[:10] = flipped[:10, ::-1]  # 5 % of the predictions changed
    rows = [row("pytorch", "fp32", reference), row("tensorrt", "fp32", reference + 3e-5 * rounding),
            row("onnxruntime", "fp32", swapped), row("onnxruntime", "fp16", reference + 0.02 * rounding),
            row("tensorrt", "fp16", reference + 0.2 * rounding), row("tensorrt", "int8", flipped),
            row("onnxruntime", "int8", reference + 0.02 * rounding)]
    assert rows[1]["accuracy"]["max_abs_diff_vs_fp32_student"] > 1e-3  # beyond the old absolute gate's 1e-4
    gates = evaluate_gates({"rows": rows}, BenchConfig(), tolerances)
    assert [(g["row"], g["passed"]) for g in gates] == [
        ("student fp32 (tensorrt, cuda:0)", True), ("student fp32 (onnxruntime, cuda:0)", False),
        ("student fp16 (onnxruntime, cuda:0)", True), ("student fp16 (tensorrt, cuda:0)", False),
        ("student int8 (tensorrt, cuda:0)", False), ("student int8 (onnxruntime, cuda:0)", True)]
    assert gates[1]["message"].startswith("student fp32 (onnxruntime, cuda:0): vs the FP32 student max |Δlogit| ")
    assert gates[1]["message"].endswith("(export.parity_atol / export.parity_rtol, flags --parity-atol / "
                                        "--parity-rtol)")  # the flags exist on bench too
    assert "of an image's logit range" in gates[3]["message"] and gates[3]["value"] > 1.0
    assert gates[4]["message"].endswith("agreement with the FP32 student 95.00% (required ≥ 97, "
                                        "bench.int8_min_agreement)")
    assert evaluate_gates({"rows": rows}, BenchConfig(parity=False), tolerances) == []


def test_bench_takes_the_parity_tolerance_flags() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--fp16-rtol" in result.output and "--parity-rtol" in result.output


@pytest.fixture(scope="module")
def exported_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("bench_run")
    for name in ("student.pt", "teacher.pt"):
        shutil.copy(tiny_run / name, run_dir / name)
    run_export(ExportRequest(run_dir / "student.pt"), ExportConfig(calib_images=100, teacher=False), QUIET)
    return run_dir


def test_bench_end_to_end(exported_run: Path) -> None:
    from kd2trt.bench.report import ParityTolerances

    result = run_bench(BenchRequest(exported_run, engines_dir=exported_run / "no-engines"), FAST, QUIET,
                       ParityTolerances.of(ExportConfig(), FAST))
    labels = [(r["model"], r["backend"], r["precision"]) for r in result["rows"]]
    assert labels == [("teacher", "pytorch", "fp32"), ("student", "pytorch", "fp32"),
                      ("student", "onnxruntime", "fp32"), ("student", "onnxruntime", "fp16"),
                      ("student", "onnxruntime", "int8")]
    teacher, student_torch, student_ort = result["rows"][:3]
    assert teacher["speedup_vs_teacher"] == 1.0 and teacher["delta_top1_vs_teacher"] == 0.0
    assert student_ort["accuracy"]["top1"] == pytest.approx(student_torch["accuracy"]["top1"])
    assert student_ort["accuracy"]["max_abs_diff_vs_fp32_student"] < 1e-4
    parity = student_ort["accuracy"]["parity_vs_fp32_student"]  # measured with the export's FP32 tolerance
    assert parity["max_rel_diff"] < 1e-5 and 0 <= parity["tolerance_used"] < 0.1, parity
    logit_gates = [g for g in result["gates"] if g["gate"] == "parity" and "int8" not in g["row"]]
    assert len(logit_gates) == 2 and all(g["passed"] for g in logit_gates), logit_gates  # ORT FP32 and FP16
    assert set(student_ort["latency"]) == {"1", "4"}
    assert any("TensorRT engines: none" in s for s in result["skipped"])
    report = json.loads((exported_run / "report.json").read_text())
    assert len(report["rows"]) == 5
    markdown = (exported_run / "report.md").read_text()
    assert "| model | backend | precision |" in markdown and "TensorRT engines: none" in markdown
    assert (exported_run / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_the_report_shows_the_int8_budgets_curve(tiny_run: Path, tmp_path: Path) -> None:
    """An export with --int8-budget: the bench report shows the methods scored and the curve of layers kept in
    higher precision against validation top-1, read from the export summary (report.json holds it whole)."""
    for name in ("student.pt", "teacher.pt"):
        shutil.copy(tiny_run / name, tmp_path / name)
    summary = run_export(ExportRequest(tmp_path / "student.pt"),
                         ExportConfig(calib_images=100, teacher=False, int8_budget=0.0), QUIET)
    budget = summary["int8"]["budget"]
    run_bench(BenchRequest(tmp_path, engines_dir=tmp_path / "no-engines"), FAST, QUIET)
    assert json.loads((tmp_path / "report.json").read_text())["int8_budget"] == budget
    text = (tmp_path / "report.md").read_text()
    assert f"INT8 accuracy budget (0 points on the validation split, FP32 {budget['fp32_val_top1']:.2f} %)" in text
    assert f"chosen **{budget['method']}**" in text
    assert "| layers kept in higher precision | layer added | val top-1 | drop vs FP32 (points) |" in text
    first = budget["curve"][0]
    assert f"| 0 | — | {first['val_top1']:.2f} % | {budget['fp32_val_top1'] - first['val_top1']:+.2f} |" in text
    assert len([line for line in text.splitlines() if line.startswith("| ") and " % | " in line]) == len(
        budget["curve"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
def test_bench_on_cuda_reports_gpu_compute_apart(exported_run: Path, tmp_path: Path) -> None:
    from kd2trt.bench.report import ParityTolerances

    cuda = FAST.model_copy(update={"device": "cuda"})
    tolerances = ParityTolerances.of(ExportConfig(), cuda)
    result = run_bench(BenchRequest(exported_run, out_dir=tmp_path, engines_dir=tmp_path / "none"), cuda, QUIET,
                       tolerances)
    # the FP32 reference is PyTorch on the GPU with TF32 off: ONNX Runtime's FP32 graph holds parity_atol to it
    parity = [g for g in result["gates"] if g["gate"] == "parity"]
    assert parity and all(g["passed"] for g in parity), [g["message"] for g in parity if not g["passed"]]
    env = result["environment"]
    assert env["device"].startswith("cuda") and env["gpu"] == torch.cuda.get_device_name(0)
    clocks = env["gpu_clocks"]  # nvidia-smi's readings, or why there are none
    if isinstance(clocks, dict):
        assert "clocks.sm" in clocks and "clocks.max.sm" in clocks, clocks
    else:
        assert isinstance(clocks, str) and clocks.startswith("not recorded"), clocks
    torch_rows = [r for r in result["rows"] if r["backend"] == "pytorch"]
    assert [r["device"] for r in torch_rows] == [env["device"]] * 2
    for row in torch_rows:
        for latency in row["latency"].values():
            compute, host = latency["gpu_compute"], latency["host"]
            assert compute is not None and "CUDA events" in latency["timer"]
            # the event span excludes the copies and synchronisation that host latency includes; a small eager
            # model is launch-bound, so the two are close and their medians can swap places by noise
            assert 0 < compute["median_ms"] <= host["p99_ms"]
    cpu = run_bench(BenchRequest(exported_run, out_dir=tmp_path / "cpu", engines_dir=tmp_path / "none"), FAST, QUIET)
    for on_gpu, on_cpu in zip(result["rows"], cpu["rows"], strict=True):
        assert on_gpu["accuracy"]["top1"] == pytest.approx(on_cpu["accuracy"]["top1"], abs=0.5)


def test_cli_gate_failure_exits_1_and_names_the_row(exported_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", str(exported_run), "--out", str(tmp_path), "--iterations", "5",
                                      "--warmup", "1", "--batch-size", "1", "--min-speedup", "1000",
                                      "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "FAIL student fp32 (pytorch, cpu): speed-up vs teacher" in result.output
    assert (tmp_path / "report.md").is_file()


def test_class_count_mismatch_is_an_error(exported_run: Path, tmp_path: Path) -> None:
    for name in ("student.pt", "teacher.pt"):
        shutil.copy(exported_run / name, tmp_path / name)
    export_onnx(build_model(model_spec("cnn", 1, 5, [8])), torch.zeros(1, 1, 8, 8), tmp_path / "student.onnx")
    with pytest.raises(Kd2trtError, match=r"student\.onnx: outputs 5 classes, the data set has 10"):
        run_bench(BenchRequest(tmp_path), FAST, QUIET)


def test_mismatched_teacher_and_missing_checkpoint(exported_run: Path, tmp_path: Path) -> None:
    with pytest.raises(Kd2trtError, match=r"student\.pt: checkpoint not found"):
        run_bench(BenchRequest(tmp_path), FAST, QUIET)
    shutil.copy(exported_run / "student.pt", tmp_path / "student.pt")
    teacher = torch.load(exported_run / "teacher.pt", weights_only=True)
    teacher["preprocessing"]["mean"] = [0.0]
    torch.save(teacher, tmp_path / "teacher.pt")
    with pytest.raises(Kd2trtError, match=r"teacher\.pt: preprocessing or classes differ from student\.pt"):
        run_bench(BenchRequest(tmp_path), FAST, QUIET)


def test_markdown_shows_jetson_power_when_sampled() -> None:
    from kd2trt.bench.report import markdown

    host = {"median_ms": 1.0, "p99_ms": 2.0}
    row = {"model": "student", "backend": "tensorrt", "precision": "int8", "device": "cuda:0", "params": None,
           "file_bytes": 2_000_000, "accuracy": {"top1": 98.0, "agreement_with_teacher": 99.0},
           "delta_top1_vs_teacher": -1.0, "speedup_vs_teacher": 5.0,
           "latency": {"1": {"host": host, "throughput_ips": 1000.0,
                             "power": {"mean_w": 7.5, "energy_per_image_mj": 7.5, "rail": "VDD_IN"}}}}
    text = markdown({"run": "r", "batch_sizes": [1], "rows": [row], "test_images": 10, "data_spec": "digits",
                     "num_classes": 10, "protocol": "p", "environment": {"machine": "Orin"}})
    assert "| student | tensorrt | int8 | 1 | 7.50 | 7.500 | VDD_IN |" in text
    assert ("| student | tensorrt | int8 | cuda:0 | — | 2.00 MB | 98.00% | -1.00 | 99.0% | 1.000 | 2.000 | "
            "1,000 | 5.0× |") in text


def test_markdown_adds_gpu_compute_column_only_when_measured() -> None:
    from kd2trt.bench.report import markdown

    def row(backend: str, compute: dict | None) -> dict:
        return {"model": "student", "backend": backend, "precision": "fp32", "device": "cuda:0", "params": None,
                "file_bytes": None, "accuracy": {"top1": 98.0, "agreement_with_teacher": 99.0},
                "delta_top1_vs_teacher": -1.0, "speedup_vs_teacher": 2.0,
                "latency": {"1": {"host": {"median_ms": 0.5, "p99_ms": 0.9}, "throughput_ips": 2000.0,
                                  "gpu_compute": compute}}}

    result = {"run": "r", "batch_sizes": [1], "test_images": 10, "data_spec": "digits", "num_classes": 10,
              "protocol": "p", "environment": {"machine": "H100"},
              "rows": [row("tensorrt", {"median_ms": 0.125}), row("onnxruntime", None)]}
    text = markdown(result)
    assert "| p50 ms (b=1) | p99 ms (b=1) | GPU compute p50 ms (b=1) | img/s (b=1) |" in text
    assert "| 0.500 | 0.900 | 0.125 | 2,000 | 2.0× |" in text and "| 0.500 | 0.900 | — | 2,000 | 2.0× |" in text
    header, rule, *body = [line for line in text.splitlines() if line.startswith("|")]
    assert header.count("|") == rule.count("|") == body[0].count("|") == body[1].count("|")
    result["rows"] = [row("onnxruntime", None)]
    assert "GPU compute" not in markdown(result)


def test_onnxruntime_backends_per_device() -> None:
    from kd2trt.onnx.runtime import ort_backends

    cpu_only = ["AzureExecutionProvider", "CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_backends("cpu", gpu) == [["CPUExecutionProvider"]]
    assert ort_backends("cuda:0", cpu_only) == [["CPUExecutionProvider"]]
    assert ort_backends("cuda:0", gpu) == [
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]]
    assert ort_backends("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        ["CUDAExecutionProvider", "CPUExecutionProvider"]]


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_onnxruntime_row_names_the_provider_that_really_ran(exported_run: Path) -> None:
    import onnxruntime as ort

    from kd2trt.onnx.runtime import OrtRunner

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: no fallback to observe")
    info = RunnerInfo("student", "onnxruntime", "int8", "cuda")
    runner = OrtRunner(exported_run / "student.int8.onnx", info, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    try:
        assert info.device == "cpu"
        fallback = "ONNX Runtime could not start CUDAExecutionProvider and ran on CPUExecutionProvider instead"
        assert fallback in info.notes
        assert any(note.startswith("Q/DQ run as fake-quant") for note in info.notes)
        assert runner.infer(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)
    finally:
        runner.close()


class ProfileRunner(SleepRunner):
    """A runner with a batch range, as a TensorRT engine's optimisation profile has (no TensorRT involved)."""

    input_spec = InputSpec(min_batch=2, max_batch=4)

    def __init__(self) -> None:
        super().__init__()
        self.info = RunnerInfo("student", "tensorrt", "fp16", "cuda (H100)", file="engines/r/student-fp16.engine")
        self.sizes: list[int] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        assert 2 <= len(batch) <= 4, len(batch)
        self.sizes.append(len(batch))
        return super().infer(batch)


def test_accuracy_pass_and_latency_respect_a_batch_range() -> None:
    from kd2trt.bench.stage import _latencies

    images = np.zeros((9, 1, 8, 8), np.float32)
    runner = ProfileRunner()
    assert runner.infer_many(images, 8).shape == (9, 10) and runner.sizes == [4, 4, 2]  # 1 left, padded to 2
    plain = SleepRunner()
    assert plain.infer_many(images[:7], 3).shape == (7, 10) and plain.calls == 3  # 3 + 3 + 1

    config = BenchConfig(batch_sizes=[1, 4, 8], warmup=0, iterations=5)
    latency = _latencies(runner, images, config, jetson=False)
    assert set(latency) == {"4"}
    assert runner.info.notes == [
        f"student-fp16.engine: batch {b} not measured (its profile takes 2..4; rebuild with build.min_batch/max_batch "
        "covering it)" for b in (1, 8)]
    assert set(_latencies(plain, images, config, jetson=False)) == {"1", "4", "8"}


def test_report_and_gates_with_a_batch_size_left_out() -> None:
    from kd2trt.bench.report import markdown

    measured = {"host": {"median_ms": 0.5, "p99_ms": 0.9}, "throughput_ips": 2000.0, "gpu_compute": None}
    row = {"model": "student", "backend": "tensorrt", "precision": "int8", "device": "cuda (H100)", "params": None,
           "file_bytes": None, "accuracy": {"top1": 98.0, "agreement_with_teacher": 99.0},
           "delta_top1_vs_teacher": -1.0, "speedup_vs_teacher": None, "latency": {"32": measured}}
    result = {"run": "r", "batch_sizes": [1, 32], "test_images": 10, "data_spec": "digits", "num_classes": 10,
              "protocol": "p", "environment": {"machine": "H100"}, "rows": [row]}
    assert "| 98.00% | -1.00 | 99.0% | — | — | 2,000 | — |" in markdown(result)
    (gate,) = evaluate_gates(result, BenchConfig(min_speedup=2))
    assert gate["passed"] is False and gate["value"] is None
    assert gate["message"].startswith("student int8 (tensorrt, cuda (H100)): speed-up vs teacher not measured, "
                                      "batch 1 is outside its engine's batch range (required ≥ 2, --min-speedup)")


def test_one_bad_engine_is_skipped_not_fatal(tmp_path: Path) -> None:
    """The manifest checks of the TensorRT rows, which need no TensorRT: each unusable engine is a skip line."""
    from kd2trt.artifacts import sha256_file
    from kd2trt.bench.trt_runner import runnable_engines
    from kd2trt.trt.manifest import write_manifest
    from tests.test_trt_manifest import make_manifest

    def engine(name: str, **changes: object) -> Path:
        path = tmp_path / name
        path.write_bytes(name.encode())
        fields = {"engine_file": name, "engine_sha256": sha256_file(path), "jetson": None, "gpu_name": "NVIDIA H100",
                  "compute_capability": "9.0", **changes}
        write_manifest(make_manifest(**fields), path)
        return path

    good = engine("student-fp16-sm90-trt10.3.0.engine", precision="fp16")
    other_gpu = engine("student-int8-sm87-trt10.3.0.engine", compute_capability="8.7")
    other_trt = engine("student-int8-sm90-trt8.6.1.engine", trt_version="8.6.1")
    no_manifest = tmp_path / "student-fp32-sm90-trt10.3.0.engine"
    no_manifest.write_bytes(b"plan")
    bad_json = engine("teacher-fp32-sm90-trt10.3.0.engine")
    bad_json.with_name(bad_json.name + ".json").write_text("{not json")
    swapped = engine("baseline-fp32-sm90-trt10.3.0.engine")
    swapped.write_bytes(b"another plan")

    skipped: list[str] = []
    engines = sorted([good, other_gpu, other_trt, no_manifest, bad_json, swapped])
    runnable = runnable_engines(engines, "10.3.0.30", "9.0", "NVIDIA H100", skipped)
    assert [(path, manifest.precision) for path, manifest in runnable] == [(good, "fp16")]
    assert len(skipped) == 5
    reasons = dict(line.split(": ", 1) for line in skipped)
    assert "not built hardware-compatible" in reasons[f"TensorRT engine {other_gpu.name}"]
    assert "built with TensorRT 8.6.1" in reasons[f"TensorRT engine {other_trt.name}"]
    assert "no manifest" in reasons[f"TensorRT engine {no_manifest.name}"]
    assert "not valid JSON" in reasons[f"TensorRT engine {bad_json.name}"]
    assert "does not match its manifest" in reasons[f"TensorRT engine {swapped.name}"]


def test_jetson_power_is_averaged_over_the_timed_loop_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """tegrastats replaced by a recorder of the window asked for: no Jetson needed to check the window."""
    import kd2trt.bench.stage as bench_stage

    windows: list[tuple[float | None, float | None]] = []

    class Recorder:
        reason = "recorder"

        def __enter__(self) -> Recorder:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def summary(self, since: float | None = None, until: float | None = None) -> None:
            windows.append((since, until))

    class TimedRunner(SleepRunner):
        """Records when its timed calls ran; its CUDA-event pass (after the loop) takes 50 ms."""

        def __init__(self) -> None:
            super().__init__()
            self.spans: list[tuple[float, float]] = []

        def infer(self, batch: np.ndarray) -> np.ndarray:
            started = time.monotonic()
            out = super().infer(batch)
            self.spans.append((started, time.monotonic()))
            return out

        def time_compute(self, batch: np.ndarray, iterations: int) -> None:
            self.compute_started = time.monotonic()
            time.sleep(0.05)

    monkeypatch.setattr(bench_stage, "TegrastatsSampler", Recorder)
    runner = TimedRunner()
    out = bench_stage._measure_with_power(runner, np.zeros((1, 1, 8, 8), np.float32),
                                          BenchConfig(warmup=3, iterations=5), jetson=True)
    assert out["power"] == {"unavailable": "recorder"} and "loop_started" not in out
    since, until = windows[0]
    timed = runner.spans[3:]  # after the 3 warm-up calls
    assert runner.spans[2][1] <= since <= timed[0][0] and timed[-1][1] <= until <= runner.compute_started


def test_measure_records_the_timed_loop_span() -> None:
    before = time.monotonic()
    result = measure(SleepRunner(), np.zeros((1, 1, 8, 8), np.float32), warmup=5, iterations=5)
    after = time.monotonic()
    assert before + 5 * 0.002 <= result.loop_started < result.loop_ended <= after
    assert result.loop_ended - result.loop_started >= result.host.mean_ms * result.iterations / 1000 * 0.999
    assert "loop_started" not in result.as_dict() and "loop_ended" not in result.as_dict()
