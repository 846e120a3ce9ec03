"""kd2trt.trt.plan: which graph and which builder switches per TensorRT line, with hand-built capabilities.

The capability sets mirror what :func:`kd2trt.trt.capabilities.probe` reports for each line (DESIGN §3 and
NVIDIA's 10.x -> 11.x migration guide); they are plain dataclasses, no TensorRT is imported or imitated.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kd2trt.errors import Kd2trtError
from kd2trt.targets import TrtVersion
from kd2trt.trt.capabilities import TrtCapabilities
from kd2trt.trt.plan import (
    EXPORT_FP16_COMMAND,
    EXPORT_INT8_COMMAND,
    PrecisionPlan,
    discover_artifacts,
    plan_precision,
)
from kd2trt.trt.wiring import ProfileShapes, validate_build_options

CAPS = {
    "8.5": TrtCapabilities(TrtVersion(8, 5, 2), "8.5.2.2", weak_typing=True, has_calibrator=True,
                           strongly_typed_flag=False, explicit_batch_flag_needed=True),
    "8.6": TrtCapabilities(TrtVersion(8, 6, 2), "8.6.2.3", weak_typing=True, has_calibrator=True,
                           strongly_typed_flag=False, explicit_batch_flag_needed=True, version_compatible=True,
                           hardware_compatible=True),
    "10.3": TrtCapabilities(TrtVersion(10, 3, 0), "10.3.0.30", weak_typing=True, has_calibrator=True,
                            strongly_typed_flag=True, version_compatible=True, hardware_compatible=True),
    "10.14": TrtCapabilities(TrtVersion(10, 14, 1), "10.14.1.48", weak_typing=True, has_calibrator=True,
                             strongly_typed_flag=True, version_compatible=True, hardware_compatible=True),
    "11.0": TrtCapabilities(TrtVersion(11, 0, 0), "11.0.0.14", weak_typing=False, has_calibrator=False,
                            strongly_typed_flag=True, version_compatible=True, hardware_compatible=True),
}
WEAK = ["8.5", "8.6", "10.3", "10.14"]
ALL = ["onnx", "fp16_onnx", "qdq_onnx", "calib_cache"]
PROFILE = ProfileShapes((1, 8, 8), 1, 32, 32, True)


def plan(line: str, precision: str, int8_path: str = "auto", available=ALL, data: bool = False, **kw):
    return plan_precision(CAPS[line], precision, int8_path, available, data, **kw)


# --------------------------------------------------------------------------------------------- fp32 / fp16


@pytest.mark.parametrize("line", list(CAPS))
def test_fp32_uses_the_fp32_graph_without_flags(line: str) -> None:
    p = plan(line, "fp32")
    assert (p.onnx_kind, p.fp16_flag, p.int8_flag, p.use_calibrator, p.quantization) == ("onnx", False, False,
                                                                                          False, "none")
    assert p.strongly_typed is (line == "11.0")


@pytest.mark.parametrize("line", WEAK)
def test_fp16_on_weak_typing_is_the_fp32_graph_plus_flag(line: str) -> None:
    p = plan(line, "fp16")
    assert (p.onnx_kind, p.fp16_flag, p.int8_flag, p.strongly_typed) == ("onnx", True, False, False)
    assert "BuilderFlag.FP16" in p.reason


def test_fp16_on_trt11_is_the_fp16_cast_graph() -> None:
    p = plan("11.0", "fp16")
    assert (p.onnx_kind, p.fp16_flag, p.int8_flag, p.strongly_typed) == ("fp16_onnx", False, False, True)


def test_fp16_on_trt11_without_the_fp16_graph_names_the_export_command() -> None:
    with pytest.raises(Kd2trtError, match=r"fp16\.onnx is missing") as err:
        plan("11.0", "fp16", available=["onnx", "qdq_onnx"])
    assert EXPORT_FP16_COMMAND in str(err.value)
    assert "no FP16 builder flag" in str(err.value)


def test_missing_fp32_graph_is_an_error_with_the_export_command() -> None:
    with pytest.raises(Kd2trtError, match=r"<model>\.onnx is missing.*kd2trt export"):
        plan("10.3", "fp16", available=["qdq_onnx"])


# --------------------------------------------------------------------------------------------- INT8 <= 10.x


@pytest.mark.parametrize("line", WEAK)
def test_int8_auto_prefers_the_calibration_cache(line: str) -> None:
    p = plan(line, "int8")
    assert (p.onnx_kind, p.int8_flag, p.fp16_flag, p.use_calibrator, p.calibration_source, p.quantization) == (
        "onnx", True, True, True, "cache", "implicit")
    assert "no data needed" in p.reason


@pytest.mark.parametrize("line", WEAK)
def test_int8_auto_calibrates_live_without_a_cache(line: str) -> None:
    p = plan(line, "int8", available=["onnx", "qdq_onnx"], data=True)
    assert (p.use_calibrator, p.calibration_source, p.int8_flag, p.fp16_flag) == (True, "data", True, True)


@pytest.mark.parametrize("line", WEAK)
def test_int8_auto_falls_back_to_qdq_without_cache_or_data(line: str) -> None:
    p = plan(line, "int8", available=["onnx", "qdq_onnx"])
    assert (p.onnx_kind, p.int8_flag, p.fp16_flag, p.use_calibrator, p.quantization) == (
        "qdq_onnx", True, False, False, "explicit")
    assert "no calibration cache" in p.reason


def test_int8_auto_with_nothing_usable_names_the_export_command_and_version() -> None:
    with pytest.raises(Kd2trtError) as err:
        plan("8.5", "int8", available=["onnx"], other_caches=["student.calib-trt10.3.0.cache"])
    message = str(err.value)
    assert EXPORT_INT8_COMMAND in message and "--trt-version 8.5.2" in message
    assert "student.calib-trt10.3.0.cache" in message


@pytest.mark.parametrize("line", WEAK)
def test_int8_qdq_is_explicit_with_the_int8_flag_only(line: str) -> None:
    p = plan(line, "int8", "qdq")
    assert (p.onnx_kind, p.int8_flag, p.fp16_flag, p.use_calibrator, p.quantization, p.strongly_typed) == (
        "qdq_onnx", True, False, False, "explicit", False)


def test_int8_cache_route_requires_the_cache_for_this_version() -> None:
    with pytest.raises(Kd2trtError, match=r"no calibration cache for TensorRT 10\.3\.0") as err:
        plan("10.3", "int8", "cache", available=["onnx", "qdq_onnx"], data=True,
             other_caches=[Path("runs/x/student.calib-trt8.5.2.cache")])
    assert "student.calib-trt8.5.2.cache" in str(err.value)


def test_int8_cache_route_ignores_live_data() -> None:
    p = plan("8.6", "int8", "cache", data=True)
    assert p.calibration_source == "cache"


def test_int8_qdq_without_the_qdq_graph_is_an_error() -> None:
    with pytest.raises(Kd2trtError, match=r"int8\.onnx is missing.*kd2trt export <checkpoint> --int8"):
        plan("10.14", "int8", "qdq", available=["onnx", "calib_cache"])


def test_weak_typing_without_calibrator_uses_qdq() -> None:
    caps = TrtCapabilities(TrtVersion(10, 16, 0), weak_typing=True, has_calibrator=False, strongly_typed_flag=True)
    p = plan_precision(caps, "int8", "auto", ALL, True)
    assert p.onnx_kind == "qdq_onnx"
    with pytest.raises(Kd2trtError, match="no INT8 calibrator"):
        plan_precision(caps, "int8", "cache", ALL, True)


# --------------------------------------------------------------------------------------------- INT8 11.x


def test_int8_on_trt11_is_the_qdq_graph() -> None:
    for route in ("auto", "qdq"):
        p = plan("11.0", "int8", route, data=True)
        assert (p.onnx_kind, p.int8_flag, p.fp16_flag, p.use_calibrator, p.strongly_typed, p.quantization) == (
            "qdq_onnx", False, False, False, True, "explicit")


def test_int8_on_trt11_without_qdq_graph_names_export_int8() -> None:
    with pytest.raises(Kd2trtError) as err:
        plan("11.0", "int8", available=["onnx", "calib_cache"], data=True)
    assert EXPORT_INT8_COMMAND in str(err.value)
    assert "no INT8 builder flag or calibrator" in str(err.value)


def test_int8_cache_on_trt11_is_refused() -> None:
    with pytest.raises(Kd2trtError, match="removed INT8 calibrators"):
        plan("11.0", "int8", "cache")


# --------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(("precision", "route", "match"), [
    ("bf16", "auto", "unknown precision"), ("int8", "implicit", "unknown INT8 path")])
def test_bad_choices(precision: str, route: str, match: str) -> None:
    with pytest.raises(Kd2trtError, match=match):
        plan("10.3", precision, route)


def test_unknown_artifact_kind() -> None:
    with pytest.raises(Kd2trtError, match="unknown artifact kind"):
        plan("10.3", "fp32", available=["onnx", "engine"])


@pytest.mark.parametrize("line", list(CAPS))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("route", ["auto", "qdq"])
def test_every_plan_passes_the_builder_checks_for_its_own_tensorrt(line: str, precision: str, route: str) -> None:
    p = plan(line, precision, route, data=True)
    assert isinstance(p, PrecisionPlan)
    validate_build_options(p, CAPS[line], PROFILE)
    summary = p.summary()
    assert summary["precision"] == precision and summary["reason"]


def test_a_trt10_plan_is_refused_by_trt11_builder_checks() -> None:
    with pytest.raises(Kd2trtError, match="sets builder flags"):
        validate_build_options(plan("10.3", "int8"), CAPS["11.0"], PROFILE)


# --------------------------------------------------------------------------------------------- artifacts


def test_discover_artifacts(tmp_path: Path) -> None:
    for name in ("student.onnx", "student.fp16.onnx", "student.int8.onnx", "student.calib-trt10.3.0.cache",
                 "student.calib-trt8.5.2.cache", "teacher.onnx", "teacher.calib-trt10.3.0.cache"):
        (tmp_path / name).write_bytes(b"x")
    found = discover_artifacts(tmp_path / "student.onnx", TrtVersion(10, 3, 0))
    assert found.kinds == {"onnx", "fp16_onnx", "qdq_onnx", "calib_cache"}
    assert found.paths["calib_cache"].name == "student.calib-trt10.3.0.cache"
    assert [p.name for p in found.other_caches] == ["student.calib-trt8.5.2.cache"]
    trt85 = discover_artifacts(tmp_path / "student.onnx", TrtVersion(8, 5, 2))
    assert trt85.paths["calib_cache"].name == "student.calib-trt8.5.2.cache"
    trt11 = discover_artifacts(tmp_path / "student.onnx", TrtVersion(11, 0, 0))
    assert "calib_cache" not in trt11.kinds and len(trt11.other_caches) == 2


def test_discover_artifacts_feeds_plan(tmp_path: Path) -> None:
    (tmp_path / "student.onnx").write_bytes(b"x")
    (tmp_path / "student.calib-trt8.5.2.cache").write_bytes(b"x")
    found = discover_artifacts(tmp_path / "student.onnx", CAPS["10.3"].version)
    with pytest.raises(Kd2trtError, match=r"found only student\.calib-trt8\.5\.2\.cache"):
        plan_precision(CAPS["10.3"], "int8", "auto", found.kinds, False, other_caches=found.other_caches)
    assert discover_artifacts(tmp_path / "missing.onnx", None).kinds == set()
