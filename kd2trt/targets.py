"""TensorRT releases and the deployment targets `export.trt_versions` (and `--trt-version`) accept.

The bottom of the house: the recipe check at load time, the calibration-cache headers, the operator
preflight and the TensorRT layer all parse versions here, so this module imports nothing heavier than the
standard library.

A target must name one TensorRT release, because a calibration-cache header carries the full version and
TensorRT ignores a cache whose header differs even in the patch number; and it must name a line kd2trt has
an ONNX operator table for, or the preflight could not check the graph. Wildcards such as ``10.x`` satisfy
neither and are refused. A short target names the release JetPack ships: ``8.5`` means 8.5.2 (JetPack
5.1.x), not 8.5.0; other short forms (``10.14``, ``11.0``) mean ``.0`` -- give the full version of an x86
install.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kd2trt.errors import TrtVersionError

__all__ = ["JETPACK_TRT_RELEASES", "LINE_TARGETS", "TARGET_FORMS", "TrtTarget", "TrtVersion", "line_of",
           "parse_target"]

# The three version spellings kd2trt accepts; a fourth build component (``tensorrt.__version__`` is e.g.
# "10.3.0.26" or "8.5.3.1") is accepted and dropped because TensorRT's header ignores the build number.
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)?")
_VERSION_FORMS = '"MAJOR.MINOR" or "MAJOR.MINOR.PATCH", e.g. "8.5", "8.6.2", "10.3" or "10.14.1"'

# The first TensorRT major version that uses the major*10000 header encoding: 10.x does (the fixtures
# TRT-100100 and TRT-101401 prove it). 9.x (an LLM-only line) introduced the API generation 10.x shipped,
# and the 8.x encoding cannot represent minor versions >= 10, so 9.x is taken to use the 10.x formula; a
# real 9.x cache with a 4-digit number would be refused by `TrtVersion.from_header_number`, not misread.
_WIDE_ENCODING_MAJOR = 9


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT release, as far as the calibration-cache header can tell releases apart.

    The build number is not part of it because TensorRT does not write it into the header.
    """

    major: int
    minor: int
    patch: int = 0

    def __post_init__(self) -> None:
        for name in ("major", "minor", "patch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TrtVersionError(f"TensorRT version {name} must be a non-negative integer, got {value!r}")
        if self.major < 1:
            raise TrtVersionError(f"TensorRT major version must be >= 1, got {self.major}; use {_VERSION_FORMS}")

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        """Parse a user-supplied version such as ``--trt-version 10.3``; a missing patch means ``.0``."""
        match = _VERSION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise TrtVersionError(f"TensorRT version {text!r} is not understood; use {_VERSION_FORMS}")
        major, minor, patch = match.groups()
        return cls(int(major), int(minor), int(patch or 0))

    @property
    def header_number(self) -> int:
        """The number TensorRT writes after ``TRT-``: 8.5.2 -> 8502, 10.3.0 -> 100300.

        TensorRT <= 8.x writes ``major*1000 + minor*100 + patch``; 10.x writes ``major*10000 + minor*100 +
        patch`` (``NV_TENSORRT_VERSION``).
        """
        if self.major >= _WIDE_ENCODING_MAJOR:
            if self.minor > 99 or self.patch > 99:
                raise TrtVersionError(f"TensorRT {self} cannot be written in a calibration-cache header")
            return self.major * 10000 + self.minor * 100 + self.patch
        if self.minor > 9 or self.patch > 99:
            raise TrtVersionError(f"TensorRT {self} cannot be written in a calibration-cache header")
        return self.major * 1000 + self.minor * 100 + self.patch

    @classmethod
    def from_header_number(cls, number: int) -> TrtVersion:
        """Invert :attr:`header_number`: 8501 -> 8.5.1, 101401 -> 10.14.1.

        The two encodings do not overlap for real releases (4 digits for majors 1-8, 5+ digits for majors
        >= 9), so the number alone identifies the version. Numbers outside both ranges are refused instead of
        guessed, because a wrong guess would produce a header TensorRT silently ignores.
        """
        if 1000 <= number < _WIDE_ENCODING_MAJOR * 1000:
            return cls(number // 1000, number // 100 % 10, number % 100)
        if number >= _WIDE_ENCODING_MAJOR * 10000:
            return cls(number // 10000, number // 100 % 100, number % 100)
        raise TrtVersionError(
            f"{number} is not a TensorRT version number: expected 4 digits for TensorRT 8.x and earlier "
            f"(8502 = 8.5.2) or 5+ digits for TensorRT 9 and later (100300 = 10.3.0)"
        )

    @property
    def supports_implicit_int8(self) -> bool:
        """Whether this TensorRT still has INT8 calibrators; TensorRT 11 removed them (Q/DQ only)."""
        return self.major < 11

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


#: The TensorRT lines kd2trt has ONNX operator tables for (kd2trt.onnx.trt_op_tables), and where each runs.
LINE_TARGETS = {
    "8.5": "JetPack 5.1",
    "8.6": "JetPack 6.0",
    "10.3": "JetPack 6.1/6.2",
    "10": "JetPack 7 / x86 TensorRT 10.x",
    "11": "x86 TensorRT 11.x",
}

_LINE_RE = re.compile(r"^(?:tensorrt|trt)?[\s_-]*v?(\d+)(?:\.(\d+|x))?(?:\.\d+)*(?:\s*latest)?$", re.I)


def _known_lines() -> str:
    return ", ".join(f'"{key}" ({where})' for key, where in LINE_TARGETS.items())


def line_of(version: str) -> str:
    """The operator-table line of a TensorRT version ("8.5.2", "10.3.0", "10.14.1", "11.1", or a line key).

    Users pass what ``trtexec --version`` or ``dpkg`` prints, with patch and build numbers, so this is not an
    exact lookup: 10.0-10.3 map to the 10.3 line (the oldest 10.x table, so the least permissive) and 10.4+ to
    the newest 10.x table. Anything else -- 7.x, 8.4, 9.x, 12 -- has no table, and guessing would defeat the
    preflight.
    """
    text = str(version).strip()
    match = _LINE_RE.match(text)
    if match:
        major, minor_text = int(match.group(1)), match.group(2)
        minor = None if minor_text in (None, "x", "X") else int(minor_text)
        if major == 8 and minor in (5, 6):
            return f"8.{minor}"
        if major == 10:
            return "10.3" if minor is not None and minor <= 3 else "10"
        if major == 11:
            return "11"
    raise TrtVersionError(
        f"unknown TensorRT version {text!r}: kd2trt has ONNX operator tables for the lines {_known_lines()}; "
        "pass one of those (or a version such as 8.5.2, 10.3.0, 10.14.1, 11.1)"
    )


JETPACK_TRT_RELEASES = {"8.5": "8.5.2", "8.6": "8.6.2", "10.3": "10.3.0"}
TARGET_FORMS = ("8.5 (JetPack 5), 8.6 (JetPack 6.0), 10.3 (JetPack 6.1/6.2), or a full TensorRT version "
                "such as 10.14.1 or 11.0")


@dataclass(frozen=True)
class TrtTarget:
    """One parsed target: the text as written, the release its caches are for, its operator-table line."""

    text: str
    version: TrtVersion
    line: str


def parse_target(text: object) -> TrtTarget:
    """Parse one target; anything that does not name a single release with an operator table is refused."""
    if not isinstance(text, str) or not text.strip():
        raise TrtVersionError(f"TensorRT target {text!r} is not a version; use {TARGET_FORMS}")
    stripped = text.strip()
    try:
        version = TrtVersion.parse(JETPACK_TRT_RELEASES.get(stripped, stripped))
        line = line_of(str(version))
    except TrtVersionError:
        raise TrtVersionError(f"TensorRT target {text!r} is not one kd2trt can write caches and check operators "
                              f"for; use {TARGET_FORMS}") from None
    return TrtTarget(stripped, version, line)
