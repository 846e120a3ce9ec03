"""`kd2trt bench`: teacher, student (KD and scratch) and every exported form of the student, side by side
on the same test split and the same machine — accuracy, latency, a report, and gates.

Every runner gets the same preprocessed batches, rebuilt from the student checkpoint's own data spec and
preprocessing (the teacher's must be identical, or the comparison would be meaningless).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from kd2trt.bench.accuracy import accuracy
from kd2trt.bench.latency import measure
from kd2trt.bench.report import ParityTolerances, evaluate_gates, write_report
from kd2trt.bench.telemetry import TegrastatsSampler
from kd2trt.bench.trt_runner import engine_candidates
from kd2trt.config import BenchConfig, RunConfig
from kd2trt.distill.checkpoint import data_of, model_from_checkpoint, read_checkpoint
from kd2trt.distill.distributed import resolve_device
from kd2trt.errors import Kd2trtError
from kd2trt.evaluation import TorchRunner
from kd2trt.layout import PRECISIONS, RunLayout
from kd2trt.metrics import class_counts, is_imbalanced
from kd2trt.onnx.runtime import PROVIDER_DEVICES, OrtRunner, ort_backends
from kd2trt.provenance import tool_versions
from kd2trt.results import StageResult
from kd2trt.runner import Candidate, Runner, RunnerInfo
from kd2trt.trt.jetson import is_jetson, read_clock_state


@dataclass
class BenchRequest:
    run_dir: Path
    out_dir: Path | None = None
    engines_dir: Path | None = None

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir, self.engines_dir)


def _checkpoints(layout: RunLayout) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    student = read_checkpoint(layout.checkpoint("student"), ("student",))
    teacher = read_checkpoint(layout.checkpoint("teacher"), ("teacher",))
    baseline_path = layout.checkpoint("baseline")
    baseline = read_checkpoint(baseline_path, ("baseline",)) if baseline_path.is_file() else None
    for path, other in ((layout.checkpoint("teacher"), teacher), (baseline_path, baseline)):
        if other is None:
            continue
        if other["preprocessing"] != student["preprocessing"] or other["classes"] != student["classes"]:
            raise Kd2trtError(f"{path}: preprocessing or classes differ from student.pt; bench compares "
                              "models of one `kd2trt distill` run — pass that run's directory")
    return student, teacher, baseline


def candidates(request: BenchRequest, config: BenchConfig, device: torch.device,
               student: dict[str, Any], teacher: dict[str, Any], baseline: dict[str, Any] | None,
               skipped: list[str]) -> Iterator[Candidate]:
    layout = request.layout
    dev = str(device)
    for name, checkpoint in (("teacher", teacher), ("student", student), ("baseline", baseline)):
        if checkpoint is not None:
            path = layout.checkpoint(name)
            info = RunnerInfo(name, "pytorch", "fp32", dev, file=str(path), file_bytes=os.path.getsize(path))
            yield Candidate(info, lambda c=checkpoint, i=info: TorchRunner(model_from_checkpoint(c), i, device))
    files = layout.model("student")
    for precision in PRECISIONS:
        path = files.onnx(precision)
        if not path.is_file():
            skipped.append(f"student {precision} ONNX: {path} not found (run `kd2trt export "
                           f"{layout.checkpoint('student')}`)")
            continue
        for providers in ort_backends(dev):
            info = RunnerInfo("student", "onnxruntime", precision, PROVIDER_DEVICES[providers[0]])
            yield Candidate(info, lambda p=path, i=info, pr=providers: OrtRunner(p, i, pr, config.threads))
    engines = layout.engines()
    if not engines:
        skipped.append(f"TensorRT engines: none in {layout.engines_dir} (build them with `kd2trt export --fp16 "
                       "--int8` on the target)")
        return
    yield from engine_candidates(engines, skipped, config.cuda_graphs)


def environment(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    env: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           **tool_versions(), "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   gpu_clocks=_gpu_clocks(device.index or 0))
    env["machine"] = f"{env.get('gpu', cpu)}, {env['cores']} cores, {env['torch_threads']} torch threads"
    return env


def _measure_with_power(runner: Runner, batch: np.ndarray, config: BenchConfig, jetson: bool) -> dict[str, Any]:
    """Latency; on a Jetson, tegrastats samples board power meanwhile → mean W and mJ per inference.

    Power is averaged over the host-timed loop only (its `time.monotonic()` span, as `measure` records it):
    not the warm-up before it, nor the CUDA-event pass after it. A loop shorter than tegrastats' interval
    has no sample of its own; then the whole measurement's samples are used.
    """
    if not jetson:
        return measure(runner, batch, warmup=config.warmup, iterations=config.iterations,
                       duration_s=config.duration_s).as_dict()
    with TegrastatsSampler() as sampler:
        started = time.monotonic()
        result = measure(runner, batch, warmup=config.warmup, iterations=config.iterations,
                         duration_s=config.duration_s)
    out = result.as_dict()
    timed_seconds = result.loop_ended - result.loop_started
    summary = (sampler.summary(since=result.loop_started, until=result.loop_ended)
               or sampler.summary(since=started))
    if summary is None:
        out["power"] = {"unavailable": sampler.reason}
    else:
        images = result.iterations * result.batch_size
        out["power"] = {**summary.as_dict(),
                        "energy_per_image_mj": summary.energy_per_inference_mj(images, timed_seconds)}
    return out


def _gpu_clocks(index: int) -> dict[str, str] | str:
    """SM/memory clocks now and their maxima (x86: nvidia-smi), so unlocked or throttled clocks show."""
    fields = "clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.draw,temperature.gpu,pstate"
    try:
        out = subprocess.run(["nvidia-smi", f"--id={index}", f"--query-gpu={fields}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"not recorded ({type(exc).__name__}: nvidia-smi unavailable)"
    return dict(zip(fields.split(","), (v.strip() for v in out.split(",")), strict=False))


def _batch_of(images: np.ndarray, size: int) -> np.ndarray:
    reps = -(-size // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:size])


def _latencies(runner: Runner, images: np.ndarray, config: BenchConfig, jetson: bool) -> dict[str, Any]:
    """Latency at each batch size the runner accepts; one outside its input spec (a TensorRT profile) is left
    out of the row, with a note that says why and how to include it."""
    spec = runner.input_spec
    latency = {}
    for size in config.batch_sizes:
        if not spec.accepts(size):
            name = Path(runner.info.file).name if runner.info.file else runner.info.label
            runner.info.notes.append(
                f"{name}: batch {size} not measured (its profile takes {spec.describe()}; rebuild "
                "with build.min_batch/max_batch covering it)")
            continue
        latency[str(size)] = _measure_with_power(runner, _batch_of(images, size), config, jetson)
    return latency


def _speedup(teacher_row: dict[str, Any], row: dict[str, Any], batch: str) -> float | None:
    """p50 speed-up over the teacher at `batch`; None when the row was not measured at that batch size."""
    if batch not in row["latency"]:
        return None
    return teacher_row["latency"][batch]["host"]["median_ms"] / row["latency"][batch]["host"]["median_ms"]


def int8_precision_plan(layout: RunLayout) -> dict[str, Any]:
    """What the export decided for INT8 (its summary): the accuracy budget's search — methods scored, the
    curve of layers kept in higher precision against validation top-1 — and QAT's record, for the report."""
    path = layout.model("student").export_summary
    if not path.is_file():
        return {}
    try:
        int8 = json.loads(path.read_text()).get("int8") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise Kd2trtError(f"{path}: unreadable export summary ({exc}); rerun kd2trt export") from None
    plan: dict[str, Any] = {}
    if int8.get("budget"):
        plan["int8_budget"] = int8["budget"]
    if int8.get("qat"):
        plan["int8_qat"] = {k: v for k, v in int8["qat"].items() if k not in ("history", "ranges_trained")}
    return plan


def run_bench(request: BenchRequest, config: BenchConfig, console: Console | None = None,
              tolerances: ParityTolerances | None = None) -> dict[str, Any]:
    """Measure every candidate, write report.{md,json,png}; the result includes the gates' outcome.

    `tolerances`: the parity each exported form must keep with the FP32 student (a gate when given)."""
    console = console or Console()
    student, teacher, baseline = _checkpoints(request.layout)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device or "auto")
    data = data_of(student)
    test = data.test
    images = torch.stack([test[i][0] for i in range(len(test))]).numpy().astype(np.float32)
    labels = test.labels.numpy()
    eval_batch = max(config.batch_sizes)
    env = environment(device)
    jetson = is_jetson()
    if jetson:
        clocks = read_clock_state()
        env["jetson_clocks"] = clocks.as_dict()
        if clocks.warning:
            console.print(f"[yellow]warning:[/] {clocks.warning}")
    skipped: list[str] = []
    rows: list[dict[str, Any]] = []
    teacher_logits = reference = None
    b0 = str(config.batch_sizes[0])
    for candidate in candidates(request, config, device, student, teacher, baseline, skipped):
        runner = candidate.build()
        try:
            logits = runner.infer_many(images, eval_batch)
            if logits.shape[1] != data.num_classes:
                raise Kd2trtError(f"{runner.info.file or runner.info.label}: outputs {logits.shape[1]} classes, "
                                  f"the data set has {data.num_classes}; bench the run this model came from")
            if teacher_logits is None:
                teacher_logits = logits
            if reference is None and runner.info.model == "student" and runner.info.precision == "fp32":
                reference = logits
            latency = _latencies(runner, images, config, jetson)
        finally:
            runner.close()
        if jetson and env["jetson_clocks"].get("clocks_locked") is not True:
            runner.info.notes.append("Jetson clocks not locked (run `sudo jetson_clocks`): latencies vary with DVFS")
        row = {**runner.info.__dict__, "label": runner.info.label,
               "accuracy": accuracy(logits, labels, teacher_logits, reference, data.classes,
                                    tolerances.logits(runner.info.precision) if tolerances else None),
               "latency": latency}
        rows.append(row)
        p50 = f"p50 {latency[b0]['host']['median_ms']:.3f} ms" if b0 in latency else f"batch {b0} not measured"
        console.print(f"{runner.info.label:48s} top-1 {row['accuracy']['top1']:6.2f}%  {p50}")
    teacher_row = rows[0]
    for row in rows:
        row["delta_top1_vs_teacher"] = row["accuracy"]["top1"] - teacher_row["accuracy"]["top1"]
        row["speedup_vs_teacher"] = _speedup(teacher_row, row, b0)
    result: dict[str, Any] = {
        "run": request.run_dir.name, "data_spec": student["data"]["spec"], "test_images": len(labels),
        "num_classes": data.num_classes, "classes": data.classes,
        "class_counts": dict(zip(data.classes, class_counts(labels, data.num_classes), strict=True)),
        "test_imbalanced": is_imbalanced(labels, data.num_classes), "batch_sizes": config.batch_sizes,
        "protocol": (f"{config.warmup} warm-up + {config.iterations} timed iterations per batch size"
                     + (f" (at least {config.duration_s:g} s)" if config.duration_s else "")
                     + ", host latency by perf_counter_ns, GPU compute by CUDA events"),
        "environment": env, "rows": rows, "skipped": skipped,
    }
    result.update(int8_precision_plan(request.layout))
    result["gates"] = evaluate_gates(result, config, tolerances)
    result["files"] = {k: str(v) for k, v in write_report(result, request.layout, request.out_dir).items()}
    return result


def bench_stage(config: RunConfig, layout: RunLayout, console: Console, resume: bool = True) -> StageResult:
    """The bench stage of `kd2trt run`; its gates and report files are recorded in the stage manifest."""
    bench = config.bench_config()
    result = run_bench(BenchRequest(layout.root, engines_dir=layout.engines_dir), bench, console,
                       ParityTolerances.of(config.export, bench))
    failed = sum(not g["passed"] for g in result["gates"])
    text = f"{len(result['rows'])} rows" + (f", {failed} gate(s) failed" if failed else "")
    return StageResult([Path(p) for p in result["files"].values()], text, report=result,
                       record={"gates": result["gates"], "files": result["files"]})
