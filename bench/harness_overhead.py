"""The bench harness's own overhead: `kd2trt.bench` (runner + harness) vs a bare ONNX Runtime loop.

Same model, same input, same session options, interleaved rounds so that drift in the machine's state
hits both alike; the overhead is the relative difference of the medians. Target: ≤ 5 %. It needs an
exported ONNX and stops when there is none: run `kd2trt export` (or bench/export.py, which distills and
exports into runs/bench-export/, the default --onnx) first. From the repository root:

    .venv/bin/python bench/export.py && .venv/bin/python bench/harness_overhead.py
    .venv/bin/python bench/harness_overhead.py --onnx runs/digits/student.onnx
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from kd2trt.artifacts import atomic_write_json
from kd2trt.bench.latency import measure
from kd2trt.onnx import runtime
from kd2trt.onnx.runtime import OrtRunner
from kd2trt.runner import RunnerInfo


def bare_loop(path: Path, batch: np.ndarray, warmup: int, iterations: int) -> float:
    session = runtime.session(path)
    feed = {session.get_inputs()[0].name: batch}
    for _ in range(warmup):
        session.run(None, feed)
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(samples)


def harness(path: Path, batch: np.ndarray, warmup: int, iterations: int) -> float:
    runner = OrtRunner(path, RunnerInfo("student", "onnxruntime", "fp32", "cpu"), ["CPUExecutionProvider"])
    return measure(runner, batch, warmup=warmup, iterations=iterations).host.median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=Path("runs/bench-export/student.onnx"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("bench/results/harness_overhead.json"))
    args = parser.parse_args()
    console = Console()
    if not args.onnx.is_file():
        raise SystemExit(f"{args.onnx}: not found; run `kd2trt export` first or run bench/export.py")
    session = runtime.session(args.onnx)
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    results = {}
    for batch_size in args.batch_sizes:
        batch = np.random.default_rng(0).standard_normal([batch_size, *shape[1:]]).astype(np.float32)
        bare, kd2trt = [], []
        for _ in range(args.rounds):
            bare.append(bare_loop(args.onnx, batch, 50, args.iterations))
            kd2trt.append(harness(args.onnx, batch, 50, args.iterations))
        overhead = (statistics.median(kd2trt) - statistics.median(bare)) / statistics.median(bare) * 100
        results[str(batch_size)] = {"bare_median_ms": statistics.median(bare),
                                    "harness_median_ms": statistics.median(kd2trt),
                                    "overhead_percent": overhead, "rounds": args.rounds,
                                    "iterations": args.iterations, "within_5_percent": abs(overhead) <= 5.0}
        console.print(f"batch {batch_size}: bare {statistics.median(bare):.4f} ms, harness "
                      f"{statistics.median(kd2trt):.4f} ms, overhead {overhead:+.2f} %")
    atomic_write_json(args.out, {"onnx": str(args.onnx), "results": results})
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
