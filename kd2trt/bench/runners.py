"""One interface over every way kd2trt runs a model: PyTorch, ONNX Runtime, TensorRT.

A runner takes a preprocessed float32 NCHW batch on the host and returns float32 logits on the host —
the full host-side latency a deployed model has. Runners that can also time device compute alone
(CUDA events around the kernel launch, inputs already resident) implement `time_compute`, which the
latency harness reports apart, as trtexec separates GPU compute time from host latency.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from kd2trt.onnx import runtime


@dataclass
class RunnerInfo:
    """What a report row says about the runner (one model × backend × precision × device)."""

    model: str            # teacher | student | baseline
    backend: str          # pytorch | onnxruntime | tensorrt
    precision: str        # fp32 | fp16 | int8
    device: str           # cpu | cuda:0 | …
    params: int | None = None
    file: str | None = None
    file_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.model} {self.precision.upper()} ({self.backend}, {self.device})"


class Runner(Protocol):
    info: RunnerInfo

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def time_compute(self, batch: np.ndarray, iterations: int) -> list[float] | None: ...

    def close(self) -> None: ...


class TorchRunner:
    """Eager PyTorch on the CPU or a CUDA device."""

    def __init__(self, model: nn.Module, info: RunnerInfo, device: torch.device):
        self.model = model.eval().to(device)
        self.device = device
        self.info = info
        self.info.params = sum(p.numel() for p in model.parameters())

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()

    @torch.inference_mode()
    def time_compute(self, batch: np.ndarray, iterations: int) -> list[float] | None:
        """Milliseconds per forward pass measured with CUDA events, input already on the device.

        Eager PyTorch launches kernels one by one from Python: for a small model the GPU waits on each launch,
        so this span is the launch-bound time of the forward pass, not the kernels' own duration.
        """
        if self.device.type != "cuda":
            return None
        resident = torch.from_numpy(batch).to(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(iterations):
            start.record()
            self.model(resident)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return times

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


PROVIDER_DEVICES = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda",
                    "TensorrtExecutionProvider": "cuda (TensorRT EP)"}


class OrtRunner:
    """ONNX Runtime; on the CPU, Q/DQ graphs run as plain fake-quantisation (see kd2trt.onnx.runtime).

    The row's device is the provider ONNX Runtime actually put first, not the one asked for: when a GPU
    provider cannot start (no CUDA or TensorRT libraries), ONNX Runtime only logs it and runs on the CPU.
    """

    def __init__(self, path: Path, info: RunnerInfo, providers: list[str], threads: int | None = None):
        fake_quant = info.precision == "int8"
        self.session = runtime.session(path, fake_quant=fake_quant, providers=providers, threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [self.session.get_outputs()[0].name]
        self.info = info
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
        return self.session.run(self.output_names, {self.input_name: batch})[0]

    def time_compute(self, batch: np.ndarray, iterations: int) -> list[float] | None:
        return None

    def close(self) -> None:
        del self.session


def ort_backends(device: str, available: list[str] | None = None) -> list[list[str]]:
    """The provider lists to bench ONNX Runtime with: on a CUDA device, each GPU provider installed
    (onnxruntime-gpu's CUDA and, where built with it, TensorRT execution providers), one row set each;
    otherwise, or with neither installed, the CPU."""
    available = ort.get_available_providers() if available is None else available
    backends = []
    if device.startswith("cuda"):
        for gpu in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            if gpu in available:
                backends.append([gpu, *(p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p != gpu)])
    return backends or [["CPUExecutionProvider"]]
