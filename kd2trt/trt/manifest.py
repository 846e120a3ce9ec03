"""The JSON manifest written beside every engine, its file naming, and the "can this machine run it?" check.

A TensorRT engine (plan file) is only valid for the TensorRT version and the GPU it was built with. TensorRT's
own error for a mismatch is a deserialization failure ("Serialization assertion ... Version tag does not
match", or a crash on some versions), so kd2trt stamps both into ``<engine>.json`` and refuses a mismatch
*before* handing the bytes to TensorRT, naming both sides and the rebuild command.

The rules (NVIDIA TensorRT developer guide, "Version Compatibility" and "Hardware Compatibility"):

* By default an engine runs only on the TensorRT version that built it -- checked on major.minor.patch.
* Built with ``BuilderFlag.VERSION_COMPATIBLE`` (TensorRT >= 8.6): it also runs on *later* TensorRT versions
  (8.6 -> 9/10, 10 -> 11, 11.0 -> 11.x), never on older ones; the runtime must allow the engine's embedded
  lean runtime (``Runtime.engine_host_code_allowed``), which :class:`~kd2trt.trt.runner.TrtRunner` sets.
* By default an engine runs only on GPUs of the same compute capability (another GPU model of the same
  compute capability works, with a TensorRT warning about performance; kd2trt logs a warning too). Built with
  ``HardwareCompatibilityLevel.AMPERE_PLUS`` (TensorRT >= 8.6, built on an Ampere or newer GPU) it runs on
  any GPU of compute capability >= 8.0. Not supported on JetPack (NVIDIA docs), so never on a Jetson.

The models are pydantic v2 with ``extra="forbid"``, and use ``typing.Optional``/``List`` on purpose: pydantic
evaluates annotations at runtime and JetPack 5 runs Python 3.8, where ``X | None`` and ``list[int]`` fail.
"""


from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kd2trt.artifacts import atomic_write_json, sha256_file
from kd2trt.errors import Kd2trtError
from kd2trt.onnx.calib_cache import CalibCacheError, TrtVersion

__all__ = [
    "MANIFEST_KIND",
    "BuildOptions",
    "EngineManifest",
    "JetsonRecord",
    "PlanRecord",
    "check_runtime_compatible",
    "engine_filename",
    "engine_path",
    "manifest_path",
    "read_manifest",
    "rebuild_command",
    "verify_engine_file",
    "write_manifest",
]

log = logging.getLogger(__name__)

MANIFEST_KIND = "kd2trt TensorRT engine"
AMPERE_MAJOR = 8
VERSION_COMPATIBLE_SINCE = TrtVersion(8, 6, 0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JetsonRecord(_Strict):
    """The Jetson an engine was built on (``None`` in the manifest on x86)."""

    l4t: str
    jetpack: Optional[str] = None
    model: Optional[str] = None
    power_mode: Optional[str] = None


class PlanRecord(_Strict):
    """:class:`kd2trt.trt.plan.PrecisionPlan`, as recorded."""

    precision: Literal["fp32", "fp16", "int8"]
    onnx_kind: Literal["onnx", "fp16_onnx", "qdq_onnx"]
    strongly_typed: bool
    fp16_flag: bool
    int8_flag: bool
    use_calibrator: bool
    calibration_source: Optional[Literal["cache", "data"]] = None
    quantization: Literal["none", "implicit", "explicit"]
    reason: str


class BuildOptions(_Strict):
    """The builder settings that shaped the engine."""

    input_name: str
    input_chw: List[int] = Field(min_length=3, max_length=3)
    min_batch: int = Field(ge=1)
    opt_batch: int = Field(ge=1)
    max_batch: int = Field(ge=1)
    workspace_mb: int = Field(ge=1)
    dla_core: Optional[int] = None
    gpu_fallback: bool = False
    timing_cache: Optional[str] = None
    timing_cache_loaded: bool = False
    version_compatible: bool = False
    hardware_compatible: bool = False


class EngineManifest(_Strict):
    """Everything needed to decide whether an engine may run here, and to reproduce it."""

    kind: Literal["kd2trt TensorRT engine"] = MANIFEST_KIND
    schema_version: int = 1
    kd2trt_version: str
    created_utc: str
    trt_version: str  # tensorrt.__version__ as found, e.g. "10.3.0.30"
    cuda_version: Optional[str] = None
    gpu_name: str
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")  # "8.7"
    jetson: Optional[JetsonRecord] = None
    precision: Literal["fp32", "fp16", "int8"]
    plan: PlanRecord
    source_onnx: str
    source_onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    calib_cache: Optional[str] = None
    calib_cache_sha256: Optional[str] = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    build: BuildOptions
    build_seconds: float = Field(ge=0)
    engine_file: str  # file name, beside the manifest
    engine_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    engine_bytes: int = Field(ge=0)
    layer_info: Optional[str] = None  # file name of the engine inspector's JSON, beside the manifest

    @field_validator("trt_version")
    @classmethod
    def _trt_version_is_a_version(cls, value: str) -> str:
        """Refuse e.g. ``"latest"`` when the manifest is read, not later in the compatibility check."""
        try:
            TrtVersion.parse(value)
        except CalibCacheError as exc:  # pydantic reports ValueError, and lets other exceptions escape
            raise ValueError(str(exc)) from None
        return value


# --------------------------------------------------------------------------------------------- naming

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(text: str) -> str:
    slug = _UNSAFE.sub("-", text.strip()).strip("-.")
    if not slug:
        raise Kd2trtError(f"{text!r} cannot be used in a file name; use letters, digits, '.', '_' or '-'")
    return slug


def _trt_short(trt_version: str | TrtVersion) -> str:
    """``"10.3.0.30"`` -> ``"10.3.0"``: the build number does not change compatibility."""
    if isinstance(trt_version, TrtVersion):
        return str(trt_version)
    try:
        return str(TrtVersion.parse(str(trt_version)))
    except CalibCacheError:
        raise Kd2trtError(f"TensorRT version {trt_version!r} is not understood; expected e.g. 10.3.0") from None


def engine_filename(model: str, precision: str, cc: str, trt_version: str | TrtVersion) -> str:
    """``<model>-<precision>-sm<cc without dot>-trt<version>.engine``, e.g. ``student-int8-sm87-trt10.3.0.engine``."""
    if not re.fullmatch(r"\d+\.\d+", cc):
        raise Kd2trtError(f"compute capability {cc!r} is not of the form MAJOR.MINOR (e.g. 8.7)")
    return f"{_slug(model)}-{_slug(precision)}-sm{cc.replace('.', '')}-trt{_trt_short(trt_version)}.engine"


def engine_path(run: str, model: str, precision: str, cc: str, trt_version: str | TrtVersion,
                root: str | os.PathLike[str] = "engines") -> Path:
    """``<root>/<run>/<engine_filename(...)>``; ``root`` defaults to the repository's ``engines/``."""
    return Path(root) / _slug(run) / engine_filename(model, precision, cc, trt_version)


def manifest_path(engine: str | os.PathLike[str]) -> Path:
    """``<engine>.json``: ``student-int8-sm87-trt10.3.0.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


# --------------------------------------------------------------------------------------------- read/write


def write_manifest(manifest: EngineManifest, engine: str | os.PathLike[str]) -> Path:
    """Write ``<engine>.json`` atomically (never half-written), after the engine itself."""
    path = manifest_path(engine)
    atomic_write_json(path, manifest.model_dump(mode="json"))
    return path


def read_manifest(engine: str | os.PathLike[str]) -> EngineManifest:
    """The manifest beside ``engine``; a missing, unreadable or invalid one is a one-line error."""
    path = manifest_path(engine)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Kd2trtError(f"{engine}: no manifest {path.name} beside it, so kd2trt cannot tell which TensorRT "
                          "and GPU it was built for; rebuild it with `kd2trt export` (engines are not portable)"
                          ) from None
    except OSError as exc:
        raise Kd2trtError(f"cannot read engine manifest {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise Kd2trtError(f"{path}: not UTF-8 text (byte {exc.start}), so not a kd2trt engine manifest; rebuild "
                          "the engine with `kd2trt export`") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Kd2trtError(f"{path}: not valid JSON (line {exc.lineno}); rebuild the engine with `kd2trt export`"
                          ) from None
    try:
        return EngineManifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise Kd2trtError(f"{path}: invalid engine manifest ({where}: {first['msg']}); rebuild the engine with "
                          "`kd2trt export`") from None


def verify_engine_file(manifest: EngineManifest, engine: str | os.PathLike[str], data: Optional[bytes] = None
                       ) -> None:
    """Refuse an engine whose bytes are not the ones the manifest describes (swapped or corrupted file).

    ``data``: the engine's bytes when the caller has already read them (the runner hashes the very bytes it
    deserializes); otherwise the file is hashed in chunks.
    """
    engine = Path(engine)
    if data is not None:
        digest = hashlib.sha256(data).hexdigest()
    else:
        if not engine.is_file():
            raise Kd2trtError(f"engine {engine} does not exist; build it with `kd2trt export`")
        try:
            digest = sha256_file(engine)
        except OSError as exc:
            raise Kd2trtError(f"cannot read engine {engine}: {exc.strerror or exc}; fix its permissions or "
                              "rebuild it with `kd2trt export`") from None
    if digest != manifest.engine_sha256:
        raise Kd2trtError(f"{engine}: sha256 {digest[:12]}… does not match its manifest "
                          f"({manifest.engine_sha256[:12]}…); the file was replaced or damaged — rebuild it with "
                          f"`{rebuild_command(manifest)}`")


# --------------------------------------------------------------------------------------------- compatibility


def rebuild_command(manifest: EngineManifest) -> str:
    flag = {"fp32": "", "fp16": " --fp16", "int8": " --int8"}[manifest.precision]
    return f"kd2trt export <checkpoint>{flag}"


def _cc_tuple(cc: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)", str(cc).strip())
    if match is None:
        raise Kd2trtError(f"compute capability {cc!r} is not of the form MAJOR.MINOR (e.g. 8.7)")
    return int(match.group(1)), int(match.group(2))


def check_runtime_compatible(manifest: EngineManifest, running_trt_version: str, running_cc: str,
                             source: str | os.PathLike[str] = "<engine>", *, running_gpu_name: str | None = None
                             ) -> None:
    """Raise :class:`Kd2trtError` unless an engine described by ``manifest`` can run here.

    ``running_trt_version`` is ``tensorrt.__version__``; ``running_cc`` the device's ``"MAJOR.MINOR"``. Called
    before the engine bytes are deserialized, so a mismatch is a clear message instead of TensorRT's
    serialization error or a crash.
    """
    built = TrtVersion.parse(manifest.trt_version)
    try:
        running = TrtVersion.parse(str(running_trt_version))
    except CalibCacheError:
        raise Kd2trtError(f"running TensorRT version {running_trt_version!r} is not understood") from None
    built_gpu = f"{manifest.gpu_name} (sm{manifest.compute_capability.replace('.', '')})"
    here_gpu = f"{running_gpu_name + ' ' if running_gpu_name else ''}(sm{str(running_cc).replace('.', '')})"
    fix = f"rebuild it on this machine with `{rebuild_command(manifest)}` (engines are not portable)"
    where = f" on JetPack {manifest.jetson.jetpack or '?'} (L4T {manifest.jetson.l4t})" if manifest.jetson else ""

    if running != built:
        vc = manifest.build.version_compatible
        if not vc:
            raise Kd2trtError(f"{source} was built with TensorRT {built}{where} for {built_gpu}; this machine runs "
                              f"TensorRT {running}, and the engine was not built version-compatible — {fix}")
        if built < VERSION_COMPATIBLE_SINCE:
            raise Kd2trtError(f"{source}: manifest says version-compatible, but TensorRT {built} predates version "
                              f"compatibility (8.6); this machine runs TensorRT {running} — {fix}")
        if running < built:
            raise Kd2trtError(f"{source} was built version-compatible with TensorRT {built}{where}; that only runs "
                              f"on the same or later TensorRT, this machine runs the older {running} — {fix}")

    built_cc, here_cc = _cc_tuple(manifest.compute_capability), _cc_tuple(running_cc)
    if built_cc != here_cc:
        hc = manifest.build.hardware_compatible
        if not hc:
            raise Kd2trtError(f"{source} was built for {built_gpu}{where}; this GPU is {here_gpu}, and the engine "
                              f"was not built hardware-compatible — {fix}")
        if manifest.jetson is not None:
            raise Kd2trtError(f"{source} was built on a Jetson, where hardware compatibility is not supported; "
                              f"this GPU is {here_gpu} — {fix}")
        if built_cc[0] < AMPERE_MAJOR or here_cc[0] < AMPERE_MAJOR:
            raise Kd2trtError(f"{source} was built hardware-compatible (Ampere and newer) for {built_gpu}; this GPU "
                              f"{here_gpu} is older than Ampere (sm80) — {fix}")
    elif running_gpu_name and running_gpu_name.strip() != manifest.gpu_name.strip():
        # Same compute capability, another GPU model: TensorRT allows it but warns that tactics were timed on
        # the other model (performance may differ). Not an error; benchmark on the GPU that built the engine.
        log.warning("%s was built on %s and runs on %s (same sm%s): latency may differ from a native build",
                    source, manifest.gpu_name, running_gpu_name, manifest.compute_capability.replace(".", ""))
