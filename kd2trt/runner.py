"""One interface over every way kd2trt runs a model -- PyTorch, ONNX Runtime, TensorRT -- as Polygraphy's runners do.

A runner takes a preprocessed float32 NCHW batch on the host and returns float32 logits on the host: the full
host-side latency a deployed model has. Export's parity gates and accuracy preview and the bench use the same
runners, so a figure means the same thing in both. What a backend implements is `infer` (one batch its
input spec accepts) and, where it can time device compute alone (CUDA events, input resident), `time_compute`;
batching a whole data set into chunks the backend accepts (`infer_many`) is written once, here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

from kd2trt.errors import Kd2trtError

__all__ = ["Candidate", "InputSpec", "Runner", "RunnerInfo", "split_batches"]


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


@dataclass(frozen=True)
class InputSpec:
    """The one input a runner takes: its name, C×H×W (None: whatever comes), dtype and batch range."""

    name: str = "input"
    chw: tuple[int, ...] | None = None
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    min_batch: int = 1
    max_batch: int | None = None  # None: any size

    def accepts(self, batch_size: int) -> bool:
        return self.min_batch <= batch_size and (self.max_batch is None or batch_size <= self.max_batch)

    def describe(self) -> str:
        high = "∞" if self.max_batch is None else str(self.max_batch)
        return f"{self.min_batch}..{high}"


def split_batches(count: int, min_batch: int, max_batch: int) -> list[tuple[int, int, int]]:
    """Chunks ``(start, stop, padded_size)`` covering ``count`` items with sizes in [min_batch, max_batch].

    A last chunk smaller than ``min_batch`` is padded up to it (the caller repeats items and drops the extra
    outputs).
    """
    if count < 1:
        raise Kd2trtError("no images to run")
    if not 1 <= min_batch <= max_batch:
        raise Kd2trtError(f"bad batch range {min_batch}..{max_batch}")
    chunks = []
    for start in range(0, count, max_batch):
        stop = min(start + max_batch, count)
        chunks.append((start, stop, max(stop - start, min_batch)))
    return chunks


class Runner:
    """The base of every runner; use it as a context manager so that device memory is released."""

    info: RunnerInfo
    input_spec: InputSpec = InputSpec()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits of one batch that `input_spec` accepts."""
        raise NotImplementedError

    def time_compute(self, batch: np.ndarray, iterations: int) -> list[float] | None:
        """Milliseconds of device compute per call, input resident (CUDA events); None where not measurable."""
        return None

    def close(self) -> None:
        """Release the backend's resources (sessions, engines, device buffers)."""

    def infer_many(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits of any number of images, in chunks the input spec accepts (a short last one padded, then cut)."""
        spec = self.input_spec
        high = batch_size if spec.max_batch is None else min(batch_size, spec.max_batch)
        outputs = []
        for start, stop, size in split_batches(len(images), spec.min_batch, max(high, spec.min_batch)):
            chunk = images[start:stop]
            if size > len(chunk):
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
            outputs.append(np.asarray(self.infer(np.ascontiguousarray(chunk)), dtype=np.float32)[: stop - start])
        return np.concatenate(outputs)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


@dataclass
class Candidate:
    """A runner not built yet: the bench builds, measures and closes one at a time to bound memory."""

    info: RunnerInfo
    build: Callable[[], Runner]
