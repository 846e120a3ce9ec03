"""Probing and reporting on a machine without TensorRT or a GPU: no crash, a reason, and the way forward.

The tests that assert "nothing usable here" skip themselves on a machine that does have a CUDA device.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from kd2trt.doctor import collect_environment, format_report
from kd2trt.errors import Kd2trtError
from kd2trt.trt import cuda_memory
from kd2trt.trt.capabilities import probe_environment, tensorrt_installed

REPO = Path(__file__).resolve().parents[1]
HAS_CUDA = cuda_memory.cuda_device_count()[0] > 0
needs_no_gpu = pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device")


@needs_no_gpu
def test_probe_environment_reports_why_without_raising() -> None:
    caps, reason = probe_environment()
    assert caps is None
    assert "CUDA device" in reason
    assert "tensorrt" not in sys.modules  # TensorRT is never imported without a device


@needs_no_gpu
def test_cuda_device_count_does_not_raise() -> None:
    count, reason = cuda_memory.cuda_device_count()
    assert count == 0 and reason


@needs_no_gpu
def test_cuda_buffers_fail_with_a_clear_error() -> None:
    with pytest.raises(Kd2trtError):
        cuda_memory.DeviceBuffer(16)
    with pytest.raises(cuda_memory.CudaError, match="cannot allocate 0 bytes"):
        cuda_memory.DeviceBuffer(0)


@needs_no_gpu
def test_doctor_on_this_machine() -> None:
    env = collect_environment()
    json.dumps(env)  # --json must work
    assert env["tensorrt"]["usable"] is False and env["tensorrt"]["reason"]
    assert env["onnxruntime"]["installed"] and "CPUExecutionProvider" in env["onnxruntime"]["providers"]
    abilities = {row["task"]: row for row in env["abilities"]}
    assert abilities["export ONNX, FP16/Q-DQ graphs, calibration caches, INT8 preview (ONNX Runtime)"]["ok"]
    build = next(row for row in env["abilities"] if row["task"].startswith("build TensorRT engines"))
    assert build["ok"] is False and "docker/README.md" in build["why"]
    report = format_report(env)
    assert "TensorRT       not usable — " in report
    assert "[no ] build TensorRT engines" in report and "[yes] distill" in report
    assert "tensorrt" not in sys.modules


def jetson_env() -> dict:
    return {
        "python": {"version": "3.10.12", "executable": "/usr/bin/python3", "platform": "Linux-aarch64"},
        "kd2trt": {"version": "0.1.0"},
        "torch": {"installed": True, "version": "2.5.0", "cuda_build": "12.6", "cuda_available": True,
                  "device_name": "Orin", "compute_capability": "8.7"},
        "onnx": {"installed": True, "version": "1.17.0"},
        "onnxruntime": {"installed": True, "version": "1.20.0", "providers": ["CPUExecutionProvider"]},
        "cuda_python": {"installed": True, "version": "12.6.0", "module": "cuda.bindings.runtime",
                        "device_count": 1, "device_reason": "1 CUDA device(s)", "device_name": "Orin",
                        "compute_capability": "8.7", "memory_mb": 62841, "cuda_runtime": "12.6"},
        "tensorrt": {"usable": True, "reason": "ok", "version": "10.3.0.30", "packages": {},
                     "capabilities": {"weak_typing": True, "has_calibrator": True, "num_dla_cores": 2,
                                      "has_builder": True}},
        "jetson": {"l4t": "36.4.3", "model": "NVIDIA Jetson AGX Orin Developer Kit", "jetpack": "6.2",
                   "expected_tensorrt": "10.3", "table_verified": True, "power_mode": "MAXN", "jetson_clocks": True},
    }


def test_format_report_for_a_jetson_with_tensorrt() -> None:
    from kd2trt.doctor import _abilities

    env = jetson_env()
    env["abilities"] = _abilities(env)
    report = format_report(env)
    assert "Orin (sm87, 62841 MiB), CUDA runtime 12.6" in report
    assert "L4T 36.4.3, JetPack 6.2 (ships TensorRT 10.3), power mode MAXN, jetson_clocks on" in report
    assert "[yes] DLA engines: 2 DLA core(s)" in report
    assert "implicit INT8 from a calibration cache" in report
    assert "warning:" not in report


def test_format_report_shows_why_the_l4t_is_unknown(tmp_path: Path) -> None:
    from kd2trt.doctor import _abilities
    from kd2trt.trt.jetson import detect_jetson

    release = tmp_path / "nv_tegra_release"
    release.write_text("# R40 (release), REV: 1.0\n")  # a format kd2trt does not know
    info = detect_jetson(release, tmp_path / "model", compatible_path=tmp_path / "compatible", run=None)
    assert info is not None
    env = jetson_env()
    env["jetson"] = info.summary()
    env["abilities"] = _abilities(env)
    report = format_report(env)
    assert "unknown board, L4T unknown, JetPack unknown\n" in report
    assert f"warning: {release} does not parse" in report


def test_tensorrt_installed_does_not_import() -> None:
    found = tensorrt_installed()
    assert set(found) == {"tensorrt", "tensorrt_lean", "tensorrt_dispatch"}
    assert "tensorrt" not in sys.modules or found["tensorrt"]


TRT_SOURCES = [*sorted((REPO / "kd2trt" / "trt").glob("*.py")), REPO / "kd2trt" / "doctor.py"]


@pytest.mark.parametrize("path", TRT_SOURCES, ids=lambda p: p.name)
def test_python38_syntax(path: Path) -> None:
    """JetPack 5 runs Python 3.8: no 3.9+ syntax, and every module postpones annotation evaluation."""
    source = path.read_text()
    tree = ast.parse(source, filename=str(path), feature_version=(3, 8))
    futures = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "__future__"]
    if path.name != "__init__.py":
        assert any(alias.name == "annotations" for node in futures for alias in node.names), path.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in {"removeprefix", "removesuffix"}, f"{path.name}: 3.9+ str method"
        if isinstance(node, ast.keyword) and node.arg == "strict":
            raise AssertionError(f"{path.name}: zip(strict=...) is 3.10+")
