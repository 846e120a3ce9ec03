"""Which versions of kd2trt and its numerical dependencies made an artifact, recorded beside it.

Read from the installed distributions' metadata, so recording them imports nothing (and works at the bottom
layer, where torch and onnx are not imported).
"""

from __future__ import annotations

import platform
from importlib import metadata

from kd2trt import __version__

__all__ = ["tool_versions"]

_TOOLS = {"torch": "torch", "onnx": "onnx", "onnxruntime": "onnxruntime"}


def _installed(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def tool_versions() -> dict[str, str]:
    """kd2trt, torch, onnx, onnxruntime (whichever build is installed, e.g. onnxruntime-gpu) and Python."""
    versions = {"kd2trt": __version__}
    for name, distribution in _TOOLS.items():
        found = _installed(distribution) or (_installed(f"{distribution}-gpu") if name == "onnxruntime" else None)
        if found is not None:
            versions[name] = found
    versions["python"] = platform.python_version()
    return versions
