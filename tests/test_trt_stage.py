"""kd2trt.trt.stage without TensorRT: what is built from, the stage's own plan of every engine, the skip message.

The plan tests call :func:`~kd2trt.trt.stage.plan_engines`, the function the stage itself calls; one test runs
:func:`~kd2trt.trt.stage.build_engines` on the TensorRT API surface of the real 10.3 bindings (tests/trt_surface.py)
with a recording ``build_engine``, so a stage that stopped building what that function plans fails here.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from onnx import TensorProto, helper
from rich.console import Console

from kd2trt.config import BenchConfig, BuildConfig, ExportConfig, RunConfig
from kd2trt.errors import Kd2trtError
from kd2trt.targets import TrtVersion
from kd2trt.trt import cuda_memory
from kd2trt.trt.capabilities import probe, probe_environment
from kd2trt.trt.plan import Artifacts, discover_artifacts
from kd2trt.trt.stage import (
    CALIBRATION_BATCH,
    build_engines,
    plan_engines,
    precisions_to_build,
    read_graph_input,
    resolve_sources,
)
from kd2trt.trt.wiring import DeviceFacts, GraphInput
from tests.trt_surface import surface

AGX_ORIN = probe(surface("10.3.0", defaults={"Builder": {"num_DLA_cores": 2}}))  # JetPack 6.1's TensorRT
ORIN_GPU = DeviceFacts("Orin (nvgpu)", "8.7", on_jetson=True)
X86_GPU = DeviceFacts("NVIDIA L40S", "9.0")
GRAPH = GraphInput("input", (-1, 1, 8, 8))
ARTIFACTS = {"onnx": "student.onnx", "fp16_onnx": "student.fp16.onnx", "qdq_onnx": "student.int8.onnx",
             "calib_cache": "student.calib-trt10.3.0.cache"}

needs_no_gpu = pytest.mark.skipif(cuda_memory.cuda_device_count()[0] > 0, reason="this machine has a CUDA device")


def quiet() -> Console:
    return Console(file=io.StringIO())


# --------------------------------------------------------------------------------------------- the plan


def _config(**build) -> RunConfig:
    bench = BenchConfig(batch_sizes=[1, build.get("max_batch", 32)])
    return RunConfig(export=ExportConfig(fp16=True, int8=True), build=BuildConfig(**build), bench=bench)


def _plan(config: RunConfig, caps=AGX_ORIN, device=ORIN_GPU, tmp: Path = Path("exported"), high_precision=()):
    sources = resolve_sources(tmp, tmp / "student.onnx")
    artifacts = Artifacts({kind: tmp / name for kind, name in ARTIFACTS.items()})
    return plan_engines(config, caps, device, sources, artifacts, GRAPH, (1, 8, 8), tmp / "engines",
                        high_precision)


def test_an_int8_budget_pins_its_layers_on_the_implicit_path_only() -> None:
    kept = ["/stages/stages.0/Conv", "/classifier/Gemm"]
    jobs = _plan(_config(), device=X86_GPU, high_precision=kept)
    pins = {job.precision: job.settings.layer_precisions for job in jobs}
    assert pins == {"fp32": (), "fp16": (), "int8": tuple((layer, "FLOAT") for layer in kept)}
    assert "OBEY_PRECISION_CONSTRAINTS" in jobs[2].settings.builder_flags
    # explicit Q/DQ (11.x): the graph itself has no Q/DQ on those layers, nothing to pin
    strong = _plan(_config(), caps=probe(surface("11.4.0.106")), device=X86_GPU, high_precision=kept)
    assert all(job.settings.layer_precisions == () for job in strong)


def test_dla_core_goes_to_fp16_and_int8_only() -> None:
    """`--dla-core 0` with FP16 and INT8: FP32 (always built, the reference) goes to the GPU."""
    jobs = _plan(_config(dla_core=0, min_batch=8, max_batch=8))  # DLA needs static shapes
    assert [job.precision for job in jobs] == ["fp32", "fp16", "int8"]
    placed = {job.precision: (job.settings.default_device_type, job.settings.dla_core,
                              "GPU_FALLBACK" in job.settings.builder_flags) for job in jobs}
    assert placed == {"fp32": (None, None, False), "fp16": ("DLA", 0, True), "int8": ("DLA", 0, True)}


def test_the_recipe_build_options_reach_every_engine() -> None:
    config = _config(min_batch=2, opt_batch=4, max_batch=16, workspace_mb=256, timing_cache_dir=None,
                     version_compatible=True, hardware_compatible=False)
    for job in _plan(config, device=X86_GPU):
        s = job.settings
        assert (s.profile.min_batch, s.profile.opt_batch, s.profile.max_batch) == (2, 4, 16)
        assert s.memory_pools == (("WORKSPACE", 256 << 20),) and s.timing_cache_path is None
        assert s.version_compatible and s.builder_flags[-1] == "VERSION_COMPATIBLE"
    defaults = _plan(_config(), device=ORIN_GPU)
    assert {job.settings.workspace_mb for job in defaults} == {512}  # the Jetson default
    assert {str(job.settings.timing_cache_path.parent) for job in defaults} == {"engines/timing-cache"}


def test_each_engine_gets_its_graph_flags_and_file() -> None:
    jobs = _plan(_config(), device=X86_GPU)
    assert [(job.onnx_path.name, job.engine_path.name, job.settings.builder_flags) for job in jobs] == [
        ("student.onnx", "student-fp32-sm90-trt10.3.0.engine", ()),
        ("student.onnx", "student-fp16-sm90-trt10.3.0.engine", ("FP16",)),
        ("student.onnx", "student-int8-sm90-trt10.3.0.engine", ("FP16", "INT8")),  # implicit, from the cache
    ]
    int8 = jobs[2].settings
    assert int8.int8_calibrator and int8.calibration_profile.max_batch == CALIBRATION_BATCH
    strong = _plan(_config(), caps=probe(surface("11.4.0.106")), device=X86_GPU)
    assert [(job.onnx_path.name, job.settings.network_flags, job.settings.builder_flags) for job in strong] == [
        ("student.onnx", ("STRONGLY_TYPED",), ()), ("student.fp16.onnx", ("STRONGLY_TYPED",), ()),
        ("student.int8.onnx", ("STRONGLY_TYPED",), ())]


def test_a_bad_combination_fails_before_the_first_build() -> None:
    with pytest.raises(Kd2trtError, match="DLA needs static shapes"):
        _plan(_config(dla_core=0))  # dynamic batch: refused while planning, no engine is half-built


def test_the_stage_builds_what_plan_engines_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """build_engines with TensorRT's surface and a recording build_engine: the stage's settings are the plan's."""
    from kd2trt.trt import builder, capabilities, jetson
    from kd2trt.trt import stage as stage_module

    graph = helper.make_graph([helper.make_node("Flatten", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 64])])
    for name in ("student.onnx", "student.int8.onnx"):
        onnx.save(helper.make_model(graph), tmp_path / name)
    trt = surface("10.3.0", defaults={"Builder": {"num_DLA_cores": 2}})
    caps = probe(trt)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(capabilities, "probe_environment", lambda: (caps, "TensorRT 10.3.0 (surface)"))
    monkeypatch.setattr(cuda_memory, "device_info", lambda index=0: cuda_memory.DeviceInfo(0, "Orin", "8.7", 30000))
    monkeypatch.setattr(jetson, "detect_jetson", lambda **kw: object())
    monkeypatch.setattr(stage_module, "_input_chw", lambda checkpoint: (1, 8, 8))
    built = []

    def record(onnx_path, engine_path, settings, *, calibrator=None):
        built.append((Path(onnx_path), Path(engine_path), settings, calibrator))
        return SimpleNamespace(build_seconds=1.0)

    monkeypatch.setattr(builder, "build_engine", record)
    config = _config(dla_core=0, min_batch=8, max_batch=8, int8_path="qdq")
    outcome = build_engines(config, tmp_path, quiet(), engines_dir=tmp_path / "engines")
    assert outcome.outputs == [engine for _, engine, _, _ in built] and len(built) == 3
    sources = resolve_sources(tmp_path)
    planned = plan_engines(config, caps, DeviceFacts("Orin", "8.7", on_jetson=True), sources,
                           discover_artifacts(sources.onnx_path, caps.version), GraphInput("input", (-1, 1, 8, 8)),
                           (1, 8, 8), tmp_path / "engines")
    assert [(job.onnx_path, job.engine_path, job.settings, None) for job in planned] == built
    assert [s.dla_core for _, _, s, _ in built] == [None, 0, 0]


def test_read_graph_input(tmp_path: Path) -> None:
    value = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", [value],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 32, 32])])
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    assert read_graph_input(tmp_path / "m.onnx") == GraphInput("images", (-1, 3, 32, 32))
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(Kd2trtError, match="cannot read the ONNX graph"):
        read_graph_input(tmp_path / "bad.onnx")


@pytest.mark.parametrize(("fp16", "int8", "expected"), [(False, False, ["fp32"]), (True, False, ["fp32", "fp16"]),
                                                       (False, True, ["fp32", "int8"])])
def test_precisions_to_build(fp16: bool, int8: bool, expected: list[str]) -> None:
    assert precisions_to_build(ExportConfig(fp16=fp16, int8=int8)) == expected


# --------------------------------------------------------------------------------------------- sources


def test_sources_default_to_the_run_layout(tmp_path: Path) -> None:
    sources = resolve_sources(tmp_path / "digits")
    assert sources.onnx_path == tmp_path / "digits" / "student.onnx"
    assert (sources.model, sources.checkpoint) == ("student", tmp_path / "digits" / "student.pt")
    assert sources.calib_cache(TrtVersion(10, 3, 0)) == tmp_path / "digits" / "student.calib-trt10.3.0.cache"


def test_sources_from_the_caller(tmp_path: Path) -> None:
    # `kd2trt export runs/d/teacher.pt --out exported/`: the ONNX is not beside the checkpoint, nor "student".
    sources = resolve_sources(tmp_path / "exported", tmp_path / "exported" / "teacher.onnx",
                              checkpoint=tmp_path / "runs" / "d" / "teacher.pt")
    assert (sources.model, sources.checkpoint) == ("teacher", tmp_path / "runs" / "d" / "teacher.pt")
    assert sources.calib_cache("8.5.2") == tmp_path / "exported" / "teacher.calib-trt8.5.2.cache"
    named = resolve_sources(tmp_path, tmp_path / "teacher.onnx", model="resnet18-kd")
    assert (named.model, named.checkpoint) == ("resnet18-kd", tmp_path / "teacher.pt")


@pytest.mark.parametrize(("onnx", "model", "match"), [
    ("student.int8.onnx", None, r"student\.int8\.onnx is a derived graph; pass the FP32 graph .*student\.onnx"),
    ("student.fp16.onnx", None, r"derived graph; pass the FP32 graph .*student\.onnx"),
    ("student.pt", None, r"student\.pt: not an ONNX graph"),
    ("student.onnx", "///", "cannot be used in a file name"),
])
def test_bad_sources_fail_before_anything_is_built(tmp_path: Path, onnx: str, model: str | None, match: str) -> None:
    with pytest.raises(Kd2trtError, match=match):
        build_engines(RunConfig(), tmp_path, quiet(), onnx_path=tmp_path / onnx, model=model)


# --------------------------------------------------------------------------------------------- without TensorRT


def test_engines_off_is_skipped() -> None:
    config = RunConfig(build=BuildConfig(engines=False))
    outcome = build_engines(config, Path("runs/digits"), quiet())
    assert outcome.outputs == [] and outcome.skipped_reason == "build.engines is false"


@needs_no_gpu
def test_without_a_gpu_the_skip_names_the_checkpoint_to_export_on_the_target(tmp_path: Path) -> None:
    outcome = build_engines(RunConfig(), tmp_path / "digits", quiet())
    assert outcome.outputs == [] and "CUDA device" in outcome.skipped_reason
    assert f"kd2trt export {tmp_path / 'digits' / 'student.pt'} --fp16 --int8" in outcome.skipped_reason
    checkpoint = tmp_path / "runs" / "d" / "teacher.pt"
    outcome = build_engines(RunConfig(), tmp_path / "exported", quiet(),
                            onnx_path=tmp_path / "exported" / "teacher.onnx", checkpoint=checkpoint)
    assert f"kd2trt export {checkpoint} " in outcome.skipped_reason


def test_without_a_gpu_the_skip_writes_trtexec_lines_for_every_target(tmp_path: Path) -> None:
    """JetPack 5 has no kd2trt (Python 3.8): the same plan as trtexec lines, beside the exported graph."""
    import torch
    from torch import nn

    from kd2trt.onnx.export import export_onnx

    if probe_environment()[0] is not None:
        pytest.skip("TensorRT and a GPU are here: the engines are built, not skipped")
    onnx_path = tmp_path / "student.onnx"
    export_onnx(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten()).eval(), torch.zeros(2, 1, 8, 8), onnx_path)
    (tmp_path / "student.calib-trt8.5.2.cache").write_text("TRT-8502-EntropyCalibration2\ninput: 3c010a14\n")
    config = RunConfig(export=ExportConfig(trt_versions=["8.5", "11.0"]))
    outcome = build_engines(config, tmp_path, quiet(), onnx_path=onnx_path)
    text = (tmp_path / "student.trtexec.txt").read_text()
    assert f"the trtexec commands in {tmp_path / 'student.trtexec.txt'}" in outcome.skipped_reason
    assert "--calib=student.calib-trt8.5.2.cache" in text and "--maxShapes=input:32x1x8x8" in text
    assert "# TensorRT 11.0.0" in text and "# int8: <model>.int8.onnx is missing" in text  # no Q/DQ graph here
