"""The TensorRT wiring as data: everything the builder and the runtime will set, decided without TensorRT.

:func:`plan_build` turns (precision plan, the recipe's build options, the TensorRT capabilities, the device)
into a frozen :class:`BuildSettings`: the network-creation flags, the builder flags, the config attributes
(device type, DLA core, hardware-compatibility level, profiling verbosity, calibrator and calibration profile),
the memory pools, the optimisation profile, the timing-cache file and the per-layer precisions, each named by
its TensorRT enum member (``"FP16"`` for ``trt.BuilderFlag.FP16``). It also refuses every combination
TensorRT would reject late or silently ignore (:func:`validate_build_options`). So what an engine is built
with is a value tests can compare per TensorRT line, and :func:`apply_build_settings` -- the one place names
become ``trt.<Enum>.<member>`` (``getattr``) -- has no decision left to get wrong.

Names per TensorRT line (NVIDIA Python API reference 8.6/10.x/11.x, checked against the real bindings in
``bench/results/trt_api_surface.json``):

====================================  =====================================================================
``NetworkDefinitionCreationFlag``     ``EXPLICIT_BATCH`` required on 8.x, deprecated/ignored on 10.x, removed
                                      in 11.x; ``STRONGLY_TYPED`` >= 9.x (11.x: always, accepted and ignored)
``BuilderFlag``                       ``FP16``/``INT8`` <= 10.x; ``OBEY_PRECISION_CONSTRAINTS`` (and the
                                      weaker ``PREFER_PRECISION_CONSTRAINTS``) >= 8.2, removed in 11.x;
                                      ``GPU_FALLBACK`` (DLA); ``VERSION_COMPATIBLE`` >= 8.6
``ILayer.precision``                  <= 10.x; honoured only with a precision-constraints flag; absent in 11.x
                                      (a strongly typed network takes its precisions from the graph's types)
``IBuilderConfig``                    ``default_device_type``/``DLA_core``, ``hardware_compatibility_level``
                                      (>= 8.6), ``profiling_verbosity``, ``int8_calibrator`` and
                                      ``set_calibration_profile`` (<= 10.x), ``set_memory_pool_limit``
====================================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd2trt.errors import Kd2trtError
from kd2trt.layout import slug, trt_short
from kd2trt.manifests import BuildOptions
from kd2trt.trt.capabilities import TrtCapabilities
from kd2trt.trt.plan import PRECISIONS, PrecisionPlan

if TYPE_CHECKING:
    from kd2trt.config import BuildConfig

__all__ = [
    "DEFAULT_MAX_BATCH",
    "LAYER_DTYPES",
    "TRT_NAMES",
    "BuildSettings",
    "DeviceFacts",
    "GraphInput",
    "ProfileShapes",
    "RuntimeSettings",
    "apply_build_settings",
    "apply_runtime_settings",
    "check_network_input",
    "default_workspace_mb",
    "network_creation_flags",
    "plan_build",
    "resolve_profile",
    "runtime_settings",
    "timing_cache_filename",
    "validate_build_options",
]

#: Every TensorRT enum member the wiring may name, per enum: :class:`BuildSettings` refuses any other, and
#: ``scripts/check_trt_api.py`` checks that each is in its table of names (so in the bindings surface).
TRT_NAMES: dict[str, tuple[str, ...]] = {
    "NetworkDefinitionCreationFlag": ("EXPLICIT_BATCH", "STRONGLY_TYPED"),
    "BuilderFlag": ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "GPU_FALLBACK",
                    "VERSION_COMPATIBLE", "TF32"),
    "MemoryPoolType": ("WORKSPACE",),
    "DeviceType": ("DLA",),
    "HardwareCompatibilityLevel": ("AMPERE_PLUS",),
    "ProfilingVerbosity": ("DETAILED",),
    "DataType": ("FLOAT", "HALF", "INT8"),
}
#: kd2trt precision -> the ``trt.DataType`` member a layer is pinned to
LAYER_DTYPES = {"fp32": "FLOAT", "fp16": "HALF", "int8": "INT8"}

DEFAULT_MAX_BATCH = 32
JETSON_WORKSPACE_MB = 512  # unified memory shared with the OS: a generous workspace gets builds OOM-killed
DEFAULT_WORKSPACE_MB = 2048


def default_workspace_mb(on_jetson: bool) -> int:
    return JETSON_WORKSPACE_MB if on_jetson else DEFAULT_WORKSPACE_MB


def timing_cache_filename(gpu_name: str, cc: str, trt_version: str) -> str:
    """One timing cache per GPU model, compute capability and TensorRT version (tactic timings are all three)."""
    return f"timing-{slug(gpu_name or 'gpu')}-sm{cc.replace('.', '')}-trt{trt_short(trt_version)}.cache"



# --------------------------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class ProfileShapes:
    """The optimization profile of the single NCHW input."""

    chw: tuple[int, int, int]
    min_batch: int
    opt_batch: int
    max_batch: int
    dynamic_batch: bool

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, *self.chw)

    @property
    def static(self) -> bool:
        return self.min_batch == self.opt_batch == self.max_batch


def resolve_profile(onnx_shape: Any, min_batch: int | None = None, opt_batch: int | None = None,
                    max_batch: int | None = None, input_chw: Any = None, source: str = "the ONNX input"
                    ) -> ProfileShapes:
    """Profile shapes from the network input's shape (``-1`` = dynamic) and the requested batch range.

    Defaults for a dynamic batch: min 1, max :data:`DEFAULT_MAX_BATCH`, opt = max. A static batch ``N`` in
    the graph allows only min = opt = max = N. C, H and W must be static in the graph or given in
    ``input_chw``.
    """
    dims = [int(d) for d in onnx_shape]
    if len(dims) != 4:
        raise Kd2trtError(f"{source} has shape {tuple(dims)}; kd2trt builds image models with one NCHW input")
    given = tuple(int(d) for d in input_chw) if input_chw is not None else None
    if given is not None and (len(given) != 3 or min(given) < 1):
        raise Kd2trtError(f"input C,H,W must be three positive integers, got {input_chw!r}")
    chw = []
    for axis in range(3):
        name, dim = "CHW"[axis], dims[axis + 1]
        if dim > 0:
            if given is not None and given[axis] != dim:
                raise Kd2trtError(f"{source} has {name}={dim}, but {name}={given[axis]} was requested; the graph's "
                                  "static size wins — drop the option or re-export")
            chw.append(dim)
        elif given is not None:
            chw.append(given[axis])
        else:
            raise Kd2trtError(f"{source} has a dynamic {name} axis; give the input size (C,H,W) to build for")
    batch = dims[0]
    if batch > 0:
        for label, value in (("min", min_batch), ("opt", opt_batch), ("max", max_batch)):
            if value is not None and value != batch:
                raise Kd2trtError(f"{source} has a static batch of {batch}, so the {label} batch cannot be {value}; "
                                  "re-export with a dynamic batch axis or build for that batch")
        return ProfileShapes((chw[0], chw[1], chw[2]), batch, batch, batch, False)
    low = 1 if min_batch is None else int(min_batch)
    high = int(max_batch) if max_batch is not None else max(DEFAULT_MAX_BATCH, low, int(opt_batch or 0))
    opt = high if opt_batch is None else int(opt_batch)
    if not 1 <= low <= opt <= high:
        raise Kd2trtError(f"batch profile must satisfy 1 <= min <= opt <= max, got min={low} opt={opt} max={high}")
    return ProfileShapes((chw[0], chw[1], chw[2]), low, opt, high, True)


# --------------------------------------------------------------------------------------------- option checks


def validate_build_options(
    plan: PrecisionPlan,
    caps: TrtCapabilities,
    profile: ProfileShapes,
    *,
    dla_core: int | None = None,
    version_compatible: bool = False,
    hardware_compatible: bool = False,
    on_jetson: bool = False,
    compute_capability: str | None = None,
    calibrator_batch: int | None = None,
    workspace_mb: int | None = None,
) -> None:
    """Refuse combinations TensorRT would reject late (or silently ignore), each with the fix."""
    version = caps.version
    if not caps.has_builder:
        raise Kd2trtError(f"this TensorRT {version} is a runtime-only install (no Builder/OnnxParser); build "
                          "engines with the full TensorRT (NVIDIA container or JetPack)")
    if (plan.fp16_flag or plan.int8_flag) and not caps.weak_typing:
        raise Kd2trtError(f"the precision plan sets builder flags, but TensorRT {version} has none (strong typing "
                          "only); plan again for this TensorRT")
    if plan.strongly_typed and not caps.strongly_typed_flag and not caps.strongly_typed_only:
        raise Kd2trtError(f"the precision plan needs a strongly typed network, which TensorRT {version} cannot "
                          "create; plan again for this TensorRT")
    if plan.use_calibrator and not caps.has_calibrator:
        raise Kd2trtError(f"TensorRT {version} has no INT8 calibrator; build INT8 from the Q/DQ graph")
    if workspace_mb is not None and workspace_mb < 1:
        raise Kd2trtError(f"workspace must be at least 1 MiB, got {workspace_mb}")
    if plan.use_calibrator and calibrator_batch is not None and not profile.dynamic_batch \
            and calibrator_batch != profile.max_batch:
        raise Kd2trtError(f"the graph has a static batch of {profile.max_batch}, so calibration batches must have "
                          f"{profile.max_batch} images, not {calibrator_batch}")
    if dla_core is not None:
        if dla_core < 0:
            raise Kd2trtError(f"DLA core must be 0 or more, got {dla_core}")
        if caps.num_dla_cores == 0:
            raise Kd2trtError("this device has no DLA (Deep Learning Accelerator); DLA exists on Jetson AGX Orin "
                              "and Orin NX — drop --dla-core to build for the GPU")
        if dla_core >= caps.num_dla_cores:
            raise Kd2trtError(f"DLA core {dla_core} does not exist; this device has {caps.num_dla_cores} "
                              f"(0..{caps.num_dla_cores - 1})")
        if plan.precision == "fp32":
            raise Kd2trtError("DLA runs FP16 or INT8 only; build with precision fp16 or int8 for --dla-core")
        if not profile.static:
            raise Kd2trtError(f"DLA needs static shapes, but the batch profile is {profile.min_batch}/"
                              f"{profile.opt_batch}/{profile.max_batch}; pass the same min, opt and max batch")
    if version_compatible and not caps.version_compatible:
        raise Kd2trtError(f"TensorRT {version} cannot build version-compatible engines (needs 8.6 or later)")
    if hardware_compatible:
        if not caps.hardware_compatible:
            raise Kd2trtError(f"TensorRT {version} cannot build hardware-compatible engines (needs 8.6 or later)")
        if on_jetson:
            raise Kd2trtError("hardware-compatible engines are not supported on JetPack; build on each Jetson")
        if compute_capability is not None and int(compute_capability.split(".")[0]) < 8:
            raise Kd2trtError(f"hardware-compatible (Ampere+) engines must be built on an Ampere or newer GPU; "
                              f"this one is sm{compute_capability.replace('.', '')}")



# --------------------------------------------------------------------------------------------- the settings


@dataclass(frozen=True)
class DeviceFacts:
    """The GPU an engine is built on: part of the engine's identity (timing cache, manifest) and its checks."""

    name: str
    compute_capability: str  # "8.7"
    on_jetson: bool = False


@dataclass(frozen=True)
class GraphInput:
    """The ONNX graph's single input, as written in the graph (``-1`` = a dynamic axis)."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class BuildSettings:
    """Everything :func:`apply_build_settings` sets on TensorRT for one engine, by TensorRT enum-member name."""

    trt_version: str  # the TensorRT these settings were planned for (tensorrt.__version__)
    device: DeviceFacts
    plan: PrecisionPlan
    input_name: str
    profile: ProfileShapes
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: tuple[str, ...]  # BuilderFlag members, in the order they are set
    memory_pools: tuple[tuple[str, int], ...]  # (MemoryPoolType member, bytes)
    cleared_flags: tuple[str, ...] = ()  # BuilderFlag members TensorRT sets by default, cleared
    default_device_type: str | None = None  # DeviceType member; None: TensorRT's default, the GPU
    dla_core: int | None = None
    hardware_compatibility_level: str | None = None  # HardwareCompatibilityLevel member
    profiling_verbosity: str | None = None  # ProfilingVerbosity member
    int8_calibrator: bool = False  # attach the calibrator (implicit INT8)
    calibration_profile: ProfileShapes | None = None  # the calibrator's fixed shape (set_calibration_profile)
    timing_cache_dir: Path | None = None
    timing_cache_file: str | None = None  # file name in timing_cache_dir
    layer_precisions: tuple[tuple[str, str], ...] = ()  # (layer name, DataType member): ILayer.precision
    layer_info: bool = False  # write <engine>.layers.json (engine inspector; needs DETAILED verbosity)

    def __post_init__(self) -> None:
        named = [("NetworkDefinitionCreationFlag", n) for n in self.network_flags]
        named += [("BuilderFlag", n) for n in (*self.builder_flags, *self.cleared_flags)]
        named += [("MemoryPoolType", pool) for pool, _ in self.memory_pools]
        named += [("DataType", dtype) for _, dtype in self.layer_precisions]
        for enum, value in (("DeviceType", self.default_device_type),
                            ("HardwareCompatibilityLevel", self.hardware_compatibility_level),
                            ("ProfilingVerbosity", self.profiling_verbosity)):
            if value is not None:
                named.append((enum, value))
        unknown = [f"{enum}.{name}" for enum, name in named if name not in TRT_NAMES[enum]]
        if unknown:
            raise Kd2trtError(f"build settings name TensorRT members kd2trt does not know: {', '.join(unknown)}")

    @property
    def precision(self) -> str:
        return self.plan.precision

    @property
    def workspace_mb(self) -> int:
        return dict(self.memory_pools)["WORKSPACE"] >> 20

    @property
    def version_compatible(self) -> bool:
        return "VERSION_COMPATIBLE" in self.builder_flags

    @property
    def hardware_compatible(self) -> bool:
        return self.hardware_compatibility_level is not None

    @property
    def gpu_fallback(self) -> bool:
        return "GPU_FALLBACK" in self.builder_flags

    @property
    def timing_cache_path(self) -> Path | None:
        if self.timing_cache_dir is None or self.timing_cache_file is None:
            return None
        return Path(self.timing_cache_dir) / self.timing_cache_file

    def runtime(self) -> RuntimeSettings:
        """How a runtime must be set up to deserialize this engine (the builder's engine inspector does too)."""
        return RuntimeSettings(engine_host_code_allowed=self.version_compatible)

    def record(self, timing_cache_loaded: bool = False) -> BuildOptions:
        """The engine manifest's record of these settings."""
        path = self.timing_cache_path
        return BuildOptions(
            input_name=self.input_name, input_chw=list(self.profile.chw), min_batch=self.profile.min_batch,
            opt_batch=self.profile.opt_batch, max_batch=self.profile.max_batch, workspace_mb=self.workspace_mb,
            dla_core=self.dla_core, gpu_fallback=self.gpu_fallback,
            timing_cache=str(path) if path is not None else None,
            timing_cache_loaded=bool(timing_cache_loaded and path is not None),
            version_compatible=self.version_compatible, hardware_compatible=self.hardware_compatible,
            network_flags=list(self.network_flags), builder_flags=list(self.builder_flags),
            layer_precisions=[list(pair) for pair in self.layer_precisions])


def plan_build(plan: PrecisionPlan, build: BuildConfig, caps: TrtCapabilities, device: DeviceFacts,
               graph_input: GraphInput, *, input_chw: Sequence[int] | None = None,
               calibration_batch: int | None = None, layer_info: bool = True,
               layer_precisions: Iterable[tuple[str, str]] = ()) -> BuildSettings:
    """The :class:`BuildSettings` for building ``plan`` with the recipe's ``build`` section on ``caps``/``device``.

    ``graph_input``: the graph's input (name and shape, ``-1`` dynamic); ``input_chw`` fills dynamic C/H/W
    (the checkpoint's preprocessing). ``calibration_batch``: the calibrator's batch size (implicit INT8).
    ``layer_precisions``: ``(layer name, "fp32" | "fp16" | "int8")`` pins, applied with ``ILayer.precision``
    and the precision-constraints flag -- only on weakly typed networks (<= 10.x), and only to a precision the
    plan's flags enable. Raises :class:`Kd2trtError` for any combination TensorRT would refuse or ignore.
    """
    trt_version = caps.version_string or str(caps.version)
    profile = resolve_profile(graph_input.shape, build.min_batch, build.opt_batch or build.max_batch,
                              build.max_batch, input_chw, source=f"the ONNX input {graph_input.name!r}")
    workspace_mb = default_workspace_mb(device.on_jetson) if build.workspace_mb is None else int(build.workspace_mb)
    validate_build_options(plan, caps, profile, dla_core=build.dla_core, version_compatible=build.version_compatible,
                           hardware_compatible=build.hardware_compatible, on_jetson=device.on_jetson,
                           compute_capability=device.compute_capability, workspace_mb=workspace_mb,
                           calibrator_batch=calibration_batch if plan.use_calibrator else None)

    network_flags = []
    if caps.explicit_batch_flag_needed:
        network_flags.append("EXPLICIT_BATCH")
    if plan.strongly_typed and caps.strongly_typed_flag:
        network_flags.append("STRONGLY_TYPED")

    builder_flags = []
    if plan.fp16_flag:
        builder_flags.append("FP16")
    if plan.int8_flag:
        builder_flags.append("INT8")
    pins = _layer_pins(plan, caps, tuple(builder_flags), layer_precisions)
    if pins:
        builder_flags.append(caps.precision_constraints_flag)
    on_dla = build.dla_core is not None
    if on_dla and build.gpu_fallback:
        builder_flags.append("GPU_FALLBACK")
    if build.version_compatible:
        builder_flags.append("VERSION_COMPATIBLE")

    # The FP32 engine is the reference every other engine is compared with (bench's parity gate at
    # export.parity_atol + parity_rtol × logit range): TensorRT's default TF32 for FP32 layers (Ampere and
    # later, 10-bit mantissa: ~1e-3 relative per op) would make it drift.
    cleared_flags = ("TF32",) if plan.precision == "fp32" and caps.tf32_flag else ()
    calibration_profile = None
    if plan.use_calibrator and caps.has_calibration_profile:
        # Calibration runs at one shape: the calibrator's batch, min = opt = max.
        batch = profile.opt_batch if calibration_batch is None else int(calibration_batch)
        calibration_profile = ProfileShapes(profile.chw, batch, batch, batch, False)
    timing_dir = Path(build.timing_cache_dir) if build.timing_cache_dir is not None else None
    return BuildSettings(
        trt_version=trt_version,
        device=device,
        plan=plan,
        input_name=graph_input.name,
        profile=profile,
        network_flags=tuple(network_flags),
        builder_flags=tuple(builder_flags),
        cleared_flags=cleared_flags,
        memory_pools=(("WORKSPACE", workspace_mb << 20),),
        default_device_type="DLA" if on_dla else None,
        dla_core=int(build.dla_core) if on_dla else None,
        hardware_compatibility_level="AMPERE_PLUS" if build.hardware_compatible else None,
        profiling_verbosity="DETAILED" if layer_info else None,
        int8_calibrator=plan.use_calibrator,
        calibration_profile=calibration_profile,
        timing_cache_dir=timing_dir,
        timing_cache_file=(timing_cache_filename(device.name, device.compute_capability, trt_version)
                           if timing_dir is not None else None),
        layer_precisions=pins,
        layer_info=layer_info,
    )


def _layer_pins(plan: PrecisionPlan, caps: TrtCapabilities, builder_flags: tuple[str, ...],
                layer_precisions: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    pins = [(str(name), str(precision)) for name, precision in layer_precisions]
    if not pins:
        return ()
    if plan.strongly_typed or not caps.layer_precision or caps.precision_constraints_flag is None:
        raise Kd2trtError(f"per-layer precisions cannot be set on TensorRT {caps.version}'s "
                          f"{'strongly typed ' if plan.strongly_typed else ''}network: the precisions come from the "
                          "graph's types there (no ILayer.precision / precision-constraint flag); keep the layers "
                          "in higher precision in the exported graph instead")
    seen: set[str] = set()
    for name, precision in pins:
        if precision not in PRECISIONS:
            raise Kd2trtError(f"layer {name!r}: unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        if name in seen:
            raise Kd2trtError(f"layer {name!r} is given a precision twice")
        seen.add(name)
        flag = {"fp16": "FP16", "int8": "INT8"}.get(precision)
        if flag is not None and flag not in builder_flags:
            raise Kd2trtError(f"layer {name!r} is pinned to {precision}, but this {plan.precision} build does not "
                              f"enable BuilderFlag.{flag}; pin it to a precision the build enables")
    return tuple((name, LAYER_DTYPES[precision]) for name, precision in pins)


def check_network_input(settings: BuildSettings, name: str, shape: Sequence[int]) -> None:
    """Refuse a parsed network whose input is not the one the settings were planned for."""
    if name != settings.input_name:
        raise Kd2trtError(f"the network's input is named {name!r}, but the build was planned for "
                          f"{settings.input_name!r}; plan again from this graph")
    p = settings.profile
    try:
        found = resolve_profile(tuple(shape), p.min_batch, p.opt_batch, p.max_batch, p.chw,
                                source=f"the network input {name!r}")
    except Kd2trtError as exc:
        raise Kd2trtError(f"{exc} (the build was planned for another graph; plan again from this one)") from None
    if found != p:
        raise Kd2trtError(f"the network input {name!r} has shape {tuple(shape)}, but the build was planned for "
                          f"{p.shape(-1 if p.dynamic_batch else p.max_batch)}; plan again from this graph")


# --------------------------------------------------------------------------------------------- applying


def _member(trt: Any, enum: str, name: str) -> Any:
    return getattr(getattr(trt, enum), name)


def network_creation_flags(trt: Any, settings: BuildSettings) -> int:
    """The ``create_network`` bit mask: ``1 << int(flag)`` per flag (values differ by version: read, never assumed)."""
    bits = 0
    for name in settings.network_flags:
        bits |= 1 << int(_member(trt, "NetworkDefinitionCreationFlag", name))
    return bits


def apply_build_settings(trt: Any, settings: BuildSettings, builder: Any, network: Any, config: Any,
                         calibrator: Any = None) -> None:
    """Set ``settings`` on a builder config (and the network's layers); no decision is taken here."""
    for pool, size in settings.memory_pools:
        config.set_memory_pool_limit(_member(trt, "MemoryPoolType", pool), size)
    config.add_optimization_profile(_profile(builder, settings.input_name, settings.profile))
    for flag in settings.builder_flags:
        config.set_flag(_member(trt, "BuilderFlag", flag))
    for flag in settings.cleared_flags:
        config.clear_flag(_member(trt, "BuilderFlag", flag))
    if settings.int8_calibrator:
        config.int8_calibrator = calibrator
    if settings.calibration_profile is not None:
        config.set_calibration_profile(_profile(builder, settings.input_name, settings.calibration_profile))
    if settings.default_device_type is not None:
        config.default_device_type = _member(trt, "DeviceType", settings.default_device_type)
    if settings.dla_core is not None:
        config.DLA_core = settings.dla_core
    if settings.hardware_compatibility_level is not None:
        config.hardware_compatibility_level = _member(trt, "HardwareCompatibilityLevel",
                                                      settings.hardware_compatibility_level)
    if settings.profiling_verbosity is not None:
        config.profiling_verbosity = _member(trt, "ProfilingVerbosity", settings.profiling_verbosity)
    if settings.layer_precisions:
        layers = {}
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            layers[layer.name] = layer
        missing = [name for name, _ in settings.layer_precisions if name not in layers]
        if missing:
            raise Kd2trtError(f"the network has no layer named {', '.join(map(repr, missing))}; TensorRT's layer "
                              "names are the ONNX node names")
        for name, dtype in settings.layer_precisions:
            layers[name].precision = _member(trt, "DataType", dtype)


def _profile(builder: Any, input_name: str, shapes: ProfileShapes) -> Any:
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shapes.shape(shapes.min_batch), shapes.shape(shapes.opt_batch),
                      shapes.shape(shapes.max_batch))
    return profile


# --------------------------------------------------------------------------------------------- the runtime


@dataclass(frozen=True)
class RuntimeSettings:
    """What a ``trt.Runtime`` must allow before it deserializes an engine."""

    engine_host_code_allowed: bool = False  # a version-compatible plan embeds its lean runtime (host code)


def runtime_settings(build: BuildOptions) -> RuntimeSettings:
    """The runtime setup an engine's manifest record asks for."""
    return RuntimeSettings(engine_host_code_allowed=build.version_compatible)


def apply_runtime_settings(runtime: Any, settings: RuntimeSettings) -> None:
    if settings.engine_host_code_allowed and hasattr(runtime, "engine_host_code_allowed"):
        runtime.engine_host_code_allowed = True
