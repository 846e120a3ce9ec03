"""TensorRT INT8 calibration caches (implicit quantization, TensorRT 8.5-10.x): read, write, check, create.

kd2trt computes activation ranges itself (after distillation, on the host that has the calibration data)
and hands them to TensorRT as a calibration cache, so that the engine can be built later -- possibly on
another machine -- without the data. That only works if the file is byte-for-byte what TensorRT's own
calibrator would have written, because TensorRT does not report a cache it cannot use: when the header
differs from the string it expects it silently discards the cache and recalibrates (and fails outright when
no calibration data is attached). So this module reproduces the format exactly and checks the header
itself, to turn that silent failure into a one-line error that names the file and the fix.

The format, as written by TensorRT 8.5-10.x::

    TRT-<version number>-<algorithm>\\n
    <tensor name>: <hex>\\n          (one line per tensor, in TensorRT's order)

* ``<version number>`` is ``major*1000 + minor*100 + patch`` on TensorRT <= 8.x (``TRT-8502``) and
  ``major*10000 + minor*100 + patch`` on 10.x (``TRT-100300``); see :attr:`TrtVersion.header_number`.
* ``<algorithm>`` is the name of the calibrator's algorithm (``EntropyCalibration2``, ...).
* ``<hex>`` is the big-endian IEEE-754 float32 bit pattern of the **scale** ``amax / 127``, in lowercase
  hex without zero padding: a zero scale is a bare ``0`` and ``+inf`` is ``7f800000``.
* Tensor names may themselves contain ``": "`` (TorchScript-style names do), so a line is split on its
  **last** ``": "``. The file ends with a newline.

Line order does not matter to TensorRT, but kd2trt writes the same bytes for the same ONNX and calibration
data: caches list tensors in the graph's topological order (unknown names sorted after them) -- the order
:func:`kd2trt.onnx.calibration.collect_ranges` returns, or ``order=`` of :meth:`CalibrationCache.from_amax`
-- never the order a calibrator happened to produce. A cache read for reuse is checked
with :func:`check_cache_tensors` against the graph it is meant for (a header-only cache, or one lacking
tensors, would leave layers uncalibrated).
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kd2trt.artifacts import atomic_write_bytes
from kd2trt.errors import Kd2trtError, TrtVersionError
from kd2trt.manifests import CacheManifest, read_manifest
from kd2trt.targets import TrtVersion

__all__ = [
    "CALIBRATION_ALGORITHMS",
    "TRT_ALGORITHMS",
    "CalibCacheError",
    "CalibrationCache",
    "activation_tensors",
    "check_cache_tensors",
    "check_compatible",
    "parse_cache",
    "read_cache",
    "read_cache_manifest",
    "resolve_algorithm",
    "write_cache",
]


class CalibCacheError(Kd2trtError):
    """A calibration cache that is unreadable, malformed, or made for another TensorRT/calibrator."""


#: The algorithm names TensorRT writes in a cache header, one per ``nvinfer1::CalibrationAlgoType``
#: (legacy, entropy, entropy 2, min-max). Anything else in a header is a typo or not a TensorRT cache,
#: and TensorRT would silently ignore the file, so the parser refuses it.
TRT_ALGORITHMS: frozenset[str] = frozenset(
    {"EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration"}
)

#: kd2trt calibration method -> the algorithm name written in the cache header.
#:
#: TensorRT never recomputes ranges from an accepted cache and does not care how they were obtained: it
#: only compares the header string with ``TRT-<its version>-<algorithm of the calibrator it was given>``.
#: The header therefore has to name the calibrator that will *consume* the cache, not the method that
#: produced the ranges. TensorRT has no percentile calibrator class; kd2trt's calibrator on <= 10.x is an
#: ``IInt8EntropyCalibrator2`` (TensorRT's default and recommended one) for both ``entropy`` and
#: ``percentile``, and an ``IInt8MinMaxCalibrator`` for ``minmax``. Hence ``percentile`` ->
#: ``EntropyCalibration2``: the percentile amaxes are used as they are, and the header matches the
#: calibrator. A caller that feeds a percentile cache to another calibrator passes that calibrator's
#: algorithm name explicitly (every function here accepts a TensorRT algorithm name as well as a method).
CALIBRATION_ALGORITHMS: Mapping[str, str] = MappingProxyType(
    {
        "entropy": "EntropyCalibration2",
        "minmax": "MinMaxCalibration",
        "percentile": "EntropyCalibration2",
    }
)

_HEADER_RE = re.compile(r"TRT-([1-9][0-9]*)-([A-Za-z][A-Za-z0-9_]*)")
_HEX_RE = re.compile(r"[0-9a-fA-F]{1,8}")
_SEPARATOR = ": "
_LINE_FORM = (
    'each line after the header must be "<tensor name>: <scale as 1-8 hex digits>", e.g. "input: 3c010a14"'
)
def _show(text: str, limit: int = 80) -> str:
    """Quote a line for an error message, shortened: TorchScript tensor names run to hundreds of chars."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def resolve_algorithm(name: str) -> str:
    """Map a kd2trt method (``entropy``) or a TensorRT algorithm name to the name written in the header.

    Both spellings are accepted so that callers can pass whatever the user or the calibrator reports.
    """
    if name in TRT_ALGORITHMS:
        return name
    if name in CALIBRATION_ALGORITHMS:
        return CALIBRATION_ALGORITHMS[name]
    raise CalibCacheError(
        f"unknown calibration algorithm {name!r}; use one of {', '.join(sorted(CALIBRATION_ALGORITHMS))} "
        f"or a TensorRT algorithm name ({', '.join(sorted(TRT_ALGORITHMS))})"
    )


def _scale_to_hex(scale: float) -> str:
    """Encode like TensorRT: float32 bits, big-endian, lowercase, no padding (``0.0`` -> ``"0"``)."""
    (bits,) = struct.unpack(">I", struct.pack(">f", scale))
    return format(bits, "x")


def _hex_to_scale(text: str) -> float:
    """Decode TensorRT's unpadded hex; short forms such as a bare ``0`` are the value zero-padded left."""
    (scale,) = struct.unpack(">f", int(text, 16).to_bytes(4, "big"))
    return scale


@dataclass
class CalibrationCache:
    """The content of one calibration cache: who it is for, and a scale per tensor in file order.

    ``scales`` holds what the file stores (``amax / 127`` as float32); :meth:`amax` converts back. The
    order of ``scales`` is kept because writing it back in the same order is what makes a round trip
    byte-exact.
    """

    version: TrtVersion
    algorithm: str
    scales: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accepting "entropy" here as well keeps callers from writing a header TensorRT never matches.
        self.algorithm = resolve_algorithm(self.algorithm)

    @classmethod
    def from_amax(
        cls,
        amax: Mapping[str, float],
        version: TrtVersion,
        algorithm: str = "entropy",
        order: Sequence[str] | None = None,
    ) -> CalibrationCache:
        """Build a cache from activation ranges (``max |x|`` per tensor) computed by kd2trt.

        Tensors are laid out in ``order`` when it is given (the graph's topological order, e.g.
        :func:`activation_tensors`), followed by any others sorted by name; without ``order`` in the order
        of ``amax``. ONNX Runtime's calibrators return ranges in ``set`` order, which changes from one process
        to the next: :func:`kd2trt.onnx.calibration.collect_ranges` therefore returns them in graph order
        (unknown names sorted), so a cache built from its ranges has the same bytes on every export.

        The scale is ``amax / 127`` rounded once to float32 -- what TensorRT's calibrators store. Ranges that
        are not finite or are negative are refused, naming the tensor, because TensorRT would accept such a
        scale and quietly produce a useless (all-zero or saturated) INT8 tensor.
        """
        if not version.supports_implicit_int8:
            raise CalibCacheError(
                f"TensorRT {version} has no INT8 calibrators, so it does not read calibration caches; "
                "build with explicit quantization (Q/DQ nodes) instead"
            )
        scales: dict[str, float] = {}
        if order is None:
            names = list(amax)
        else:
            listed = [n for n in dict.fromkeys(order) if n in amax]
            names = listed + sorted(set(amax) - set(listed), key=str)
        for name in names:
            value = amax[name]
            _check_name(name)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise CalibCacheError(f"amax for tensor {_show(name)} is not a number: {value!r}") from None
            if not math.isfinite(number) or number < 0:
                raise CalibCacheError(
                    f"amax for tensor {_show(name)} is {number!r}; it must be a finite number >= 0 -- "
                    "check the calibration data for NaN/inf activations"
                )
            try:
                # TensorRT holds ranges as float32; one that overflows float32 would become inf inside it.
                struct.pack(">f", number)
            except OverflowError:
                raise CalibCacheError(
                    f"amax for tensor {_show(name)} is {number!r}, beyond float32 range; "
                    "check the calibration data for exploding activations"
                ) from None
            # struct rounds amax/127 once to the nearest float32, as float(amax) / 127.0f does in TensorRT;
            # abs() turns -0.0 into 0.0 so that it is written as TensorRT writes a zero scale ("0").
            (scale,) = struct.unpack(">f", struct.pack(">f", abs(number) / 127.0))
            scales[name] = scale
        return cls(version, algorithm, scales)

    @property
    def header(self) -> str:
        """The first line, e.g. ``TRT-8502-EntropyCalibration2``: what TensorRT compares with its own."""
        return f"TRT-{self.version.header_number}-{self.algorithm}"

    def amax(self, name: str) -> float:
        """The activation range of one tensor (``scale * 127``); ``KeyError`` if the cache lacks it."""
        return self.scales[name] * 127.0

    def amaxes(self) -> dict[str, float]:
        """Every tensor's activation range, in file order."""
        return {name: scale * 127.0 for name, scale in self.scales.items()}

    def to_text(self) -> str:
        """Serialise exactly as TensorRT does, trailing newline included, in the order of ``scales``.

        That order is deterministic: a parsed cache keeps its file's order (byte-exact round trip), a cache
        from :meth:`from_amax` has ``order`` (graph order) or the order of the ranges it was given.
        """
        lines = [self.header]
        for name, scale in self.scales.items():
            _check_name(name)
            try:
                lines.append(f"{name}{_SEPARATOR}{_scale_to_hex(scale)}")
            except (OverflowError, struct.error, TypeError):
                raise CalibCacheError(
                    f"scale for tensor {_show(name)} is {scale!r}, which is not a float32 value"
                ) from None
        return "\n".join(lines) + "\n"


def activation_tensors(model: Any) -> list[str]:
    """The tensors of an ONNX graph that calibration covers, in topological order.

    ``model`` is an ``onnx.ModelProto`` or a path. These are the float (FP32/FP16) graph inputs and node
    outputs that depend on a graph input -- the activations a TensorRT calibrator gives a range. Outputs
    computed from initializers alone (an ``Identity`` of a weight) are constants, not activations.
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    initializers = {i.name for i in model.graph.initializer}
    dynamic = {i.name for i in model.graph.input if i.name not in initializers}
    order = [i.name for i in model.graph.input if i.name in dynamic]
    for node in model.graph.node:
        if any(name in dynamic for name in node.input):
            dynamic.update(node.output)
            order.extend(node.output)
    return [name for name in dict.fromkeys(order) if name and name in types
            and types[name].HasField("tensor_type") and types[name].tensor_type.elem_type in floats]


def check_cache_tensors(cache: CalibrationCache, model: Any, source: str | os.PathLike[str] = "<calibration cache>"
                        ) -> None:
    """Refuse, in one line, a cache that cannot calibrate ``model`` (an ``onnx.ModelProto`` or a path).

    A cache holding only its header, or lacking activation tensors of the graph (see
    :func:`activation_tensors`), would leave those layers without a range: TensorRT runs them in higher
    precision with only a warning, and the Q/DQ graph cannot be built at all. Call it on a cache read for
    reuse, before anything is derived from it (``kd2trt.onnx.stage._reused_cache``, after ``read_cache``).
    """
    fix = "re-run `kd2trt export --int8` on the host with the calibration data"
    if not cache.scales:
        raise CalibCacheError(f"{source} holds only its header ({cache.header}) and no tensor scales; {fix}")
    missing = [name for name in activation_tensors(model) if name not in cache.scales]
    if missing:
        shown = ", ".join(_show(n, 60) for n in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                                               else "")
        raise CalibCacheError(f"{source} lacks {len(missing)} tensor(s) the graph needs ({shown}); was it made for "
                              f"another ONNX? {fix}")


def _check_name(name: object) -> None:
    """Refuse names that cannot survive the line-based format (they would corrupt every later line)."""
    if not isinstance(name, str) or not name or "\n" in name or "\r" in name:
        raise CalibCacheError(
            f"tensor name {name!r} cannot be written to a calibration cache: names must be non-empty "
            "strings without line breaks"
        )


def parse_cache(text: str, source: str = "<string>") -> CalibrationCache:
    """Parse a cache's text strictly: anything TensorRT would not read the same way is an error.

    Errors name ``source`` and the 1-based line number and say what a line must look like. Hex digits may
    be upper case (TensorRT's reader accepts them); the writer always produces TensorRT's lower case.
    """
    if not text:
        raise CalibCacheError(
            f"{source} is empty; expected a TensorRT calibration cache starting with 'TRT-'"
        )
    if "\r" in text:
        line_number = text[: text.index("\r")].count("\n") + 1
        raise CalibCacheError(
            f"{source}:{line_number}: contains a carriage return (Windows line endings?); TensorRT would not "
            "match the header and would ignore the cache -- convert the file to '\\n' line endings"
        )
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the trailing newline TensorRT writes; a missing one is tolerated
    header = lines[0]
    match = _HEADER_RE.fullmatch(header)
    if match is None:
        hint = " -- it looks like a tensor line, so the header is missing" if _SEPARATOR in header else ""
        raise CalibCacheError(
            f"{source}:1: expected a header like 'TRT-8502-EntropyCalibration2' or "
            f"'TRT-100300-MinMaxCalibration', found {_show(header)}{hint}; "
            "is this a TensorRT INT8 calibration cache?"
        )
    number, algorithm = match.groups()
    if algorithm not in TRT_ALGORITHMS:
        raise CalibCacheError(
            f"{source}:1: unknown calibration algorithm {algorithm!r} in header {_show(header)}; "
            f"TensorRT writes one of {', '.join(sorted(TRT_ALGORITHMS))}"
        )
    try:
        version = TrtVersion.from_header_number(int(number))
    except TrtVersionError as exc:
        raise CalibCacheError(f"{source}:1: header {_show(header)}: {exc}") from None

    scales: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    for line_number, line in enumerate(lines[1:], start=2):
        name, sep, hex_value = line.rpartition(_SEPARATOR)
        if not sep:
            what = "is empty" if not line else f"has no ': ' separator: {_show(line)}"
            raise CalibCacheError(f"{source}:{line_number}: line {what}; {_LINE_FORM}")
        if not name:
            raise CalibCacheError(
                f"{source}:{line_number}: tensor name is empty in {_show(line)}; {_LINE_FORM}"
            )
        if _HEX_RE.fullmatch(hex_value) is None:
            raise CalibCacheError(
                f"{source}:{line_number}: {_show(hex_value)} is not 1-8 hex digits "
                f"(tensor {_show(name)}); {_LINE_FORM}"
            )
        if name in scales:
            raise CalibCacheError(
                f"{source}:{line_number}: tensor {_show(name)} already appeared on line {first_seen[name]}; "
                "each tensor must appear once -- regenerate the cache"
            )
        scales[name] = _hex_to_scale(hex_value)
        first_seen[name] = line_number
    return CalibrationCache(version, algorithm, scales)


def read_cache(path: str | os.PathLike[str]) -> CalibrationCache:
    """Read and parse a cache file; I/O and decoding problems become one-line errors naming the path."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CalibCacheError(
            f"calibration cache {path} does not exist; "
            "run `kd2trt export --int8` to create it or fix the path"
        ) from None
    except IsADirectoryError:
        raise CalibCacheError(
            f"calibration cache {path} is a directory; pass the cache file itself"
        ) from None
    except OSError as exc:
        raise CalibCacheError(f"cannot read calibration cache {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CalibCacheError(
            f"{path} is not UTF-8 text (byte {exc.start}); is it a TensorRT engine or other binary file "
            "instead of a calibration cache?"
        ) from None
    return parse_cache(text, source=str(path))


def read_cache_manifest(path: str | os.PathLike[str]) -> CacheManifest:
    """A cache's JSON manifest (`<cache>.json`, what it was calibrated for); anything unreadable or malformed is
    a one-line error naming the file."""
    return read_manifest(path, CacheManifest, "calibration-cache manifest",
                         "restore the .json written with the cache, re-run `kd2trt export --int8`, or pass --force")


def write_cache(cache: CalibrationCache, path: str | os.PathLike[str]) -> None:
    """Write ``cache`` atomically: a crash or a full disk never leaves a truncated cache behind.

    A half-written cache is worse than none -- TensorRT would read the surviving lines and quietly build an
    engine with the missing tensors uncalibrated -- hence :func:`kd2trt.artifacts.atomic_write_bytes`.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise CalibCacheError(f"cannot write calibration cache {path}: directory {path.parent} does not exist; "
                              "create it or choose another path")
    try:
        atomic_write_bytes(path, cache.to_text().encode("utf-8"))
    except CalibCacheError:
        raise
    except Kd2trtError as exc:  # the atomic writer's one-line error (disk full, read-only, …) names the file
        raise CalibCacheError(str(exc)) from None
    except OSError as exc:
        raise CalibCacheError(
            f"cannot write calibration cache {path}: {exc.strerror or exc}; check that the directory "
            "exists and is writable"
        ) from None


def _short_version(version: TrtVersion) -> str:
    """The spelling a user would type after ``--trt-version``: ``10.3`` unless the patch matters."""
    return f"{version.major}.{version.minor}" if version.patch == 0 else str(version)


def check_compatible(
    cache: CalibrationCache,
    version: TrtVersion,
    algorithm: str,
    source: str | os.PathLike[str] = "<calibration cache>",
    *,
    allow_patch_mismatch: bool = False,
) -> None:
    """Refuse a cache that the given TensorRT build would silently ignore.

    TensorRT compares the *whole* header string, so a cache from 8.5.1 is ignored by 8.5.2 although the
    scales would be fine: the check is strict on major, minor and patch by default. With
    ``allow_patch_mismatch=True`` a patch-only difference passes; the caller must then rewrite the header
    (``dataclasses.replace(cache, version=version)``) before handing the cache to TensorRT, or it will still
    be ignored. ``algorithm`` may be a kd2trt method (``entropy``) or a TensorRT algorithm name.
    """
    expected_algorithm = resolve_algorithm(algorithm)
    wanted = f"TensorRT {version} with {expected_algorithm}"
    if not version.supports_implicit_int8:
        raise CalibCacheError(
            f"{source} is an INT8 calibration cache, but TensorRT {version} has no INT8 calibrators and "
            "never reads one; build with explicit quantization (Q/DQ nodes) instead"
        )
    same_version = cache.version == version or (
        allow_patch_mismatch and (cache.version.major, cache.version.minor) == (version.major, version.minor)
    )
    if same_version and cache.algorithm == expected_algorithm:
        return
    expected_header = f"TRT-{version.header_number}-{expected_algorithm}"
    if not same_version:
        fix = (
            f"Re-run `kd2trt export --int8 --trt-version {_short_version(version)}` on the host with the "
            "calibration data, or pass --force."
        )
    else:
        method = next((m for m, a in CALIBRATION_ALGORITHMS.items() if a == expected_algorithm), algorithm)
        fix = (
            f"Re-run `kd2trt export --int8` with calibration method {method!r} on the host with the "
            "calibration data, or pass --force."
        )
    raise CalibCacheError(
        f"{source} was written for TensorRT {cache.version} with {cache.algorithm} ({cache.header}); "
        f"this build uses {wanted} (expects {expected_header}) — TensorRT would silently ignore it and "
        f"recalibrate. {fix}"
    )
