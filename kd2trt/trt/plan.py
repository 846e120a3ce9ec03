"""Which ONNX file to parse and which builder switches to set for a precision: pure logic, no TensorRT.

``kd2trt export`` writes up to four artifacts beside each other (see :func:`discover_artifacts`):

==============  ==================================  ===========================================
kind            file                                used by
==============  ==================================  ===========================================
``onnx``        ``<model>.onnx``                    FP32 everywhere; FP16/INT8 with flags (<= 10.x)
``fp16_onnx``   ``<model>.fp16.onnx``               FP16 on TensorRT 11 (FP16 inside, FP32 I/O)
``qdq_onnx``    ``<model>.int8.onnx``               explicit INT8 (Q/DQ nodes), any version
``calib_cache`` ``<model>.calib-trt<X.Y.Z>.cache``  implicit INT8 on <= 10.x, no data needed
==============  ==================================  ===========================================

:func:`plan_precision` turns (capabilities, requested precision, INT8 route, what exists) into a
:class:`PrecisionPlan`, or a :class:`~kd2trt.errors.Kd2trtError` that names the missing file and the command
that makes it. The rules follow DESIGN §3:

* TensorRT <= 10.x (weak typing): FP16 = ``BuilderFlag.FP16`` on the FP32 graph. INT8 ``auto`` = implicit
  quantization, ``INT8`` + ``FP16`` flags (layers TensorRT cannot run in INT8 fall back to FP16 rather than
  FP32) with the calibration cache -- or live calibration data when there is no cache. INT8 ``qdq`` =
  explicit quantization: the Q/DQ graph with the ``INT8`` flag only, so unquantized layers stay FP32
  exactly as in the ONNX Runtime preview.
* TensorRT 11.x (strong typing only, no flags, no calibrators): FP16 = the FP16-cast graph, INT8 = the Q/DQ
  graph; a calibration cache cannot be used at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kd2trt.errors import Kd2trtError
from kd2trt.layout import ModelFiles
from kd2trt.targets import TrtVersion
from kd2trt.trt.capabilities import TrtCapabilities

__all__ = [
    "ARTIFACT_KINDS",
    "EXPORT_FP16_COMMAND",
    "EXPORT_INT8_COMMAND",
    "INT8_PATHS",
    "PRECISIONS",
    "Artifacts",
    "PrecisionPlan",
    "discover_artifacts",
    "plan_precision",
]

PRECISIONS = ("fp32", "fp16", "int8")
INT8_PATHS = ("auto", "cache", "qdq")
#: qat_onnx: the QAT-fine-tuned FP32 graph, the source of implicit INT8 when export wrote one
ARTIFACT_KINDS = frozenset({"onnx", "fp16_onnx", "qdq_onnx", "calib_cache", "qat_onnx"})

# The commands the error messages send the user to. Kept here so the CLI owner can change them in one place.
EXPORT_COMMAND = "kd2trt export <checkpoint>"
EXPORT_FP16_COMMAND = "kd2trt export <checkpoint> --fp16"
EXPORT_INT8_COMMAND = "kd2trt export <checkpoint> --int8"


@dataclass(frozen=True)
class PrecisionPlan:
    """How to build one engine: the graph to parse and every precision switch, with the reason in words."""

    precision: str  # "fp32" | "fp16" | "int8"
    onnx_kind: str  # "onnx" | "fp16_onnx" | "qdq_onnx"
    strongly_typed: bool  # create the network STRONGLY_TYPED (11.x: always; the flag is ignored there)
    fp16_flag: bool  # BuilderFlag.FP16
    int8_flag: bool  # BuilderFlag.INT8
    use_calibrator: bool  # attach an INT8 calibrator (implicit quantization)
    calibration_source: str | None  # "cache" (no data needed) | "data" (calibrate now, write the cache) | None
    quantization: str  # "none" | "implicit" | "explicit"
    reason: str

    def summary(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Artifacts:
    """What ``kd2trt export`` left beside an ONNX file, for one target TensorRT version."""

    paths: dict[str, Path] = field(default_factory=dict)
    other_caches: list[Path] = field(default_factory=list)  # caches written for other TensorRT versions

    @property
    def kinds(self) -> set[str]:
        return set(self.paths)


def discover_artifacts(onnx_path: str | Path, trt_version: TrtVersion | None = None) -> Artifacts:
    """Find the FP32 ONNX's siblings written by ``kd2trt export`` (named by :class:`kd2trt.layout.ModelFiles`).

    ``onnx_path`` is the FP32 graph ``<dir>/<model>.onnx``. A calibration cache counts only if it was written
    for ``trt_version`` (TensorRT silently ignores a cache whose header names another version); caches for
    other versions are listed in :attr:`Artifacts.other_caches` so that errors can say what was found.
    """
    onnx_path = Path(onnx_path)
    name = onnx_path.name
    files = ModelFiles(onnx_path.parent, name[: -len(".onnx")] if name.endswith(".onnx") else name)
    found = Artifacts()
    for kind, precision in (("onnx", "fp32"), ("fp16_onnx", "fp16"), ("qdq_onnx", "int8")):
        if files.onnx(precision).is_file():
            found.paths[kind] = files.onnx(precision)
    if files.qat_onnx.is_file():  # QAT ran: the calibration caches were made for its fine-tuned FP32 graph
        found.paths["qat_onnx"] = files.qat_onnx
    for candidate, version in files.calib_caches():
        if trt_version is not None and version == str(trt_version):
            found.paths["calib_cache"] = candidate
        else:
            found.other_caches.append(candidate)
    return found


def implicit_int8_source(plan: PrecisionPlan, paths: dict[str, Path]) -> Path:
    """The graph an engine of `plan` is built from: for implicit INT8, the QAT-fine-tuned FP32 graph when export
    wrote one (the calibration cache holds the ranges its weights were trained for), else the plan's graph."""
    if plan.quantization == "implicit" and "qat_onnx" in paths:
        return paths["qat_onnx"]
    return paths[plan.onnx_kind]


def _check_choice(name: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise Kd2trtError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")


def _need_onnx(available: set[str], kind: str, command: str, why: str) -> None:
    if kind not in available:
        names = {"onnx": "<model>.onnx", "fp16_onnx": "<model>.fp16.onnx", "qdq_onnx": "<model>.int8.onnx"}
        raise Kd2trtError(f"{names[kind]} is missing: {why}; run `{command}` to write it")


def _other_caches_hint(other_caches: Iterable[str | Path]) -> str:
    others = [Path(p).name for p in other_caches]
    return f" (found only {', '.join(others)}, written for other TensorRT versions)" if others else ""


def plan_precision(
    caps: TrtCapabilities,
    precision: str,
    int8_path: str = "auto",
    available: Iterable[str] = ("onnx",),
    has_calibration_data: bool = False,
    *,
    other_caches: Iterable[str | Path] = (),
) -> PrecisionPlan:
    """Choose the graph and builder switches for ``precision`` on the TensorRT described by ``caps``.

    ``int8_path``: ``auto`` (implicit with the cache, else with live data, else the Q/DQ graph), ``cache``
    (implicit INT8 from the calibration cache only: the Jetson case) or ``qdq`` (explicit Q/DQ graph).
    ``available``: the artifact kinds present (:attr:`Artifacts.kinds`). ``has_calibration_data``: whether
    calibration images can be fed to a live calibrator.
    """
    _check_choice("precision", precision, PRECISIONS)
    _check_choice("INT8 path", int8_path, INT8_PATHS)
    available = set(available)
    unknown = available - ARTIFACT_KINDS
    if unknown:
        raise Kd2trtError(f"unknown artifact kind(s) {sorted(unknown)}; known: {sorted(ARTIFACT_KINDS)}")
    version = caps.version
    if caps.weak_typing:
        return _plan_weak(caps, precision, int8_path, available, has_calibration_data, list(other_caches))
    return _plan_strong(version, precision, int8_path, available)


def _plan_weak(caps: TrtCapabilities, precision: str, int8_path: str, available: set[str],
               has_data: bool, other_caches: list[str | Path]) -> PrecisionPlan:
    version = caps.version
    if precision == "fp32":
        _need_onnx(available, "onnx", EXPORT_COMMAND, "it is the graph every engine is built from")
        return PrecisionPlan("fp32", "onnx", False, False, False, False, None, "none",
                             f"TensorRT {version}: FP32 graph, no precision flags")
    if precision == "fp16":
        _need_onnx(available, "onnx", EXPORT_COMMAND, "FP16 on TensorRT <= 10.x is the FP32 graph + FP16 flag")
        return PrecisionPlan("fp16", "onnx", False, True, False, False, None, "none",
                             f"TensorRT {version} (weak typing): FP32 graph with BuilderFlag.FP16; TensorRT "
                             "picks FP16 kernels layer by layer")
    # INT8
    if int8_path == "qdq":
        return _plan_qdq_weak(version, available, "requested --int8-path qdq")
    if not caps.has_calibrator:
        if int8_path == "cache":
            raise Kd2trtError(f"TensorRT {version} has no INT8 calibrator, so it cannot use a calibration "
                              "cache; build from the Q/DQ graph instead (--int8-path qdq)")
        return _plan_qdq_weak(version, available, f"TensorRT {version} has no INT8 calibrator")
    has_cache = "calib_cache" in available
    if int8_path == "cache" or (int8_path == "auto" and has_cache):
        if not has_cache:
            raise Kd2trtError(
                f"no calibration cache for TensorRT {version}{_other_caches_hint(other_caches)}: run "
                f"`{EXPORT_INT8_COMMAND} --trt-version {version}` on the host with the calibration data and copy "
                "<model>.calib-trt*.cache (+ its .json) here, or use --int8-path qdq")
        _need_onnx(available, "onnx", EXPORT_COMMAND, "implicit INT8 calibrates the FP32 graph")
        return PrecisionPlan("int8", "onnx", False, True, True, True, "cache", "implicit",
                             f"TensorRT {version}: implicit INT8 from the calibration cache (no data needed), "
                             "INT8 + FP16 flags so layers without INT8 kernels fall back to FP16")
    # auto without a cache
    if has_data:
        _need_onnx(available, "onnx", EXPORT_COMMAND, "implicit INT8 calibrates the FP32 graph")
        return PrecisionPlan("int8", "onnx", False, True, True, True, "data", "implicit",
                             f"TensorRT {version}: implicit INT8, calibrating now on the data given (the cache "
                             "is written for the next build), INT8 + FP16 flags")
    if "qdq_onnx" in available:
        return _plan_qdq_weak(version, available,
                              f"no calibration cache for TensorRT {version}{_other_caches_hint(other_caches)} "
                              "and no calibration data")
    raise Kd2trtError(
        f"INT8 on TensorRT {version} needs a calibration cache, calibration data or the Q/DQ graph, and none "
        f"is here{_other_caches_hint(other_caches)}: run `{EXPORT_INT8_COMMAND} --trt-version {version}` on the "
        "host with the data and copy its outputs here")


def _plan_qdq_weak(version: TrtVersion, available: set[str], why: str) -> PrecisionPlan:
    _need_onnx(available, "qdq_onnx", EXPORT_INT8_COMMAND, "explicit INT8 is built from the Q/DQ graph")
    return PrecisionPlan("int8", "qdq_onnx", False, False, True, False, None, "explicit",
                         f"TensorRT {version}: explicit INT8 from the Q/DQ graph ({why}), BuilderFlag.INT8 only "
                         "so unquantized layers stay FP32 as in the ONNX Runtime preview")


def _plan_strong(version: TrtVersion, precision: str, int8_path: str, available: set[str]) -> PrecisionPlan:
    if precision == "fp32":
        _need_onnx(available, "onnx", EXPORT_COMMAND, "it is the graph every engine is built from")
        return PrecisionPlan("fp32", "onnx", True, False, False, False, None, "none",
                             f"TensorRT {version} (strong typing only): FP32 graph as typed")
    if precision == "fp16":
        _need_onnx(available, "fp16_onnx", EXPORT_FP16_COMMAND,
                   f"TensorRT {version} has no FP16 builder flag, FP16 must be in the graph's types")
        return PrecisionPlan("fp16", "fp16_onnx", True, False, False, False, None, "none",
                             f"TensorRT {version} (strong typing only): the FP16-cast graph (FP32 I/O)")
    if int8_path == "cache":
        raise Kd2trtError(f"TensorRT {version} removed INT8 calibrators, so a calibration cache cannot be used; "
                          "build from the Q/DQ graph (--int8-path qdq or auto)")
    _need_onnx(available, "qdq_onnx", EXPORT_INT8_COMMAND,
               f"TensorRT {version} has no INT8 builder flag or calibrator, INT8 must be Q/DQ nodes in the graph")
    return PrecisionPlan("int8", "qdq_onnx", True, False, False, False, None, "explicit",
                         f"TensorRT {version} (strong typing only): explicit INT8 from the Q/DQ graph")
