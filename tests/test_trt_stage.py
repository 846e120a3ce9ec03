"""kd2trt.trt.stage without TensorRT: what is built from, which options each precision gets, the skip message."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from kd2trt.config import BuildConfig, ExportConfig, RunConfig
from kd2trt.errors import Kd2trtError
from kd2trt.targets import TrtVersion
from kd2trt.trt import cuda_memory
from kd2trt.trt.builder import resolve_profile, validate_build_options
from kd2trt.trt.plan import plan_precision
from kd2trt.trt.stage import (
    CALIBRATION_BATCH,
    build_engines,
    build_options,
    precisions_to_build,
    resolve_sources,
)
from tests.test_trt_builder_logic import ALL
from tests.test_trt_builder_logic import ORIN as AGX_ORIN

needs_no_gpu = pytest.mark.skipif(cuda_memory.cuda_device_count()[0] > 0, reason="this machine has a CUDA device")


def quiet() -> Console:
    return Console(file=io.StringIO())


# --------------------------------------------------------------------------------------------- options


def test_dla_core_goes_to_fp16_and_int8_only() -> None:
    """`--dla-core 0` with FP16 and INT8: FP32 (always built) goes to the GPU, so every build passes the checks."""
    build = BuildConfig(dla_core=0, min_batch=8, max_batch=8)  # DLA needs static shapes
    precisions = precisions_to_build(ExportConfig(fp16=True, int8=True))
    assert precisions == ["fp32", "fp16", "int8"]
    chosen = {}
    for precision in precisions:
        options = build_options(precision, build)
        chosen[precision] = options["dla_core"]
        plan = plan_precision(AGX_ORIN, precision, build.int8_path, ALL)
        profile = resolve_profile((-1, 1, 8, 8), options["min_batch"], options["opt_batch"], options["max_batch"])
        validate_build_options(plan, AGX_ORIN, profile, dla_core=options["dla_core"],
                               calibrator_batch=CALIBRATION_BATCH)
    assert chosen == {"fp32": None, "fp16": 0, "int8": 0}
    # What the stage did before: the DLA core on the FP32 build, which the checks refuse.
    fp32 = plan_precision(AGX_ORIN, "fp32", "auto", ALL)
    with pytest.raises(Kd2trtError, match="DLA runs FP16 or INT8 only"):
        validate_build_options(fp32, AGX_ORIN, resolve_profile((-1, 1, 8, 8), 8, 8, 8), dla_core=0)


def test_build_options_follow_the_recipe() -> None:
    build = BuildConfig(min_batch=2, max_batch=16, workspace_mb=256, timing_cache_dir=None, gpu_fallback=False,
                        version_compatible=True, hardware_compatible=True)
    assert build_options("fp16", build) == {
        "min_batch": 2, "opt_batch": 16, "max_batch": 16, "workspace_mb": 256, "timing_cache_dir": None,
        "dla_core": None, "gpu_fallback": False, "version_compatible": True, "hardware_compatible": True}
    assert build_options("int8", BuildConfig(opt_batch=4, max_batch=16))["opt_batch"] == 4
    assert build_options("fp32", BuildConfig()) == build_options("int8", BuildConfig())  # no DLA: same options


@pytest.mark.parametrize(("fp16", "int8", "expected"), [(False, False, ["fp32"]), (True, False, ["fp32", "fp16"]),
                                                       (False, True, ["fp32", "int8"])])
def test_precisions_to_build(fp16: bool, int8: bool, expected: list[str]) -> None:
    assert precisions_to_build(ExportConfig(fp16=fp16, int8=int8)) == expected


# --------------------------------------------------------------------------------------------- sources


def test_sources_default_to_the_run_layout(tmp_path: Path) -> None:
    sources = resolve_sources(tmp_path / "digits")
    assert sources.onnx_path == tmp_path / "digits" / "student.onnx"
    assert (sources.model, sources.checkpoint) == ("student", tmp_path / "digits" / "student.pt")
    assert sources.calib_cache(TrtVersion(10, 3, 0)) == tmp_path / "digits" / "student.calib-trt10.3.0.cache"


def test_sources_from_the_caller(tmp_path: Path) -> None:
    # `kd2trt export runs/d/teacher.pt --out exported/`: the ONNX is not beside the checkpoint, nor "student".
    sources = resolve_sources(tmp_path / "exported", tmp_path / "exported" / "teacher.onnx",
                              checkpoint=tmp_path / "runs" / "d" / "teacher.pt")
    assert (sources.model, sources.checkpoint) == ("teacher", tmp_path / "runs" / "d" / "teacher.pt")
    assert sources.calib_cache("8.5.2") == tmp_path / "exported" / "teacher.calib-trt8.5.2.cache"
    named = resolve_sources(tmp_path, tmp_path / "teacher.onnx", model="resnet18-kd")
    assert (named.model, named.checkpoint) == ("resnet18-kd", tmp_path / "teacher.pt")


@pytest.mark.parametrize(("onnx", "model", "match"), [
    ("student.int8.onnx", None, r"student\.int8\.onnx is a derived graph; pass the FP32 graph .*student\.onnx"),
    ("student.fp16.onnx", None, r"derived graph; pass the FP32 graph .*student\.onnx"),
    ("student.pt", None, r"student\.pt: not an ONNX graph"),
    ("student.onnx", "///", "cannot be used in a file name"),
])
def test_bad_sources_fail_before_anything_is_built(tmp_path: Path, onnx: str, model: str | None, match: str) -> None:
    with pytest.raises(Kd2trtError, match=match):
        build_engines(RunConfig(), tmp_path, quiet(), onnx_path=tmp_path / onnx, model=model)


# --------------------------------------------------------------------------------------------- without TensorRT


def test_engines_off_is_skipped() -> None:
    config = RunConfig(build=BuildConfig(engines=False))
    outcome = build_engines(config, Path("runs/digits"), quiet())
    assert outcome.outputs == [] and outcome.skipped_reason == "build.engines is false"


@needs_no_gpu
def test_without_a_gpu_the_skip_names_the_checkpoint_to_export_on_the_target(tmp_path: Path) -> None:
    outcome = build_engines(RunConfig(), tmp_path / "digits", quiet())
    assert outcome.outputs == [] and "CUDA device" in outcome.skipped_reason
    assert f"kd2trt export {tmp_path / 'digits' / 'student.pt'} --fp16 --int8" in outcome.skipped_reason
    checkpoint = tmp_path / "runs" / "d" / "teacher.pt"
    outcome = build_engines(RunConfig(), tmp_path / "exported", quiet(),
                            onnx_path=tmp_path / "exported" / "teacher.onnx", checkpoint=checkpoint)
    assert f"kd2trt export {checkpoint} " in outcome.skipped_reason
