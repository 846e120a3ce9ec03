"""TensorRT engines as bench runners (see kd2trt.trt.runner for the engine runtime itself)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kd2trt.bench.runners import RunnerInfo
from kd2trt.bench.stage import Candidate


class TrtBenchRunner:
    """Host batch in, host logits out: transfers and synchronisation inside the timed call."""

    def __init__(self, engine: Path, info: RunnerInfo, cuda_graphs: bool = False):
        from kd2trt.trt.runner import TrtRunner

        self.runner = TrtRunner(engine, use_cuda_graph=cuda_graphs)
        self.info = info

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.runner.infer(batch)

    def time_compute(self, batch: np.ndarray, iterations: int) -> list[float] | None:
        """GPU compute per enqueue (CUDA events, input resident): trtexec's "GPU Compute Time"."""
        return self.runner.time_compute(batch, iterations)

    def close(self) -> None:
        self.runner.close()


def engine_candidates(engines: list[Path], skipped: list[str], cuda_graphs: bool = False) -> Iterator[Candidate]:
    from kd2trt.trt.capabilities import probe_environment
    from kd2trt.trt.manifest import read_manifest

    caps, reason = probe_environment()
    if caps is None:
        skipped.append(f"TensorRT engines in {engines[0].parent}: {reason}")
        return
    for engine in engines:
        manifest = read_manifest(engine)
        model = engine.name.split("-", 1)[0]
        info = RunnerInfo(model, "tensorrt", manifest.precision, f"cuda ({manifest.gpu_name})", file=str(engine),
                          file_bytes=os.path.getsize(engine))
        if cuda_graphs:
            info.notes.append("TensorRT engines replayed as CUDA graphs")
        yield Candidate(info, lambda e=engine, i=info: TrtBenchRunner(e, i, cuda_graphs))
