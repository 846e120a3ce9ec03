"""Build one TensorRT engine from an ONNX graph with the :class:`~kd2trt.trt.wiring.BuildSettings` planned for it.

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

What is set is decided before TensorRT is touched: :func:`kd2trt.trt.wiring.plan_build` returns the
:class:`~kd2trt.trt.wiring.BuildSettings` (flags, attributes, pools, profiles, by name) and checks them;
:func:`build_engine` parses the graph, checks its input against the settings and applies them
(:func:`~kd2trt.trt.wiring.apply_build_settings`). The parser-error message is a pure function here, tested on
CPU; :func:`build_engine` itself needs TensorRT + a GPU.
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
from kd2trt.layout import sidecar
from kd2trt.manifests import EngineManifest, JetsonRecord, PlanRecord
from kd2trt.trt.calibrator import raise_calibration_error
from kd2trt.trt.manifest import write_manifest
from kd2trt.trt.wiring import (
    BuildSettings,
    RuntimeSettings,
    apply_build_settings,
    apply_runtime_settings,
    check_network_input,
    network_creation_flags,
)

__all__ = ["ParserIssue", "build_engine", "format_parser_errors", "read_timing_cache"]

log = logging.getLogger(__name__)

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


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    settings: BuildSettings,
    *,
    calibrator: Any = None,
    verbose: bool = False,
) -> EngineManifest:
    """Build ``engine_path`` from ``onnx_path`` with ``settings``; write the engine, layer info and manifest.

    ``settings``: from :func:`~kd2trt.trt.wiring.plan_build` (every flag, attribute, pool and profile, decided
    and checked before TensorRT is touched); ``onnx_path`` must be the graph its plan names
    (``settings.plan.onnx_kind``). ``calibrator``: from :func:`~kd2trt.trt.calibrator.make_calibrator`, required
    when the settings attach one. The timing cache (``settings.timing_cache_path``) is loaded before and saved
    after the build; the layer information goes to ``<engine>.layers.json``.

    Files are written atomically in this order: engine, layer info, timing cache, manifest -- so a manifest
    exists only for a complete engine, and it carries that engine's sha256.
    """
    from kd2trt import __version__ as kd2trt_version
    from kd2trt.trt import cuda_memory
    from kd2trt.trt.capabilities import probe_environment
    from kd2trt.trt.jetson import detect_jetson

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    plan = settings.plan
    if not onnx_path.is_file():
        raise Kd2trtError(f"ONNX graph {onnx_path} does not exist; run `kd2trt export <checkpoint>` first")
    if settings.int8_calibrator and calibrator is None:
        raise Kd2trtError("this INT8 plan needs a calibrator (from the calibration cache or data); none was given")
    calibration = settings.calibration_profile
    calibrator_batch = getattr(calibrator, "batch_size", None) if settings.int8_calibrator else None
    if calibration is not None and calibrator_batch is not None and int(calibrator_batch) != calibration.max_batch:
        raise Kd2trtError(f"the calibrator feeds batches of {calibrator_batch}, but the build was planned for "
                          f"calibration batches of {calibration.max_batch}; plan with calibration_batch="
                          f"{calibrator_batch}")
    caps, reason = probe_environment()
    if caps is None:
        raise Kd2trtError(f"cannot build TensorRT engines here: {reason}. Run the build on the target: inside "
                          "docker/Dockerfile.x86 on a GPU host, or on the Jetson (see docker/README.md)")
    import tensorrt as trt

    device = cuda_memory.device_info(0)
    jetson = detect_jetson()
    here = caps.version_string or str(caps.version)
    if (settings.trt_version, settings.device.compute_capability, settings.device.on_jetson) != (
            here, device.compute_capability, jetson is not None):
        raise Kd2trtError(f"these build settings were planned for TensorRT {settings.trt_version} on "
                          f"{settings.device.name} (sm{settings.device.compute_capability.replace('.', '')}); this "
                          f"is TensorRT {here} on {device.name} (sm{device.compute_capability.replace('.', '')}) — "
                          "plan the build on this machine")

    logger = _make_logger(trt, verbose)
    builder = trt.Builder(logger)
    network = builder.create_network(network_creation_flags(trt, settings))
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
    try:
        check_network_input(settings, tensor.name, tuple(tensor.shape))
    except Kd2trtError as exc:
        raise Kd2trtError(f"{onnx_path}: {exc}") from None

    config = builder.create_builder_config()
    apply_build_settings(trt, settings, builder, network, config, calibrator)
    layer_info_file = sidecar(engine_path, ".layers.json") if settings.layer_info else None

    timing_file = settings.timing_cache_path
    timing_loaded = False
    if timing_file is not None:
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
        hint = (f"the workspace ({settings.workspace_mb} MiB) may be too small (raise it), or the device ran out of "
                "memory" + (" — on a Jetson the build shares RAM with the system: close other programs, keep the "
                            "workspace modest, add swap" if jetson is not None else ""))
        raise Kd2trtError(f"TensorRT {caps.version} could not build {engine_path.name} from {onnx_path}: {last}. "
                          f"{hint}")

    with atomic_path(engine_path) as tmp, open(tmp, "wb") as handle:
        handle.write(memoryview(serialized))
    if layer_info_file is not None:
        atomic_write_text(layer_info_file, _layer_information(trt, logger, serialized, settings.runtime()))
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
        trt_version=here,
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
        build=settings.record(timing_loaded),
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


def _layer_information(trt: Any, logger: Any, serialized: Any, runtime_settings: RuntimeSettings) -> str:
    """The engine inspector's JSON (per-layer precision, tactics, formats); an error object if unavailable."""
    try:
        runtime = trt.Runtime(logger)
        apply_runtime_settings(runtime, runtime_settings)
        engine = runtime.deserialize_cuda_engine(serialized)
        inspector = engine.create_engine_inspector()
        return inspector.get_engine_information(trt.LayerInformationFormat.JSON) + "\n"
    except Exception as exc:  # layer info is a report, not the product
        log.warning("engine inspector unavailable: %s", exc)
        return '{"error": "engine inspector unavailable"}\n'
