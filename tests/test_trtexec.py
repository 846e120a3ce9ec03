"""trtexec command lines for targets kd2trt does not run on (JetPack 5): the same plan as a kd2trt build."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from kd2trt.layout import ModelFiles
from kd2trt.targets import TrtVersion
from kd2trt.trt.plan import plan_precision
from kd2trt.trt.trtexec import release_capabilities, trtexec_command

FILES = ModelFiles(Path("runs/digits"), "student")
ALL = ["onnx", "fp16_onnx", "qdq_onnx", "calib_cache"]


def _command(version: TrtVersion, precision: str, **kw) -> list[str]:
    plan = plan_precision(release_capabilities(version), precision, "auto", ALL)
    return shlex.split(trtexec_command(plan, FILES, version, (1, 16, 16), (1, 32, 32), **kw))


def test_jetpack5_int8_reads_the_cache_of_that_release_with_fp16_fallback() -> None:
    args = _command(TrtVersion(8, 5, 2), "int8", high_precision=["/stages/stages.0/Conv", "/classifier/Gemm"])
    assert args[:2] == ["trtexec", "--onnx=student.onnx"]  # run in the copied run directory
    assert "--saveEngine=student-int8-trt8.5.2.engine" in args
    assert {"--int8", "--fp16", "--calib=student.calib-trt8.5.2.cache"} <= set(args)
    assert "--minShapes=input:1x1x16x16" in args and "--maxShapes=input:32x1x16x16" in args
    assert "--memPoolSize=workspace:512" in args
    assert args[-2:] == ["--precisionConstraints=obey",
                         "--layerPrecisions=/stages/stages.0/Conv:fp32,/classifier/Gemm:fp32"]


def test_fp16_and_fp32_use_the_fp32_graph_with_flags_up_to_10x() -> None:
    fp16 = _command(TrtVersion(10, 3, 0), "fp16")
    assert "--fp16" in fp16 and "--int8" not in fp16 and not any(a.startswith("--calib") for a in fp16)
    fp32 = _command(TrtVersion(8, 5, 2), "fp32")
    assert "--fp16" not in fp32 and "--onnx=student.onnx" in fp32 and "--noTF32" in fp32  # the FP32 reference


def test_tensorrt_11_builds_the_typed_graphs_strongly_typed() -> None:
    int8 = _command(TrtVersion(11, 0, 0), "int8", high_precision=["/classifier/Gemm"])
    assert "--onnx=student.int8.onnx" in int8 and "--stronglyTyped" in int8
    assert "--int8" not in int8 and not any(a.startswith("--layerPrecisions") for a in int8)
    assert "--onnx=student.fp16.onnx" in _command(TrtVersion(11, 0, 0), "fp16")


@pytest.mark.parametrize(("version", "weak", "explicit_batch"), [
    (TrtVersion(8, 5, 2), True, True), (TrtVersion(8, 6, 2), True, True), (TrtVersion(10, 3, 0), True, False),
    (TrtVersion(11, 4, 0), False, False)])
def test_release_capabilities(version: TrtVersion, weak: bool, explicit_batch: bool) -> None:
    caps = release_capabilities(version)
    assert (caps.weak_typing, caps.has_calibrator, caps.explicit_batch_flag_needed) == (weak, weak, explicit_batch)


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "10.13.3.9", "11.0.0.114", "11.4.0.106"])
def test_release_capabilities_agree_with_the_real_bindings(version: str) -> None:
    """What planning off-target assumes of a release is what probe() finds in NVIDIA's bindings of it."""
    from kd2trt.trt.capabilities import probe
    from tests.trt_surface import surface

    probed, assumed = probe(surface(version)), release_capabilities(TrtVersion.parse(version))
    for field in ("weak_typing", "has_calibrator", "explicit_batch_flag_needed", "strongly_typed_flag",
                  "version_compatible", "hardware_compatible", "tf32_flag"):
        assert getattr(assumed, field) == getattr(probed, field), field
