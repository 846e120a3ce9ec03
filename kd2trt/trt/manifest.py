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

The manifest's model is :class:`kd2trt.manifests.EngineManifest`; its file sits beside the engine
(:func:`kd2trt.layout.sidecar`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from kd2trt.artifacts import sha256_file
from kd2trt.errors import Kd2trtError, TrtVersionError
from kd2trt.layout import sidecar
from kd2trt.manifests import EngineManifest
from kd2trt.manifests import read_manifest as read_record
from kd2trt.manifests import write_manifest as write_record
from kd2trt.targets import TrtVersion

__all__ = ["check_runtime_compatible", "read_manifest", "rebuild_command", "verify_engine_file", "write_manifest"]

log = logging.getLogger(__name__)

AMPERE_MAJOR = 8
VERSION_COMPATIBLE_SINCE = TrtVersion(8, 6, 0)


def write_manifest(manifest: EngineManifest, engine: str | os.PathLike[str]) -> Path:
    """Write ``<engine>.json`` atomically (never half-written), after the engine itself."""
    return write_record(sidecar(engine), manifest)


def read_manifest(engine: str | os.PathLike[str]) -> EngineManifest:
    """The manifest beside ``engine``; a missing, unreadable or invalid one is a one-line error."""
    path = sidecar(engine)
    return read_record(path, EngineManifest, "engine manifest", "rebuild the engine with `kd2trt export`",
                       missing=f"{engine}: no manifest {path.name} beside it, so kd2trt cannot tell which TensorRT "
                       "and GPU it was built for; rebuild it with `kd2trt export` (engines are not portable)")


def verify_engine_file(manifest: EngineManifest, engine: str | os.PathLike[str], data: bytes | None = None
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
    except TrtVersionError:
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
