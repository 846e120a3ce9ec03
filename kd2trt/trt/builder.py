"""Build one TensorRT engine from an ONNX graph following a :class:`~kd2trt.trt.plan.PrecisionPlan`.

The TensorRT calls, and the versions they exist in (NVIDIA Python API reference for 8.5, 8.6, 10.x, 11.x and
the 10.x -> 11.x migration guide; NVIDIA samples ``efficientdet/build_engine.py``, ``common_runtime.py``):

=====================================================  ==========================================================
call                                                   notes
=====================================================  ==========================================================
``Builder(logger)``, ``create_network(flags)``         ``EXPLICIT_BATCH`` required on 8.x, ignored on 10.x,
                                                       removed in 11.x; ``STRONGLY_TYPED`` (>= 9.x) set when
                                                       the plan says so
                                                       (always on 11.x, where it is accepted and ignored)
``OnnxParser(network, logger)``, ``parse_from_file``   errors: ``num_errors``, ``get_error(i).node()/.desc()``
                                                       (``node_name()``/``node_operator()`` >= 10.x; not 8.6)
``create_optimization_profile``, ``set_shape``         one profile: min/opt/max batch
``config.set_memory_pool_limit(WORKSPACE, bytes)``     >= 8.4 (``max_workspace_size`` before); set explicitly,
                                                       small on Jetson (unified memory: builds get OOM-killed)
``BuilderFlag.FP16`` / ``INT8``                        <= 10.x only (removed in 11.0)
``config.int8_calibrator``, ``set_calibration_profile`` <= 10.x only (deprecated 10.1, removed 11.0)
``create_timing_cache``/``set_timing_cache``           >= 8.0; ``get_timing_cache().serialize()`` to save
``default_device_type = DLA``, ``DLA_core``,           DLA (Jetson AGX/NX Orin): FP16/INT8 only, static shapes
``BuilderFlag.GPU_FALLBACK``
``BuilderFlag.VERSION_COMPATIBLE``                     >= 8.6
``hardware_compatibility_level = AMPERE_PLUS``         >= 8.6, Ampere+ GPUs, not on JetPack
``build_serialized_network`` -> ``IHostMemory``/None   None = failure; the logger holds the reason
``profiling_verbosity = DETAILED`` +                   layer information JSON (>= 8.2)
``create_engine_inspector().get_engine_information``
=====================================================  ==========================================================

Everything that can be decided without TensorRT (profile shapes, option checks, file names, the parser-error
message) is a pure function here and is tested on CPU; :func:`build_engine` itself needs TensorRT + a GPU.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kd2trt.artifacts import atomic_path, atomic_write_bytes, atomic_write_text, sha256_file
from kd2trt.errors import Kd2trtError
from kd2trt.layout import sidecar, slug, trt_short
from kd2trt.manifests import BuildOptions, EngineManifest, JetsonRecord, PlanRecord
from kd2trt.trt.calibrator import raise_calibration_error
from kd2trt.trt.capabilities import TrtCapabilities
from kd2trt.trt.manifest import write_manifest
from kd2trt.trt.plan import PrecisionPlan

__all__ = [
    "DEFAULT_MAX_BATCH",
    "ParserIssue",
    "ProfileShapes",
    "build_engine",
    "default_workspace_mb",
    "format_parser_errors",
    "read_timing_cache",
    "resolve_profile",
    "timing_cache_filename",
    "validate_build_options",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
JETSON_WORKSPACE_MB = 512  # unified memory shared with the OS: a generous workspace gets builds OOM-killed
DEFAULT_WORKSPACE_MB = 2048


def default_workspace_mb(on_jetson: bool) -> int:
    return JETSON_WORKSPACE_MB if on_jetson else DEFAULT_WORKSPACE_MB


def timing_cache_filename(gpu_name: str, cc: str, trt_version: str) -> str:
    """One timing cache per GPU model, compute capability and TensorRT version (tactic timings are all three)."""
    return f"timing-{slug(gpu_name or 'gpu')}-sm{cc.replace('.', '')}-trt{trt_short(trt_version)}.cache"


def read_timing_cache(path: Path) -> bytes:
    """A saved timing cache's bytes; ``b""`` (start a new cache) when there is none or it cannot be read.

    The timing cache only speeds builds up, so an unreadable file is a warning, never a failed build.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        log.warning("cannot read timing cache %s (%s); starting a new one", path, exc.strerror or exc)
        return b""


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


# --------------------------------------------------------------------------------------------- parser errors


@dataclass(frozen=True)
class ParserIssue:
    node: int  # ONNX node index, -1 when the error is not about a node
    op_type: str | None
    node_name: str | None
    desc: str


def format_parser_errors(onnx_path: str | os.PathLike[str], trt_version: str, issues: list[ParserIssue]) -> str:
    """One line naming the file, every failing node (index, operator, name) and what to do."""
    parts = []
    for issue in issues[:5]:
        if issue.node >= 0:
            what = " ".join(p for p in (issue.op_type, repr(issue.node_name) if issue.node_name else None) if p)
            parts.append(f"node {issue.node}{' (' + what + ')' if what else ''}: {issue.desc}")
        else:
            parts.append(issue.desc)
    more = f" (+{len(issues) - 5} more)" if len(issues) > 5 else ""
    return (f"{onnx_path}: TensorRT {trt_version}'s ONNX parser failed: {'; '.join(parts) or 'no error reported'}"
            f"{more} — check the graph against this TensorRT with `kd2trt export <checkpoint> --trt-version "
            f"{trt_version}` (operator preflight) or re-export with a lower --opset")


def _onnx_nodes(onnx_path: Path) -> list[tuple[str, str]]:
    """(op_type, name) per node, to name nodes for TensorRT 8.x parsers that report only an index."""
    try:
        import onnx

        graph = onnx.load(str(onnx_path), load_external_data=False).graph
        return [(node.op_type, node.name) for node in graph.node]
    except Exception:  # naming nodes is a courtesy
        return []


def _parser_issues(parser: Any, onnx_path: Path) -> list[ParserIssue]:
    nodes = _onnx_nodes(onnx_path)
    issues = []
    for i in range(int(parser.num_errors)):
        error = parser.get_error(i)
        node = int(error.node()) if hasattr(error, "node") else -1
        op_type = name = None
        for attr, slot in (("node_operator", "op"), ("node_name", "name")):  # TensorRT 10.x
            value = getattr(error, attr, None)
            value = value() if callable(value) else value
            if value and slot == "op":
                op_type = str(value)
            elif value:
                name = str(value)
        if 0 <= node < len(nodes):
            op_type = op_type or nodes[node][0]
            name = name or nodes[node][1] or None
        issues.append(ParserIssue(node, op_type, name, str(error.desc())))
    return issues


# --------------------------------------------------------------------------------------------- build


def _make_logger(trt: Any, verbose: bool = False) -> Any:
    """A TensorRT logger that forwards to :mod:`logging` and keeps error messages for kd2trt's own errors."""

    class _Logger(trt.ILogger):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.threshold = 4 if verbose else 2  # VERBOSE=4, INFO=3, WARNING=2, ERROR=1, INTERNAL_ERROR=0

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level <= 1:
                self.errors.append(msg)
            if level <= self.threshold:
                log.log({0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}.get(
                    level, logging.DEBUG), "TensorRT: %s", msg)

    return _Logger()


def _set_flag(trt: Any, config: Any, name: str) -> None:
    config.set_flag(getattr(trt.BuilderFlag, name))


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    plan: PrecisionPlan,
    *,
    calibrator: Any = None,
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    input_name: str | None = None,
    input_chw: Any = None,
    workspace_mb: int | None = None,
    timing_cache_dir: str | os.PathLike[str] | None = None,
    dla_core: int | None = None,
    gpu_fallback: bool = True,
    version_compatible: bool = False,
    hardware_compatible: bool = False,
    layer_info_path: str | os.PathLike[str] | None = None,
    write_layer_info: bool = True,
    verbose: bool = False,
) -> EngineManifest:
    """Build ``engine_path`` from ``onnx_path`` per ``plan``; write the engine, layer info and manifest.

    ``onnx_path`` must be the graph the plan names (``plan.onnx_kind``). ``calibrator``: from
    :func:`~kd2trt.trt.calibrator.make_calibrator`, required when ``plan.use_calibrator``.
    ``workspace_mb``: default 512 on Jetson, 2048 elsewhere. ``timing_cache_dir``: a directory holding one
    timing cache per GPU + compute capability + TensorRT (:func:`timing_cache_filename`), loaded before and
    saved after the build. ``layer_info_path``: default ``<engine>.layers.json``.

    Files are written atomically in this order: engine, layer info, timing cache, manifest -- so a manifest
    exists only for a complete engine, and it carries that engine's sha256.
    """
    from kd2trt import __version__ as kd2trt_version
    from kd2trt.trt import cuda_memory
    from kd2trt.trt.capabilities import probe_environment
    from kd2trt.trt.jetson import detect_jetson

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise Kd2trtError(f"ONNX graph {onnx_path} does not exist; run `kd2trt export <checkpoint>` first")
    if plan.use_calibrator and calibrator is None:
        raise Kd2trtError("this INT8 plan needs a calibrator (from the calibration cache or data); none was given")
    caps, reason = probe_environment()
    if caps is None:
        raise Kd2trtError(f"cannot build TensorRT engines here: {reason}. Run the build on the target: inside "
                          "docker/Dockerfile.x86 on a GPU host, or on the Jetson (see docker/README.md)")
    import tensorrt as trt

    device = cuda_memory.device_info(0)
    jetson = detect_jetson()
    workspace = default_workspace_mb(jetson is not None) if workspace_mb is None else int(workspace_mb)

    logger = _make_logger(trt, verbose)
    builder = trt.Builder(logger)
    flags = 0
    if caps.explicit_batch_flag_needed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed and caps.strongly_typed_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if hasattr(parser, "parse_from_file"):  # resolves external-data files relative to the model
        parsed = parser.parse_from_file(str(onnx_path))
    else:
        parsed = parser.parse(onnx_path.read_bytes(), str(onnx_path))  # the path locates external data
    if not parsed:
        issues = _parser_issues(parser, onnx_path)
        if not issues and logger.errors:
            issues = [ParserIssue(-1, None, None, logger.errors[-1])]
        raise Kd2trtError(format_parser_errors(onnx_path, str(caps.version), issues))

    if network.num_inputs != 1:
        raise Kd2trtError(f"{onnx_path} has {network.num_inputs} inputs; kd2trt builds models with one image input")
    tensor = network.get_input(0)
    if input_name is not None and tensor.name != input_name:
        raise Kd2trtError(f"{onnx_path}: the input is named {tensor.name!r}, not {input_name!r}")
    profile_shapes = resolve_profile(tuple(tensor.shape), min_batch, opt_batch, max_batch, input_chw,
                                     source=f"{onnx_path} input {tensor.name!r}")
    validate_build_options(plan, caps, profile_shapes, dla_core=dla_core, version_compatible=version_compatible,
                           hardware_compatible=hardware_compatible, on_jetson=jetson is not None,
                           compute_capability=device.compute_capability, workspace_mb=workspace,
                           calibrator_batch=getattr(calibrator, "batch_size", None))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, profile_shapes.shape(profile_shapes.min_batch),
                      profile_shapes.shape(profile_shapes.opt_batch), profile_shapes.shape(profile_shapes.max_batch))
    config.add_optimization_profile(profile)
    if plan.fp16_flag:
        _set_flag(trt, config, "FP16")
    if plan.int8_flag:
        _set_flag(trt, config, "INT8")
    if plan.use_calibrator:
        config.int8_calibrator = calibrator
        if hasattr(config, "set_calibration_profile"):
            # Calibration runs at one shape: the calibrator's batch, fixed min = opt = max.
            batch = int(getattr(calibrator, "batch_size", profile_shapes.opt_batch))
            calib_profile = builder.create_optimization_profile()
            shape = profile_shapes.shape(batch)
            calib_profile.set_shape(tensor.name, shape, shape, shape)
            config.set_calibration_profile(calib_profile)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        if gpu_fallback:
            _set_flag(trt, config, "GPU_FALLBACK")
    if version_compatible:
        _set_flag(trt, config, "VERSION_COMPATIBLE")
    if hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    layer_info_file = None
    if write_layer_info:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        layer_info_file = Path(layer_info_path) if layer_info_path else sidecar(engine_path, ".layers.json")

    timing_file = None
    timing_loaded = False
    if timing_cache_dir is not None:
        timing_file = Path(timing_cache_dir) / timing_cache_filename(device.name, device.compute_capability,
                                                                     caps.version_string or str(caps.version))
        blob = read_timing_cache(timing_file)
        timing_loaded = _attach_timing_cache(config, blob)
        if blob and not timing_loaded:
            log.warning("timing cache %s was not accepted by TensorRT %s; starting a new one", timing_file,
                        caps.version)

    log.info("building %s: %s", engine_path, plan.reason)
    started = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if hasattr(calibrator, "free"):
            calibrator.free()  # its device buffer; calibrators are single-use
    build_seconds = time.perf_counter() - started
    raise_calibration_error(getattr(calibrator, "error", None))
    if serialized is None:
        last = logger.errors[-1] if logger.errors else "no error was logged"
        hint = (f"the workspace ({workspace} MiB) may be too small (raise it), or the device ran out of memory"
                + (" — on a Jetson the build shares RAM with the system: close other programs, keep the "
                   "workspace modest, add swap" if jetson is not None else ""))
        raise Kd2trtError(f"TensorRT {caps.version} could not build {engine_path.name} from {onnx_path}: {last}. "
                          f"{hint}")

    with atomic_path(engine_path) as tmp, open(tmp, "wb") as handle:
        handle.write(memoryview(serialized))
    if layer_info_file is not None:
        atomic_write_text(layer_info_file, _layer_information(trt, logger, serialized, version_compatible))
    if timing_file is not None:
        try:
            atomic_write_bytes(timing_file, bytes(memoryview(config.get_timing_cache().serialize())))
        except OSError as exc:  # the engine is built; the cache only speeds up the next build
            log.warning("cannot save timing cache %s (%s); the next build starts without it", timing_file,
                        exc.strerror or exc)

    calib_file = getattr(calibrator, "cache_path", None) if plan.use_calibrator else None
    calib_file = Path(calib_file) if calib_file is not None and Path(calib_file).is_file() else None
    manifest = EngineManifest(
        kd2trt_version=kd2trt_version,
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        trt_version=caps.version_string or str(caps.version),
        cuda_version=cuda_memory.runtime_version(),
        gpu_name=device.name,
        compute_capability=device.compute_capability,
        jetson=JetsonRecord(l4t=jetson.l4t, jetpack=jetson.jetpack, model=jetson.model,
                            power_mode=jetson.power_mode) if jetson is not None else None,
        precision=plan.precision,
        plan=PlanRecord(**plan.summary()),
        source_onnx=str(onnx_path),
        source_onnx_sha256=sha256_file(onnx_path),
        calib_cache=str(calib_file) if calib_file else None,
        calib_cache_sha256=sha256_file(calib_file) if calib_file else None,
        build=BuildOptions(
            input_name=tensor.name, input_chw=list(profile_shapes.chw), min_batch=profile_shapes.min_batch,
            opt_batch=profile_shapes.opt_batch, max_batch=profile_shapes.max_batch, workspace_mb=workspace,
            dla_core=dla_core, gpu_fallback=bool(dla_core is not None and gpu_fallback),
            timing_cache=str(timing_file) if timing_file else None, timing_cache_loaded=timing_loaded,
            version_compatible=version_compatible, hardware_compatible=hardware_compatible),
        build_seconds=round(build_seconds, 3),
        engine_file=engine_path.name,
        engine_sha256=sha256_file(engine_path),
        engine_bytes=engine_path.stat().st_size,
        layer_info=layer_info_file.name if layer_info_file is not None else None,
    )
    write_manifest(manifest, engine_path)
    log.info("engine %s built in %.1f s", engine_path, build_seconds)
    return manifest


def _attach_timing_cache(config: Any, blob: bytes) -> bool:
    """Attach a timing cache made from ``blob`` (b'' = new); False when TensorRT refused the blob."""
    try:
        cache = config.create_timing_cache(blob)
        if cache is not None and config.set_timing_cache(cache, False):
            return bool(blob)
    except Exception as exc:  # a stale or foreign cache must not stop the build
        log.warning("timing cache rejected: %s", exc)
    config.set_timing_cache(config.create_timing_cache(b""), False)
    return False


def _layer_information(trt: Any, logger: Any, serialized: Any, version_compatible: bool = False) -> str:
    """The engine inspector's JSON (per-layer precision, tactics, formats); an error object if unavailable."""
    try:
        runtime = trt.Runtime(logger)
        if version_compatible and hasattr(runtime, "engine_host_code_allowed"):
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(serialized)
        inspector = engine.create_engine_inspector()
        return inspector.get_engine_information(trt.LayerInformationFormat.JSON) + "\n"
    except Exception as exc:  # layer info is a report, not the product
        log.warning("engine inspector unavailable: %s", exc)
        return '{"error": "engine inspector unavailable"}\n'
