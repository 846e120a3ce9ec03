"""The latency harness: warm-up, then timed iterations (or a duration); percentiles and throughput.

Host latency is timed with `time.perf_counter_ns` around `runner.infer`, which returns only when the
result is on the host — so it includes transfers and synchronisation, as a deployed caller sees it.
Runners on a GPU also report device compute time (CUDA events, inputs resident), the figure trtexec
calls "GPU Compute Time". Nothing else runs inside the timed loop: no allocation, no accuracy work.
The loop's own start and end (`time.monotonic()`) are kept, so power sampled meanwhile is averaged over
exactly that span.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kd2trt.runner import Runner


@dataclass(frozen=True)
class Percentiles:
    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def of(cls, samples_ms: list[float] | np.ndarray) -> Percentiles:
        values = np.asarray(samples_ms, dtype=np.float64)
        p90, p95, p99 = np.percentile(values, [90, 95, 99])
        return cls(float(np.median(values)), float(values.mean()), float(values.min()), float(values.max()),
                   float(p90), float(p95), float(p99))


@dataclass(frozen=True)
class LatencyResult:
    batch_size: int
    warmup: int
    iterations: int
    host: Percentiles
    throughput_ips: float          # images per second at the mean host latency
    gpu_compute: Percentiles | None
    timer: str
    # the timed loop's span in `time.monotonic()` seconds (the tegrastats clock); process-local, so not reported
    loop_started: float = field(default=0.0, repr=False)
    loop_ended: float = field(default=0.0, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["loop_started"], out["loop_ended"]
        return out


def measure(runner: Runner, batch: np.ndarray, *, warmup: int, iterations: int,
            duration_s: float | None = None) -> LatencyResult:
    """Time `runner.infer(batch)`; with `duration_s`, keep going until that much time has passed."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    for _ in range(warmup):
        runner.infer(batch)
    samples: list[float] = []
    loop_started = time.monotonic()
    started = time.perf_counter()
    while len(samples) < iterations or (duration_s is not None and time.perf_counter() - started < duration_s):
        t0 = time.perf_counter_ns()
        runner.infer(batch)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if duration_s is not None and len(samples) >= 10 and time.perf_counter() - started >= duration_s:
            break
    loop_ended = time.monotonic()
    host = Percentiles.of(samples)
    compute = runner.time_compute(batch, len(samples))
    return LatencyResult(
        batch_size=len(batch), warmup=warmup, iterations=len(samples), host=host,
        throughput_ips=len(batch) * 1000.0 / host.mean_ms,
        gpu_compute=Percentiles.of(compute) if compute else None,
        timer="perf_counter_ns" + (" + CUDA events" if compute else ""),
        loop_started=loop_started, loop_ended=loop_ended,
    )
