"""The parts of the engine builder and runner that need no TensorRT: profiles, option checks, messages, batching."""

from __future__ import annotations

from pathlib import Path

import pytest

from kd2trt.errors import Kd2trtError
from kd2trt.runner import split_batches
from kd2trt.targets import TrtVersion
from kd2trt.trt.builder import ParserIssue, format_parser_errors, read_timing_cache
from kd2trt.trt.capabilities import TrtCapabilities
from kd2trt.trt.plan import plan_precision
from kd2trt.trt.wiring import (
    DEFAULT_MAX_BATCH,
    ProfileShapes,
    default_workspace_mb,
    resolve_profile,
    timing_cache_filename,
    validate_build_options,
)

ALL = ["onnx", "fp16_onnx", "qdq_onnx", "calib_cache"]
ORIN = TrtCapabilities(TrtVersion(10, 3, 0), "10.3.0.30", strongly_typed_flag=True, version_compatible=True,
                       hardware_compatible=True, num_dla_cores=2)
JP5 = TrtCapabilities(TrtVersion(8, 5, 2), "8.5.2.2", explicit_batch_flag_needed=True)
STATIC4 = ProfileShapes((3, 32, 32), 4, 4, 4, False)
DYNAMIC = ProfileShapes((3, 32, 32), 1, 16, 32, True)


# --------------------------------------------------------------------------------------------- profiles


def test_dynamic_batch_defaults() -> None:
    p = resolve_profile((-1, 1, 8, 8))
    assert (p.chw, p.min_batch, p.opt_batch, p.max_batch, p.dynamic_batch) == ((1, 8, 8), 1, DEFAULT_MAX_BATCH,
                                                                              DEFAULT_MAX_BATCH, True)
    assert p.shape(4) == (4, 1, 8, 8) and not p.static


@pytest.mark.parametrize(("args", "expected"), [
    ((1, 8, 16), (1, 8, 16)), ((None, 8, None), (1, 8, 32)), ((None, 64, None), (1, 64, 64)),
    ((None, None, 4), (1, 4, 4)), ((2, None, None), (2, 32, 32)), ((8, 8, 8), (8, 8, 8)),
])
def test_dynamic_batch_ranges(args, expected) -> None:
    p = resolve_profile((-1, 3, 32, 32), *args)
    assert (p.min_batch, p.opt_batch, p.max_batch) == expected


@pytest.mark.parametrize("args", [(4, 2, 8), (1, 16, 8), (0, 1, 1)])
def test_bad_batch_ranges(args) -> None:
    with pytest.raises(Kd2trtError, match="1 <= min <= opt <= max"):
        resolve_profile((-1, 3, 32, 32), *args)


def test_static_batch() -> None:
    p = resolve_profile((4, 3, 32, 32))
    assert (p.min_batch, p.opt_batch, p.max_batch, p.dynamic_batch, p.static) == (4, 4, 4, False, True)
    assert resolve_profile((4, 3, 32, 32), 4, 4, 4).static
    with pytest.raises(Kd2trtError, match="static batch of 4, so the max batch cannot be 8"):
        resolve_profile((4, 3, 32, 32), max_batch=8)


def test_spatial_axes() -> None:
    assert resolve_profile((-1, 3, -1, -1), input_chw=(3, 64, 48)).chw == (3, 64, 48)
    with pytest.raises(Kd2trtError, match="dynamic H axis; give the input size"):
        resolve_profile((-1, 3, -1, -1))
    with pytest.raises(Kd2trtError, match="has C=3, but C=1 was requested"):
        resolve_profile((-1, 3, 32, 32), input_chw=(1, 32, 32))
    with pytest.raises(Kd2trtError, match="three positive integers"):
        resolve_profile((-1, 3, 32, 32), input_chw=(3, 32))
    with pytest.raises(Kd2trtError, match="one NCHW input"):
        resolve_profile((-1, 10))


# --------------------------------------------------------------------------------------------- option checks


def test_dla_checks() -> None:
    int8 = plan_precision(ORIN, "int8", "auto", ALL)
    fp32 = plan_precision(ORIN, "fp32", "auto", ALL)
    validate_build_options(int8, ORIN, STATIC4, dla_core=1)
    with pytest.raises(Kd2trtError, match="DLA core 2 does not exist; this device has 2"):
        validate_build_options(int8, ORIN, STATIC4, dla_core=2)
    with pytest.raises(Kd2trtError, match="FP16 or INT8 only"):
        validate_build_options(fp32, ORIN, STATIC4, dla_core=0)
    with pytest.raises(Kd2trtError, match="DLA needs static shapes"):
        validate_build_options(int8, ORIN, DYNAMIC, dla_core=0)
    no_dla = TrtCapabilities(TrtVersion(10, 3, 0), num_dla_cores=0)
    with pytest.raises(Kd2trtError, match="has no DLA"):
        validate_build_options(int8, no_dla, STATIC4, dla_core=0)
    with pytest.raises(Kd2trtError, match="0 or more"):
        validate_build_options(int8, ORIN, STATIC4, dla_core=-1)


def test_compatibility_flag_checks() -> None:
    fp16 = plan_precision(JP5, "fp16", "auto", ALL)
    with pytest.raises(Kd2trtError, match="cannot build version-compatible engines"):
        validate_build_options(fp16, JP5, DYNAMIC, version_compatible=True)
    with pytest.raises(Kd2trtError, match="cannot build hardware-compatible engines"):
        validate_build_options(fp16, JP5, DYNAMIC, hardware_compatible=True)
    validate_build_options(fp16, ORIN, DYNAMIC, version_compatible=True, hardware_compatible=True,
                           compute_capability="8.9")
    with pytest.raises(Kd2trtError, match="not supported on JetPack"):
        validate_build_options(fp16, ORIN, DYNAMIC, hardware_compatible=True, on_jetson=True)
    with pytest.raises(Kd2trtError, match="Ampere or newer GPU; this one is sm75"):
        validate_build_options(fp16, ORIN, DYNAMIC, hardware_compatible=True, compute_capability="7.5")


def test_calibration_batch_must_match_a_static_graph() -> None:
    int8 = plan_precision(ORIN, "int8", "auto", ALL)
    validate_build_options(int8, ORIN, STATIC4, calibrator_batch=4)
    validate_build_options(int8, ORIN, DYNAMIC, calibrator_batch=7)
    with pytest.raises(Kd2trtError, match="calibration batches must have 4 images, not 8"):
        validate_build_options(int8, ORIN, STATIC4, calibrator_batch=8)


def test_runtime_only_tensorrt_cannot_build() -> None:
    lean = TrtCapabilities(TrtVersion(10, 14, 1), has_builder=False)
    with pytest.raises(Kd2trtError, match="runtime-only"):
        validate_build_options(plan_precision(lean, "fp32", "auto", ALL), lean, DYNAMIC)
    with pytest.raises(Kd2trtError, match="at least 1 MiB"):
        validate_build_options(plan_precision(ORIN, "fp32", "auto", ALL), ORIN, DYNAMIC, workspace_mb=0)


# --------------------------------------------------------------------------------------------- names, messages


def test_workspace_defaults_are_the_documented_ones() -> None:
    """The recipe documents the defaults (`kd2trt export --help`, docker/README.md): the code must agree."""
    from kd2trt.config import BuildConfig

    field = BuildConfig.model_fields["workspace_mb"]
    jetson, desktop = default_workspace_mb(on_jetson=True), default_workspace_mb(on_jetson=False)
    assert field.description == f"default: {jetson} on Jetson, {desktop} elsewhere"
    assert jetson < desktop  # a Jetson shares its RAM with the system: builds there get less
    BuildConfig(workspace_mb=jetson)  # both are values a recipe itself may set
    BuildConfig(workspace_mb=desktop)


def test_an_unreadable_timing_cache_starts_a_new_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    saved = tmp_path / "timing.cache"
    assert read_timing_cache(saved) == b""  # none yet: a new cache, silently
    saved.write_bytes(b"tactics")
    assert read_timing_cache(saved) == b"tactics"
    folder = tmp_path / "a-folder.cache"
    folder.mkdir()  # a path that exists but cannot be read as a file (IsADirectoryError)
    with caplog.at_level("WARNING", logger="kd2trt.trt.builder"):
        assert read_timing_cache(folder) == b""
    assert f"cannot read timing cache {folder}" in caplog.text and "starting a new one" in caplog.text


def test_timing_cache_filename_is_keyed_by_gpu_cc_and_trt() -> None:
    assert timing_cache_filename("NVIDIA GeForce RTX 4090", "8.9", "10.3.0.26") == (
        "timing-NVIDIA-GeForce-RTX-4090-sm89-trt10.3.0.cache")
    assert timing_cache_filename("Orin (nvgpu)", "8.7", "8.5.2.2") == "timing-Orin-nvgpu-sm87-trt8.5.2.cache"


def test_format_parser_errors() -> None:
    issues = [ParserIssue(3, "GridSample", "/head/grid", "unsupported operator"),
              ParserIssue(-1, None, None, "model has no inputs")]
    message = format_parser_errors("runs/x/student.onnx", "8.5.2", issues)
    assert message.startswith("runs/x/student.onnx: TensorRT 8.5.2's ONNX parser failed: ")
    assert "node 3 (GridSample '/head/grid'): unsupported operator; model has no inputs" in message
    assert "--trt-version 8.5.2" in message and "\n" not in message
    many = format_parser_errors("a.onnx", "10.3.0", [ParserIssue(i, "Op", None, "bad") for i in range(8)])
    assert "(+3 more)" in many


# --------------------------------------------------------------------------------------------- runner batching


def test_split_batches() -> None:
    assert split_batches(10, 1, 4) == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]
    assert split_batches(9, 4, 4) == [(0, 4, 4), (4, 8, 4), (8, 9, 4)]
    assert split_batches(3, 1, 32) == [(0, 3, 3)]
    with pytest.raises(Kd2trtError, match="no images"):
        split_batches(0, 1, 4)
    with pytest.raises(Kd2trtError, match="bad batch range"):
        split_batches(4, 5, 4)
