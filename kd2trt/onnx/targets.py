"""What `export.trt_versions` (and `kd2trt export --trt-version`) accept: the one parser behind the recipe
check at load time, the calibration-cache headers and the operator preflight.

A target must name one TensorRT release, because a calibration-cache header carries the full version and
TensorRT ignores a cache whose header differs even in the patch number; and it must name a line kd2trt has
an ONNX operator table for, or the preflight could not check the graph. Wildcards such as ``10.x`` satisfy
neither and are refused. A short target names the release JetPack ships: ``8.5`` means 8.5.2 (JetPack
5.1.x), not 8.5.0; other short forms (``10.14``, ``11.0``) mean ``.0`` -- give the full version of an x86
install.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kd2trt.errors import Kd2trtError

if TYPE_CHECKING:  # imported lazily below: calib_cache pulls in torch, and the recipe check runs at load time
    from kd2trt.onnx.calib_cache import TrtVersion

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
    from kd2trt.onnx.calib_cache import TrtVersion
    from kd2trt.onnx.trt_ops import resolve_line

    if not isinstance(text, str) or not text.strip():
        raise Kd2trtError(f"TensorRT target {text!r} is not a version; use {TARGET_FORMS}")
    stripped = text.strip()
    try:
        version = TrtVersion.parse(JETPACK_TRT_RELEASES.get(stripped, stripped))
        line = resolve_line(str(version)).line
    except Kd2trtError:
        raise Kd2trtError(f"TensorRT target {text!r} is not one kd2trt can write caches and check operators "
                          f"for; use {TARGET_FORMS}") from None
    return TrtTarget(stripped, version, line)
