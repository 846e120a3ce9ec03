"""The engines stage: the exported model → FP32/FP16/INT8 TensorRT engines, where TensorRT and a GPU are.

Shared by `kd2trt export` (after the host-side steps) and `kd2trt run`. Without TensorRT or a CUDA device it
builds nothing and says why, and which command to run on the target.

What is built from is explicit (:func:`resolve_sources`): the FP32 ONNX graph `kd2trt export` wrote (its FP16,
Q/DQ and calibration-cache siblings are found beside it), the model name used in the engine file names, and
the checkpoint that gives the input size and, for live INT8 calibration, the data. The defaults are the
`kd2trt run` layout: `<run_dir>/student.onnx` and `<run_dir>/student.pt`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd2trt.errors import Kd2trtError
from kd2trt.layout import ModelFiles, RunLayout, engine_filename, sidecar, slug
from kd2trt.results import StageResult
from kd2trt.trt.capabilities import TrtCapabilities
from kd2trt.trt.plan import Artifacts, implicit_int8_source, plan_precision
from kd2trt.trt.wiring import BuildSettings, DeviceFacts, GraphInput, plan_build

if TYPE_CHECKING:
    from rich.console import Console

    from kd2trt.config import BuildConfig, RunConfig

__all__ = ["EngineJob", "EngineSources", "build_engines", "engine_build_options", "engines_stage", "plan_engines",
           "precisions_to_build", "read_graph_input", "resolve_sources", "target_command"]

DEFAULT_MODEL = "student"
CALIBRATION_BATCH = 32  # images per live-calibration batch (the calibration profile's fixed shape)


def target_command(checkpoint: Path) -> str:
    """What to run where TensorRT is: the NVIDIA container (x86) or the Jetson, from this run's files."""
    return (f"docker run --gpus all -v $PWD/runs:/workspace/kd2trt/runs -v $PWD/engines:/workspace/kd2trt/engines "
            f"kd2trt:x86 kd2trt export {checkpoint} --fp16 --int8 (on a Jetson: --runtime nvidia, "
            "kd2trt:jetson; see docker/README.md)")


@dataclass(frozen=True)
class EngineSources:
    """What the engines are built from."""

    onnx_path: Path  # the FP32 graph <stem>.onnx; <stem>.fp16.onnx, <stem>.int8.onnx, caches beside it
    model: str  # the model part of the engine file names (<model>-<precision>-sm<cc>-trt<version>.engine)
    checkpoint: Path  # input C,H,W and, for live INT8 calibration, the data

    @property
    def files(self) -> ModelFiles:
        return ModelFiles.of_onnx(self.onnx_path)

    def calib_cache(self, version: Any) -> Path:
        """Where `kd2trt export` writes (and live calibration saves) the cache for TensorRT ``version``."""
        return self.files.calib_cache(version)


def resolve_sources(run_dir: Path, onnx_path: Path | None = None, model: str | None = None,
                    checkpoint: Path | None = None) -> EngineSources:
    """The engines' sources, each given by the caller or defaulted from the one before it (pure: no file access).

    ``onnx_path`` defaults to ``<run_dir>/student.onnx``; ``model`` to the ONNX's stem (``student``);
    ``checkpoint`` to ``<stem>.pt`` beside the ONNX (where `kd2trt export` writes by default).
    """
    onnx_path = Path(onnx_path) if onnx_path is not None else RunLayout(Path(run_dir)).model(DEFAULT_MODEL).onnx()
    files = ModelFiles.of_onnx(onnx_path)
    if model is not None:
        slug(model)  # a name that cannot be part of a file name fails now, not after the first build
    return EngineSources(onnx_path, model if model is not None else files.stem,
                         Path(checkpoint) if checkpoint is not None else files.checkpoint)


def precisions_to_build(export: Any) -> list[str]:
    """FP32 always (the reference), then FP16 and INT8 as the recipe's export section asks."""
    return ["fp32"] + (["fp16"] if export.fp16 else []) + (["int8"] if export.int8 else [])


def engine_build_options(precision: str, build: BuildConfig) -> BuildConfig:
    """The recipe's build section as it applies to one precision's engine.

    DLA runs FP16 and INT8 only, so ``build.dla_core`` (and its GPU fallback) applies to those builds; the
    FP32 engine, always built as the reference, is built for the GPU.
    """
    on_dla = build.dla_core is not None and precision != "fp32"
    if build.dla_core is not None and not on_dla:
        return build.model_copy(update={"dla_core": None})
    return build


@dataclass(frozen=True)
class EngineJob:
    """One engine the stage builds: from which graph, to which file, with which settings."""

    precision: str
    onnx_path: Path
    engine_path: Path
    settings: BuildSettings


def plan_engines(config: RunConfig, caps: TrtCapabilities, device: DeviceFacts, sources: EngineSources,
                 artifacts: Artifacts, graph_input: GraphInput, input_chw: tuple[int, int, int] | None,
                 engines_dir: Path, high_precision: Sequence[str] = ()) -> list[EngineJob]:
    """Every engine of the stage, planned and checked before the first build (pure: no TensorRT, no files).

    This is the stage's whole composition -- precisions from the export section, a precision plan per
    precision, the recipe's build options per precision (:func:`engine_build_options`), the
    :class:`~kd2trt.trt.wiring.BuildSettings` and the engine file name -- and :func:`build_engines` only carries
    it out, so what the tests plan is what the stage builds. ``high_precision``: the layers an INT8 budget
    keeps out of INT8 (the calibration cache's manifest); implicit INT8 pins them to FP32, as the Q/DQ graph,
    which has no Q/DQ on them, computes them.
    """
    jobs = []
    for precision in precisions_to_build(config.export):
        plan = plan_precision(caps, precision, config.build.int8_path, artifacts.kinds, has_calibration_data=True,
                              other_caches=artifacts.other_caches)
        pins = [(layer, "fp32") for layer in high_precision] if plan.quantization == "implicit" else []
        settings = plan_build(plan, engine_build_options(precision, config.build), caps, device, graph_input,
                              input_chw=input_chw, calibration_batch=CALIBRATION_BATCH, layer_precisions=pins)
        target = Path(engines_dir) / engine_filename(sources.model, precision, device.compute_capability,
                                                     caps.version)
        jobs.append(EngineJob(precision, implicit_int8_source(plan, artifacts.paths), target, settings))
    return jobs


def write_trtexec_commands(config: RunConfig, sources: EngineSources) -> Path | None:
    """`<stem>.trtexec.txt`: for each target TensorRT of the export section, the trtexec lines that build the
    engines this stage would build there (kd2trt's own plan); None when the ONNX graph is not there yet."""
    from kd2trt.artifacts import atomic_write_text
    from kd2trt.targets import parse_target
    from kd2trt.trt.plan import discover_artifacts
    from kd2trt.trt.trtexec import release_capabilities, trtexec_command

    if not sources.onnx_path.is_file():
        return None
    chw = _input_chw(sources.checkpoint) if sources.checkpoint.is_file() else None
    graph = read_graph_input(sources.onnx_path)
    chw = chw or tuple(graph.shape[1:])
    build = config.build
    lines = [f"# trtexec builds of {sources.onnx_path.name} with kd2trt's own precision plan; run them in this "
             "directory (file names are relative to it)"]
    for text in config.export.trt_versions:
        version = parse_target(text).version
        artifacts = discover_artifacts(sources.onnx_path, version)
        kept = high_precision_layers(artifacts)
        lines.append(f"# TensorRT {version}")
        for precision in precisions_to_build(config.export):
            try:
                plan = plan_precision(release_capabilities(version), precision, build.int8_path, artifacts.kinds)
            except Kd2trtError as exc:
                lines.append(f"# {precision}: {exc}")
                continue
            lines.append(trtexec_command(plan, sources.files, version, chw,  # type: ignore[arg-type]
                                         (build.min_batch, build.opt_batch or build.max_batch, build.max_batch),
                                         input_name=graph.name, workspace_mb=build.workspace_mb or 512,
                                         high_precision=kept, model=sources.model))
    path = sources.files.trtexec_commands
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def high_precision_layers(artifacts: Artifacts) -> list[str]:
    """The layers the calibration cache's manifest says an INT8 budget keeps in high precision (none without
    a cache or a manifest: a cache copied alone carries no such list)."""
    cache = artifacts.paths.get("calib_cache")
    if cache is None or not sidecar(cache).is_file():
        return []
    from kd2trt.onnx.calib_cache import read_cache_manifest

    return list(read_cache_manifest(sidecar(cache)).high_precision_layers)


def read_graph_input(onnx_path: Path) -> GraphInput:
    """The ONNX graph's single input (name, shape with ``-1`` for symbolic or unknown axes)."""
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as exc:  # a truncated or foreign file
        raise Kd2trtError(f"{onnx_path}: cannot read the ONNX graph ({exc}); re-export it") from None
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise Kd2trtError(f"{onnx_path} has {len(inputs)} inputs; kd2trt builds models with one image input")
    dims = inputs[0].type.tensor_type.shape.dim
    return GraphInput(inputs[0].name, tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                                            for d in dims))


def build_engines(config: RunConfig, run_dir: Path, console: Console, *, onnx_path: Path | None = None,
                  model: str | None = None, checkpoint: Path | None = None,
                  engines_dir: Path | None = None) -> StageResult:
    """Build the engines into ``engines_dir``, by default the run's (:attr:`kd2trt.layout.RunLayout.engines_dir`).

    ``onnx_path``, ``model`` and ``checkpoint``: what to build from (:func:`resolve_sources`; the defaults are
    ``<run_dir>/student.onnx``, its stem and ``<stem>.pt`` beside it). What is built is
    :func:`plan_engines`'s list, all of it planned and checked before the first build.
    """
    from kd2trt.trt.capabilities import probe_environment

    if not config.build.engines:
        return StageResult.skipped("build.engines is false")
    sources = resolve_sources(run_dir, onnx_path, model, checkpoint)
    caps, reason = probe_environment()
    if caps is None:
        where = write_trtexec_commands(config, sources)
        also = f"; without kd2trt there (JetPack 5): the trtexec commands in {where}" if where else ""
        return StageResult.skipped(f"{reason}. On the target: {target_command(sources.checkpoint)}{also}")
    import tensorrt as trt

    from kd2trt.trt import builder, cuda_memory
    from kd2trt.trt.calibrator import make_calibrator
    from kd2trt.trt.jetson import detect_jetson
    from kd2trt.trt.plan import discover_artifacts

    if not sources.onnx_path.is_file():
        raise Kd2trtError(f"{sources.onnx_path}: not found; run `kd2trt export {sources.checkpoint}` first")
    gpu = cuda_memory.device_info()
    device = DeviceFacts(gpu.name, gpu.compute_capability, on_jetson=detect_jetson(run=None) is not None)
    artifacts = discover_artifacts(sources.onnx_path, caps.version)
    jobs = plan_engines(config, caps, device, sources, artifacts, read_graph_input(sources.onnx_path),
                        _input_chw(sources.checkpoint), RunLayout(Path(run_dir), engines_dir).engines_dir,
                        high_precision_layers(artifacts))
    outputs: list[Path] = []
    summaries: list[str] = []
    for job in jobs:
        plan = job.settings.plan
        calibrator = None
        if job.settings.int8_calibrator:
            batches = (None if plan.calibration_source == "cache"
                       else _calibration_batches(config, sources.checkpoint, console))
            calibrator = make_calibrator(trt, config.export.calib_method, batches, sources.calib_cache(caps.version),
                                         batch_size=CALIBRATION_BATCH, input_name=job.settings.input_name,
                                         input_chw=job.settings.profile.chw)
        console.print(f"TensorRT {caps.version}: building {job.engine_path.name} ({plan.reason})")
        manifest = builder.build_engine(job.onnx_path, job.engine_path, job.settings, calibrator=calibrator)
        outputs.append(job.engine_path)
        summaries.append(f"{job.precision} {manifest.build_seconds:.0f}s")
    return StageResult(outputs, f"{len(outputs)} engines on {device.name} ({', '.join(summaries)})")


def engines_stage(config: RunConfig, layout: RunLayout, console: Console, resume: bool = True) -> StageResult:
    """The engines stage of `kd2trt run`: the student's engines into the run's engines directory."""
    return build_engines(config, layout.root, console, onnx_path=layout.model("student").onnx(), model="student",
                         checkpoint=layout.checkpoint("student"), engines_dir=layout.engines_dir)


def _input_chw(checkpoint: Path) -> tuple[int, int, int]:
    from kd2trt.distill.checkpoint import preprocessing_of, read_checkpoint

    prep = preprocessing_of(read_checkpoint(checkpoint))
    return prep.channels, prep.image_size, prep.image_size


def _calibration_batches(config: RunConfig, checkpoint: Path, console: Console) -> Any:
    """Live calibration (no cache for this TensorRT yet): the same stratified set `kd2trt export` uses."""
    from kd2trt.distill.checkpoint import read_checkpoint
    from kd2trt.onnx.stage import calibration_set_for

    return calibration_set_for(read_checkpoint(checkpoint), config.export).batches(CALIBRATION_BATCH)
