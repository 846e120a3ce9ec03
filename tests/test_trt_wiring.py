"""kd2trt.trt.wiring: what the builder sets per TensorRT line, and that applying it touches only real names.

Capabilities come from :func:`kd2trt.trt.capabilities.probe` run on the API surfaces of NVIDIA's real bindings
(tests/trt_surface.py: 8.6.1, 10.3.0, 10.13.3, 11.0, 11.4); 8.5 (JetPack 5, no bindings wheel on PyPI) is a
hand-built :class:`TrtCapabilities`. :func:`apply_build_settings` runs against the same surfaces, whose objects
refuse attributes the version does not have and record every call.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kd2trt.config import BuildConfig
from kd2trt.errors import Kd2trtError
from kd2trt.manifests import BuildOptions
from kd2trt.targets import TrtVersion
from kd2trt.trt.capabilities import TrtCapabilities, probe
from kd2trt.trt.plan import plan_precision
from kd2trt.trt.wiring import (
    DeviceFacts,
    GraphInput,
    ProfileShapes,
    apply_build_settings,
    apply_runtime_settings,
    check_network_input,
    network_creation_flags,
    plan_build,
    runtime_settings,
)
from tests.trt_surface import builder_objects, surface

SURFACES = {"8.6": "8.6.1", "10.3": "10.3.0", "10.13": "10.13.3.9", "11.0": "11.0.0.114", "11.4": "11.4.0.106"}
DLA2 = {"Builder": {"num_DLA_cores": 2}}
CAPS = {line: probe(surface(version, defaults=DLA2)) for line, version in SURFACES.items()}
CAPS["8.5"] = TrtCapabilities(TrtVersion(8, 5, 2), "8.5.2.2", explicit_batch_flag_needed=True, num_dla_cores=2)
LINES = ["8.5", "8.6", "10.3", "10.13", "11.0", "11.4"]
WEAK = ["8.5", "8.6", "10.3", "10.13"]
ALL = ["onnx", "fp16_onnx", "qdq_onnx", "calib_cache"]
X86 = DeviceFacts("NVIDIA H100 80GB HBM3", "9.0")
ORIN = DeviceFacts("Orin (nvgpu)", "8.7", on_jetson=True)
GRAPH = GraphInput("input", (-1, 1, 8, 8))
STATIC8 = BuildConfig(min_batch=8, max_batch=8)


def settings(line: str, precision: str, int8_path: str = "auto", build: BuildConfig | None = None,
             device: DeviceFacts = X86, **kw):
    plan = plan_precision(CAPS[line], precision, int8_path, ALL)
    return plan_build(plan, build or BuildConfig(), CAPS[line], device, GRAPH, calibration_batch=32, **kw)


def expected_network_flags(line: str) -> tuple[str, ...]:
    return {"8.5": ("EXPLICIT_BATCH",), "8.6": ("EXPLICIT_BATCH",), "10.3": (), "10.13": ()}.get(
        line, ("STRONGLY_TYPED",))


# precision, INT8 route -> (builder flags, calibrator attached) on weakly typed lines (8.5 - 10.x)
WEAK_FLAGS = {
    ("fp32", "auto"): ((), False),
    ("fp16", "auto"): (("FP16",), False),
    ("int8", "auto"): (("FP16", "INT8"), True),  # implicit: INT8 + FP16 fallback, the cache calibrates
    ("int8", "qdq"): (("INT8",), False),  # explicit Q/DQ: INT8 only, unquantized layers stay FP32
}


@pytest.mark.parametrize("line", WEAK)
@pytest.mark.parametrize(("precision", "route"), list(WEAK_FLAGS))
def test_flags_on_weakly_typed_lines(line: str, precision: str, route: str) -> None:
    s = settings(line, precision, route)
    flags, calibrator = WEAK_FLAGS[(precision, route)]
    assert s.network_flags == expected_network_flags(line)
    assert s.builder_flags == flags
    assert s.int8_calibrator is calibrator
    assert (s.calibration_profile == ProfileShapes((1, 8, 8), 32, 32, 32, False)) is calibrator
    assert (s.default_device_type, s.dla_core, s.hardware_compatibility_level) == (None, None, None)
    assert s.profiling_verbosity == "DETAILED" and s.layer_precisions == ()


@pytest.mark.parametrize("line", ["11.0", "11.4"])
@pytest.mark.parametrize(("precision", "onnx_kind"), [("fp32", "onnx"), ("fp16", "fp16_onnx"), ("int8", "qdq_onnx")])
def test_strongly_typed_lines_set_no_precision_flag(line: str, precision: str, onnx_kind: str) -> None:
    s = settings(line, precision)
    assert s.plan.onnx_kind == onnx_kind
    assert (s.network_flags, s.builder_flags, s.int8_calibrator, s.calibration_profile) == (
        ("STRONGLY_TYPED",), (), False, None)


def test_profile_workspace_and_timing_cache_follow_the_recipe() -> None:
    s = settings("10.3", "fp16", build=BuildConfig(min_batch=2, opt_batch=4, max_batch=16, workspace_mb=256))
    assert s.profile == ProfileShapes((1, 8, 8), 2, 4, 16, True) and s.input_name == "input"
    assert s.memory_pools == (("WORKSPACE", 256 << 20),) and s.workspace_mb == 256
    assert s.timing_cache_file == "timing-NVIDIA-H100-80GB-HBM3-sm90-trt10.3.0.cache"
    assert str(s.timing_cache_path) == "engines/timing-cache/timing-NVIDIA-H100-80GB-HBM3-sm90-trt10.3.0.cache"
    assert settings("10.3", "fp32", build=BuildConfig(timing_cache_dir=None)).timing_cache_path is None
    assert settings("10.3", "fp32", layer_info=False).profiling_verbosity is None


@pytest.mark.parametrize(("device", "mib"), [(ORIN, 512), (X86, 2048)])
def test_workspace_default_is_small_on_jetson(device: DeviceFacts, mib: int) -> None:
    assert settings("10.3", "fp16", device=device).memory_pools == (("WORKSPACE", mib << 20),)
    assert settings("10.3", "fp16", device=device, build=BuildConfig(workspace_mb=1024)).workspace_mb == 1024


@pytest.mark.parametrize("line", ["8.5", "8.6", "10.3", "10.13"])
@pytest.mark.parametrize(("precision", "route"), [("fp16", "auto"), ("int8", "auto"), ("int8", "qdq")])
def test_dla(line: str, precision: str, route: str) -> None:
    s = settings(line, precision, route, build=STATIC8.model_copy(update={"dla_core": 1}), device=ORIN)
    assert (s.default_device_type, s.dla_core, s.builder_flags[-1]) == ("DLA", 1, "GPU_FALLBACK")
    no_fallback = STATIC8.model_copy(update={"dla_core": 1, "gpu_fallback": False})
    assert "GPU_FALLBACK" not in settings(line, precision, route, build=no_fallback, device=ORIN).builder_flags
    # the GPU build sets none of it
    gpu = settings(line, precision, route, build=STATIC8, device=ORIN)
    assert (gpu.default_device_type, gpu.dla_core, gpu.gpu_fallback) == (None, None, False)


def test_dla_refusals() -> None:
    dla = STATIC8.model_copy(update={"dla_core": 0})
    with pytest.raises(Kd2trtError, match="DLA runs FP16 or INT8 only"):
        settings("10.3", "fp32", build=dla, device=ORIN)
    with pytest.raises(Kd2trtError, match="DLA needs static shapes"):
        settings("10.3", "fp16", build=BuildConfig(dla_core=0), device=ORIN)
    with pytest.raises(Kd2trtError, match="DLA core 2 does not exist"):
        settings("10.3", "fp16", build=STATIC8.model_copy(update={"dla_core": 2}), device=ORIN)


@pytest.mark.parametrize("line", ["8.6", "10.3", "10.13", "11.0", "11.4"])
def test_version_and_hardware_compatible(line: str) -> None:
    s = settings(line, "fp16", build=BuildConfig(version_compatible=True, hardware_compatible=True))
    assert s.builder_flags[-1] == "VERSION_COMPATIBLE" and s.hardware_compatibility_level == "AMPERE_PLUS"
    assert s.runtime().engine_host_code_allowed
    record = s.record(timing_cache_loaded=True)
    assert (record.version_compatible, record.hardware_compatible, record.timing_cache_loaded) == (True, True, True)
    assert not settings(line, "fp16").runtime().engine_host_code_allowed
    with pytest.raises(Kd2trtError, match="not supported on JetPack"):
        settings(line, "fp16", build=BuildConfig(hardware_compatible=True), device=ORIN)


def test_compatibility_needs_8_6() -> None:
    with pytest.raises(Kd2trtError, match="cannot build version-compatible engines"):
        settings("8.5", "fp16", build=BuildConfig(version_compatible=True))
    with pytest.raises(Kd2trtError, match="cannot build hardware-compatible engines"):
        settings("8.5", "fp16", build=BuildConfig(hardware_compatible=True))


def test_the_manifest_record_is_the_settings() -> None:
    s = settings("10.3", "int8", build=STATIC8.model_copy(update={"dla_core": 0}), device=ORIN)
    record = s.record()
    assert record == BuildOptions(
        input_name="input", input_chw=[1, 8, 8], min_batch=8, opt_batch=8, max_batch=8, workspace_mb=512,
        dla_core=0, gpu_fallback=True, timing_cache=str(s.timing_cache_path), timing_cache_loaded=False,
        version_compatible=False, hardware_compatible=False, network_flags=[],
        builder_flags=["FP16", "INT8", "GPU_FALLBACK"], layer_precisions=[])
    assert runtime_settings(record) == s.runtime()


# --------------------------------------------------------------------------------------------- layer precisions


@pytest.mark.parametrize("line", WEAK)
def test_layer_precisions_with_the_constraints_flag(line: str) -> None:
    s = settings(line, "fp16", layer_precisions=[("fc", "fp32"), ("conv", "fp16")])
    assert s.layer_precisions == (("fc", "FLOAT"), ("conv", "HALF"))
    assert s.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    int8 = settings(line, "int8", "auto", layer_precisions=[("fc", "fp16")])
    assert int8.builder_flags == ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS")


def test_prefer_precision_constraints_where_obey_is_missing() -> None:
    caps = replace(CAPS["10.3"], precision_constraints_flag="PREFER_PRECISION_CONSTRAINTS")
    plan = plan_precision(caps, "fp16", "auto", ALL)
    s = plan_build(plan, BuildConfig(), caps, X86, GRAPH, layer_precisions=[("fc", "fp32")])
    assert s.builder_flags == ("FP16", "PREFER_PRECISION_CONSTRAINTS")


@pytest.mark.parametrize("line", ["11.0", "11.4"])
def test_no_layer_precisions_on_strongly_typed_networks(line: str) -> None:
    assert settings(line, "fp16").layer_precisions == ()
    with pytest.raises(Kd2trtError, match=r"per-layer precisions cannot be set .* strongly typed"):
        settings(line, "fp16", layer_precisions=[("fc", "fp32")])


def test_layer_precision_refusals() -> None:
    with pytest.raises(Kd2trtError, match=r"pinned to fp16, but this fp32 build does not enable BuilderFlag\.FP16"):
        settings("10.3", "fp32", layer_precisions=[("fc", "fp16")])
    with pytest.raises(Kd2trtError, match="pinned to int8"):
        settings("10.3", "fp16", layer_precisions=[("fc", "int8")])
    with pytest.raises(Kd2trtError, match="given a precision twice"):
        settings("10.3", "fp16", layer_precisions=[("fc", "fp32"), ("fc", "fp16")])
    with pytest.raises(Kd2trtError, match="unknown precision 'bf16'"):
        settings("10.3", "fp16", layer_precisions=[("fc", "bf16")])


# --------------------------------------------------------------------------------------------- applying


def _apply(line: str, s, layers=("conv", "fc"), calibrator=None):
    trt = surface(SURFACES[line])
    builder, network, config = builder_objects(trt, list(layers))
    apply_build_settings(trt, s, builder, network, config, calibrator)
    return trt, network, config


def _set_flags(config) -> list[str]:
    return [args[0].name for name, args in config.calls if name == "set_flag"]


@pytest.mark.parametrize("line", list(SURFACES))
@pytest.mark.parametrize(("precision", "route"), [("fp32", "auto"), ("fp16", "auto"), ("int8", "auto"),
                                                  ("int8", "qdq")])
def test_apply_sets_exactly_the_settings_on_the_real_surface(line: str, precision: str, route: str) -> None:
    s = settings(line, precision, route)
    calibrator = object() if s.int8_calibrator else None
    trt, _, config = _apply(line, s, calibrator=calibrator)
    assert _set_flags(config) == list(s.builder_flags)
    assert ("set_memory_pool_limit", (trt.MemoryPoolType.WORKSPACE, 2048 << 20)) in config.calls
    profiles = [args[0] for name, args in config.calls if name == "add_optimization_profile"]
    assert [p.calls[1:] for p in profiles] == [[("set_shape", ("input", (1, 1, 8, 8), (32, 1, 8, 8), (32, 1, 8, 8)))]]
    assert config.values.get("int8_calibrator") is calibrator
    calib = [args[0].calls[1:] for name, args in config.calls if name == "set_calibration_profile"]
    one = (32, 1, 8, 8)
    assert calib == ([[("set_shape", ("input", one, one, one))]] if calibrator else [])
    assert config.values["profiling_verbosity"] == trt.ProfilingVerbosity.DETAILED
    assert "default_device_type" not in config.values and "DLA_core" not in config.values


@pytest.mark.parametrize(("line", "bits"), [("8.6", 1), ("10.3", 0), ("10.13", 0), ("11.0", 1), ("11.4", 1)])
def test_network_creation_flags_use_the_versions_values(line: str, bits: int) -> None:
    """8.6: EXPLICIT_BATCH (value 0) -> 1; 10.x: nothing; 11.x: STRONGLY_TYPED, whose value there is 0 -> 1."""
    assert network_creation_flags(surface(SURFACES[line]), settings(line, "fp32")) == bits


def test_apply_dla_compatibility_and_layer_precisions() -> None:
    s = settings("10.3", "fp16", build=STATIC8.model_copy(update={"dla_core": 1, "version_compatible": True,
                                                                  "hardware_compatible": False}),
                 device=ORIN, layer_precisions=[("fc", "fp32")])
    trt, network, config = _apply("10.3", s)
    assert config.values["default_device_type"] == trt.DeviceType.DLA and config.values["DLA_core"] == 1
    assert _set_flags(config) == ["FP16", "OBEY_PRECISION_CONSTRAINTS", "GPU_FALLBACK", "VERSION_COMPATIBLE"]
    fc = network.returns["get_layer"](1)
    assert fc.values["precision"] == trt.DataType.FLOAT and "precision" not in network.returns["get_layer"](0).values
    hw = settings("11.4", "fp16", build=BuildConfig(hardware_compatible=True))
    trt, _, config = _apply("11.4", hw)
    assert config.values["hardware_compatibility_level"] == trt.HardwareCompatibilityLevel.AMPERE_PLUS
    with pytest.raises(Kd2trtError, match="no layer named 'head'"):
        _apply("10.3", settings("10.3", "fp16", layer_precisions=[("head", "fp32")]))


def test_runtime_settings_on_the_real_runtime_surface() -> None:
    runtime = surface("10.13.3.9").Runtime()
    apply_runtime_settings(runtime, settings("10.13", "fp16", build=BuildConfig(version_compatible=True)).runtime())
    assert runtime.values["engine_host_code_allowed"] is True
    runtime = surface("10.13.3.9").Runtime()
    apply_runtime_settings(runtime, settings("10.13", "fp16").runtime())
    assert "engine_host_code_allowed" not in runtime.values


def test_the_parsed_network_must_be_the_planned_graph() -> None:
    s = settings("10.3", "fp16")
    check_network_input(s, "input", (-1, 1, 8, 8))
    with pytest.raises(Kd2trtError, match="named 'images', but the build was planned for 'input'"):
        check_network_input(s, "images", (-1, 1, 8, 8))
    with pytest.raises(Kd2trtError, match="static batch of 4"):
        check_network_input(s, "input", (4, 1, 8, 8))
    with pytest.raises(Kd2trtError, match="has C=3, but C=1"):
        check_network_input(s, "input", (-1, 3, 8, 8))


def test_settings_refuse_unknown_tensorrt_names() -> None:
    with pytest.raises(Kd2trtError, match=r"BuilderFlag\.STRICT_TYPES"):
        replace(settings("10.3", "fp16"), builder_flags=("STRICT_TYPES",))


@pytest.mark.parametrize("line", list(SURFACES))
def test_the_fp32_reference_engine_clears_tf32(line: str) -> None:
    """TensorRT enables TF32 for FP32 layers by default (Ampere+): the FP32 engine would drift past parity_atol."""
    fp32 = settings(line, "fp32")
    assert fp32.cleared_flags == ("TF32",)
    _, _, config = _apply(line, fp32)
    assert [args[0].name for name, args in config.calls if name == "clear_flag"] == ["TF32"]
    assert settings(line, "fp16").cleared_flags == ()
