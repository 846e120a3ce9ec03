"""TensorRT engines as bench runners (see kd2trt.trt.runner for the engine runtime itself)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from kd2trt.errors import Kd2trtError
from kd2trt.manifests import EngineManifest
from kd2trt.runner import Candidate, RunnerInfo
from kd2trt.trt.manifest import check_runtime_compatible, read_manifest, verify_engine_file


def runnable_engines(engines: list[Path], trt_version: str, compute_capability: str, gpu_name: str | None,
                     skipped: list[str]) -> list[tuple[Path, EngineManifest]]:
    """The engines this TensorRT and GPU can run, with their manifests. Each other one — no manifest, an
    invalid one, bytes that do not match it, built for another TensorRT or GPU — becomes a `skipped` line
    saying why, so that one bad engine does not stop the bench. Pure: no TensorRT, no GPU needed."""
    runnable = []
    for engine in engines:
        try:
            manifest = read_manifest(engine)
            check_runtime_compatible(manifest, trt_version, compute_capability, engine, running_gpu_name=gpu_name)
            verify_engine_file(manifest, engine)
        except Kd2trtError as exc:
            skipped.append(f"TensorRT engine {engine.name}: {exc}")
            continue
        runnable.append((engine, manifest))
    return runnable


def engine_candidates(engines: list[Path], skipped: list[str], cuda_graphs: bool = False) -> Iterator[Candidate]:
    from kd2trt.trt import cuda_memory
    from kd2trt.trt.capabilities import probe_environment
    from kd2trt.trt.runner import TrtRunner

    caps, reason = probe_environment()
    if caps is None:
        skipped.append(f"TensorRT engines in {engines[0].parent}: {reason}")
        return
    try:
        device = cuda_memory.device_info(0)
    except Kd2trtError as exc:  # CudaError
        skipped.append(f"TensorRT engines in {engines[0].parent}: cannot query the CUDA device ({exc})")
        return
    running = caps.version_string or str(caps.version)
    for engine, manifest in runnable_engines(engines, running, device.compute_capability, device.name, skipped):
        model = engine.name.split("-", 1)[0]
        info = RunnerInfo(model, "tensorrt", manifest.precision, f"cuda ({manifest.gpu_name})", file=str(engine),
                          file_bytes=os.path.getsize(engine))
        if cuda_graphs:
            info.notes.append("TensorRT engines replayed as CUDA graphs")
        # runnable_engines has already checked the bytes against the manifest: hash them once, not twice
        yield Candidate(info, lambda e=engine, i=info: TrtRunner(e, info=i, use_cuda_graph=cuda_graphs,
                                                                 verify_sha256=False))
