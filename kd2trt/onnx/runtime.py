"""ONNX Runtime sessions and batched inference, with the settings that give TensorRT's numerics.

Why `ORT_ENABLE_BASIC` for Q/DQ graphs: ONNX Runtime's fused int8 CPU kernels saturate on CPUs
without VNNI (AVX2-only machines) for per-channel, full-range Q/DQ models — measured 97.8 % → 26 %.
At the basic level Q/DQ pairs run as plain fake-quantisation (quantise, dequantise, float op), which
is what TensorRT's explicit-quantisation semantics are; the accuracy preview must show that figure.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kd2trt.errors import Kd2trtError


def session(path: str | Path, *, fake_quant: bool = False, providers: list[str] | None = None,
            threads: int | None = None) -> ort.InferenceSession:
    """An inference session; `fake_quant` for Q/DQ graphs (see the module docstring)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if fake_quant:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for bad models
        raise Kd2trtError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None


def run_batches(sess: ort.InferenceSession, batches: Iterable[np.ndarray]) -> np.ndarray:
    """Concatenated first output over `batches` (float32 NCHW arrays), as float32."""
    input_name = sess.get_inputs()[0].name
    outputs = [np.asarray(sess.run(None, {input_name: batch})[0], dtype=np.float32) for batch in batches]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence onnxruntime.quantization's prints and root-logger chatter for the block, then restore both."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
