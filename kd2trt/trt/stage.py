"""The engines stage: the exported student → FP32/FP16/INT8 TensorRT engines, where TensorRT and a GPU are.

Shared by `kd2trt export` (after the host-side steps) and `kd2trt run`. Without TensorRT or a CUDA device it
builds nothing and says why, and which command to run on the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd2trt.errors import Kd2trtError

if TYPE_CHECKING:
    from rich.console import Console

    from kd2trt.config import RunConfig
    from kd2trt.pipeline import StageOutcome


def target_command(run_dir: Path) -> str:
    """What to run where TensorRT is: the NVIDIA container (x86) or the Jetson, from this run's files."""
    return (f"docker run --gpus all -v $PWD/runs:/workspace/kd2trt/runs -v $PWD/engines:/workspace/kd2trt/engines "
            f"kd2trt:x86 kd2trt export {run_dir}/student.pt --fp16 --int8 (on a Jetson: --runtime nvidia, "
            "kd2trt:jetson; see docker/README.md)")


def build_engines(config: RunConfig, run_dir: Path, console: Console,
                  engines_root: Path = Path("engines")) -> StageOutcome:
    from kd2trt.pipeline import StageOutcome
    from kd2trt.trt.capabilities import probe_environment

    if not config.build.engines:
        return StageOutcome([], "", skipped_reason="build.engines is false")
    caps, reason = probe_environment()
    if caps is None:
        return StageOutcome([], "", skipped_reason=f"{reason}. On the target: {target_command(run_dir)}")
    import tensorrt as trt

    from kd2trt.trt import cuda_memory
    from kd2trt.trt.builder import build_engine
    from kd2trt.trt.calibrator import make_calibrator
    from kd2trt.trt.manifest import engine_path
    from kd2trt.trt.plan import discover_artifacts, plan_precision

    onnx_path = run_dir / "student.onnx"
    if not onnx_path.is_file():
        raise Kd2trtError(f"{onnx_path}: not found; run `kd2trt export {run_dir}/student.pt` first")
    device = cuda_memory.device_info()
    artifacts = discover_artifacts(onnx_path, caps.version)
    build = config.build
    precisions = ["fp32"] + (["fp16"] if config.export.fp16 else []) + (["int8"] if config.export.int8 else [])
    outputs: list[Path] = []
    summaries: list[str] = []
    for precision in precisions:
        plan = plan_precision(caps, precision, build.int8_path, artifacts.kinds, has_calibration_data=True,
                              other_caches=artifacts.other_caches)
        chw = _input_chw(run_dir)
        calibrator = None
        if plan.use_calibrator:
            cache = run_dir / f"student.calib-trt{caps.version}.cache"
            batches = None if plan.calibration_source == "cache" else _calibration_batches(config, run_dir, console)
            calibrator = make_calibrator(trt, config.export.calib_method, batches, cache, batch_size=32,
                                         input_name="input", input_chw=chw)
        target = engine_path(run_dir.name, "student", precision, device.compute_capability, caps.version,
                             root=engines_root)
        console.print(f"TensorRT {caps.version}: building {target.name} ({plan.reason})")
        manifest = build_engine(
            artifacts.paths[plan.onnx_kind], target, plan, calibrator=calibrator, min_batch=build.min_batch,
            opt_batch=build.opt_batch or build.max_batch, max_batch=build.max_batch, input_name="input",
            input_chw=chw, workspace_mb=build.workspace_mb, timing_cache_dir=build.timing_cache_dir,
            dla_core=build.dla_core, gpu_fallback=build.gpu_fallback, version_compatible=build.version_compatible,
            hardware_compatible=build.hardware_compatible)
        outputs.append(target)
        summaries.append(f"{precision} {manifest.build_seconds:.0f}s")
    return StageOutcome(outputs, f"{len(outputs)} engines on {device.name} ({', '.join(summaries)})")


def _input_chw(run_dir: Path) -> tuple[int, int, int]:
    from kd2trt.distill.checkpoint import preprocessing_of, read_checkpoint

    prep = preprocessing_of(read_checkpoint(run_dir / "student.pt", ("student",)))
    return prep.channels, prep.image_size, prep.image_size


def _calibration_batches(config: RunConfig, run_dir: Path, console: Console) -> Any:
    """Live calibration (no cache for this TensorRT yet): the same stratified set `kd2trt export` uses."""
    from kd2trt.onnx.stage import ExportRequest, ExportRun, calibration_set

    run = ExportRun(ExportRequest(run_dir / "student.pt"), config.export, console)
    return calibration_set(run).batches(32)
