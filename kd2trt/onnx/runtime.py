"""ONNX Runtime sessions and the ONNX Runtime runner, with the settings that give TensorRT's numerics.

Why `ORT_ENABLE_BASIC` for Q/DQ graphs: ONNX Runtime's fused int8 CPU kernels saturate on CPUs
without VNNI (AVX2-only machines) for per-channel, full-range Q/DQ models — measured 97.8 % → 26 %.
At the basic level Q/DQ pairs run as plain fake-quantisation (quantise, dequantise, float op), which
is what TensorRT's explicit-quantisation semantics are; the accuracy preview must show that figure.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kd2trt.errors import Kd2trtError
from kd2trt.runner import InputSpec, Runner, RunnerInfo

PROVIDER_DEVICES = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda",
                    "TensorrtExecutionProvider": "cuda (TensorRT EP)"}


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


class OrtRunner(Runner):
    """ONNX Runtime; on the CPU, Q/DQ graphs run as plain fake-quantisation (see the module docstring).

    The row's device is the provider ONNX Runtime actually put first, not the one asked for: when a GPU
    provider cannot start (no CUDA or TensorRT libraries), ONNX Runtime only logs it and runs on the CPU.
    """

    def __init__(self, path: Path, info: RunnerInfo | None = None, providers: list[str] | None = None,
                 threads: int | None = None, fake_quant: bool | None = None):
        providers = providers or ["CPUExecutionProvider"]
        self.info = info or RunnerInfo("model", "onnxruntime", "fp32", "cpu")
        fake_quant = self.info.precision == "int8" if fake_quant is None else fake_quant
        self.session = session(path, fake_quant=fake_quant, providers=providers, threads=threads)
        first = self.session.get_inputs()[0]
        self.input_spec = InputSpec(first.name, tuple(d for d in first.shape[1:] if isinstance(d, int)) or None)
        self.output_names = [self.session.get_outputs()[0].name]
        self.info.file, self.info.file_bytes = str(path), os.path.getsize(path)
        active = self.session.get_providers()[0]
        self.info.device = PROVIDER_DEVICES.get(active, active)
        if active != providers[0]:
            self.info.notes.append(f"ONNX Runtime could not start {providers[0]} and ran on {active} instead")
        if fake_quant and active == "CPUExecutionProvider":
            self.info.notes.append("Q/DQ run as fake-quant: accuracy as TensorRT computes it, latency not "
                                   "representative of INT8 kernels")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        # kd2trt's graphs all have FP32 outputs (the FP16 graph keeps FP32 I/O): no conversion in the timed path
        return self.session.run(self.output_names, {self.input_spec.name: batch})[0]

    def close(self) -> None:
        self.session = None


def ort_backends(device: str, available: list[str] | None = None) -> list[list[str]]:
    """The provider lists to run ONNX Runtime with: on a CUDA device, each GPU provider installed
    (onnxruntime-gpu's CUDA and, where built with it, TensorRT execution providers), one row set each;
    otherwise, or with neither installed, the CPU."""
    available = ort.get_available_providers() if available is None else available
    backends = []
    if device.startswith("cuda"):
        for gpu in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            if gpu in available:
                backends.append([gpu, *(p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p != gpu)])
    return backends or [["CPUExecutionProvider"]]


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
