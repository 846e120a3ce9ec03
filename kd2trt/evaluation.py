"""PyTorch inference: over a data set (training's validation and test figures) and as a runner (export, bench)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kd2trt.runner import Runner, RunnerInfo

__all__ = ["TorchRunner", "predict"]


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on the CPU) and labels of the whole data set, in data-set order."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for images, targets, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits.append(model(images.to(device)).float().cpu())
        labels.append(targets)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


class TorchRunner(Runner):
    """Eager PyTorch on the CPU or a CUDA device.

    FP32 means FP32: on CUDA, TF32 (on by default for cuDNN convolutions on Ampere and later) is turned off, as
    it is for the FP32 TensorRT engine, so that the student's FP32 row is a reference the parity gates can hold
    every other form to.
    """

    def __init__(self, model: nn.Module, info: RunnerInfo | None = None, device: torch.device | None = None):
        self.device = device or torch.device("cpu")
        if self.device.type == "cuda":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model = model.eval().to(self.device)
        self.info = info or RunnerInfo("model", "pytorch", "fp32", str(self.device))
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
