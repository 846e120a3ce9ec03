"""Distillation-aware QAT (`kd2trt export --int8 --qat-epochs N`): the Q/DQ graph and the calibration cache of the
fine-tuned student compute what the fake-quant PyTorch model trained, and QAT recovers accuracy by distillation."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from onnxruntime.quantization.calibrate import TensorData, TensorsData
from rich.console import Console

from kd2trt.config import ExportConfig, load_config
from kd2trt.distill.qat import QatSettings, require_modelopt
from kd2trt.errors import Kd2trtError
from kd2trt.onnx import calibration
from kd2trt.onnx.qat import QatInputs, activation_map, check_map, module_of_node, run_qat
from kd2trt.onnx.qdq import quantize_qdq
from kd2trt.onnx.runtime import OrtRunner

pytest.importorskip("modelopt.torch.quantization", reason="QAT needs nvidia-modelopt (pip install 'kd2trt[qat]')")


@pytest.fixture(scope="module")
def tiny(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny distilled student and teacher, the student's ONNX, its splits and entropy PTQ ranges."""
    from kd2trt.distill.checkpoint import data_of, model_from_checkpoint, read_checkpoint
    from kd2trt.onnx.export import export_onnx

    checkpoint = read_checkpoint(tiny_run / "student.pt")
    data = data_of(checkpoint)
    student = model_from_checkpoint(checkpoint)
    teacher = model_from_checkpoint(read_checkpoint(tiny_run / "teacher.pt", ("teacher",)))

    def arrays(split):
        return torch.stack([split[i][0] for i in range(len(split))]).numpy(), split.labels.numpy()

    val, test = arrays(data.val), arrays(data.test)
    out = tmp_path_factory.mktemp("qat")
    path = export_onnx(student, torch.from_numpy(val[0][:2]), out / "student.onnx")
    calib = calibration.calibration_set_from_split(data.train, 256, 0, "tiny train")
    ranges = calibration.collect_ranges(path, calib, "entropy")
    return {"student": student, "teacher": teacher, "data": data, "val": val, "test": test, "onnx": path,
            "calib": calib, "ranges": ranges, "dir": out}


def _inputs(tiny: dict) -> QatInputs:
    return QatInputs(tiny["student"], tiny["teacher"], tiny["data"].train, tiny["data"].val, tiny["val"],
                     tiny["test"], tiny["calib"], "entropy")


def _export_plain(target: Path):
    from kd2trt.onnx.export import export_onnx

    def export(model: torch.nn.Module) -> Path:
        return export_onnx(model, torch.zeros(2, 1, 8, 8), target)
    return export


def _squeezed(ranges: TensorsData, factor: float) -> TensorsData:
    data = {name: TensorData(lowest=np.float32(np.asarray(d.range_value[0]) * factor),
                             highest=np.float32(np.asarray(d.range_value[1]) * factor))
            for name, d in ranges.data.items()}
    return TensorsData(ranges.calibration_method, data)


def test_the_map_follows_the_placement_and_is_checked_by_value(tiny) -> None:
    assert module_of_node("/stages/stages.1/stages.1.0/stages.1.0.0/Conv") == "stages.1.0.0"
    assert module_of_node("/Flatten") is None
    assert module_of_node("/features/features.1/block/block.0/block.0.0/Conv") == "features.1.block.0.0"
    assert module_of_node("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    mapping = activation_map(onnx.load(str(tiny["onnx"])))
    assert sorted(mapping.modules) == ["classifier", "pool", "stages.0.0.0", "stages.1.0.0"]
    assert mapping.modules["stages.0.0.0"] == "input" and mapping.unsimulated == []
    check_map(mapping, tiny["student"], tiny["onnx"], tiny["val"][0][:8])
    mapping.modules["pool"], mapping.modules["classifier"] = mapping.modules["classifier"], mapping.modules["pool"]
    with pytest.raises(Kd2trtError, match="names and values disagree"):
        check_map(mapping, tiny["student"], tiny["onnx"], tiny["val"][0][:8])


@pytest.fixture(scope="module")
def outcome(tiny):
    """One QAT epoch from the real entropy PTQ ranges (the tiny student is undertrained: KD improves it)."""
    settings = QatSettings(epochs=1, lr=1e-2)
    return run_qat(_inputs(tiny), tiny["onnx"], tiny["ranges"], [], settings,
                   _export_plain(tiny["dir"] / "student.qat.onnx"))


def test_the_qdq_graph_of_the_qat_model_computes_what_the_fake_quant_model_computes(tiny, outcome, tmp_path
                                                                                    ) -> None:
    """The core correctness test: ONNX Runtime at ORT_ENABLE_BASIC (TensorRT's arithmetic) on the exported Q/DQ
    graph vs the fake-quant PyTorch model QAT selected, on the same images."""
    assert outcome.record["best_epoch"] == 1  # fine-tuned weights, not the PTQ start
    qdq = quantize_qdq(outcome.onnx_path, tmp_path / "qat.int8.onnx", outcome.ranges)
    images = tiny["test"][0]
    with OrtRunner(qdq, fake_quant=True) as runner:
        graph = runner.infer_many(images)
    with torch.no_grad():
        torch_logits = outcome.model.eval()(torch.from_numpy(images)).numpy()
    diff = np.abs(graph - torch_logits)
    # The same arithmetic: most logits equal to float rounding. The graph folds BN into the conv and sums in
    # another order, so now and then an activation lands on the other side of a rounding boundary (measured:
    # 0.06 % of the second conv's inputs, one quantisation step each), hence the looser maximum.
    assert np.median(diff) < 1e-5 and diff.max() < 2e-2 * np.abs(torch_logits).max()
    assert (graph.argmax(1) == torch_logits.argmax(1)).mean() >= 0.99
    # and the fine-tuned weights are really in the graph: the plain FP32 graph is not the distilled one
    with OrtRunner(tiny["onnx"]) as before, OrtRunner(outcome.onnx_path) as after:
        assert np.abs(before.infer_many(images) - after.infer_many(images)).max() > 1e-3


def test_the_ranges_written_are_the_ones_qat_trained_with(tiny, outcome, tmp_path) -> None:
    """Learned amax in, per tensor: the quantisers' amax = the ranges handed on = the Q/DQ scales · 127; not a
    recalibration of the fine-tuned graph (which differs), and the PTQ starting point (ModelOpt keeps INT8
    amax fixed)."""
    from kd2trt.distill.qat import learned_amax

    by_module = learned_amax(outcome.model)
    mapping = activation_map(onnx.load(str(outcome.onnx_path)))
    assert outcome.learned == {tensor: by_module[m] for m, tensor in mapping.modules.items()}
    start = calibration.amax_of(tiny["ranges"])
    final = calibration.amax_of(outcome.ranges)
    recalibrated = calibration.amax_of(calibration.collect_ranges(outcome.onnx_path, tiny["calib"], "entropy"))
    for tensor, amax in outcome.learned.items():
        assert final[tensor] == pytest.approx(amax, rel=1e-6) == pytest.approx(start[tensor], rel=1e-6)
    assert any(abs(recalibrated[t] - a) > 1e-3 * a for t, a in outcome.learned.items())
    qdq = onnx.load(str(quantize_qdq(outcome.onnx_path, tmp_path / "q.onnx", outcome.ranges)))
    scales = {i.name: float(numpy_helper.to_array(i)) for i in qdq.graph.initializer if i.name.endswith("_scale")
              and numpy_helper.to_array(i).ndim == 0}
    quantized = {n.input[0]: scales[n.input[1]] for n in qdq.graph.node if n.op_type == "QuantizeLinear"
                 and n.input[1] in scales}
    for tensor, amax in outcome.learned.items():
        assert quantized[tensor] == pytest.approx(np.float32(amax) / np.float32(127), rel=1e-6), tensor


def test_qat_recovers_by_distillation_what_bad_ranges_cost(tiny) -> None:
    """Ranges 4x too narrow cost validation accuracy; two QAT epochs on the teacher's soft labels win it back
    (the weights adapt to the clipping), measured on the exported Q/DQ graph, and the test split only reports."""
    bad = _squeezed(tiny["ranges"], 0.25)
    settings = QatSettings(epochs=2, lr=1e-2)
    result = run_qat(_inputs(tiny), tiny["onnx"], bad, [], settings,
                     _export_plain(tiny["dir"] / "bad.qat.onnx"))
    record = result.record
    assert record["val_ptq_drop_points"] > 5
    assert record["best_epoch"] > 0 and record["val_top1_after"] > record["val_top1_before"] + 3
    assert record["val_qat_int8_top1"] > record["val_ptq_int8_top1"] + 3
    assert {"test_ptq_drop_points", "test_qat_drop_points"} <= set(record)
    assert [h["epoch"] for h in record["history"]] == [0, 1, 2]


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    for name in ("student.pt", "teacher.pt"):
        shutil.copy(tiny_run / name, tmp_path / name)
    return tmp_path


def _quiet() -> Console:
    return Console(file=open(os.devnull, "w"))


def test_export_with_an_unmet_budget_runs_qat_and_both_int8_paths_use_its_ranges(run_copy, monkeypatch) -> None:
    """Budget unmet by method + fallback, --qat-epochs 1: QAT runs next; the cache (implicit INT8) and the
    Q/DQ graph come from student.qat.onnx and the ranges trained with; summary, manifest and preview say so."""
    from kd2trt.onnx import stage
    from kd2trt.onnx.calib_cache import read_cache, read_cache_manifest
    from kd2trt.onnx.int8_budget import BudgetResult

    def unmet(fp32_path, ranges_of, methods, images, labels, budget_points, progress=None):
        return BudgetResult(methods[0], ranges_of(methods[0]), 100.0, 50.0, budget_points)

    monkeypatch.setattr(stage, "search_budget", unmet)
    config = ExportConfig(teacher=False, fp16=False, calib_images=256, int8_budget=0.5, qat_epochs=1, qat_lr=1e-3)
    summary = stage.run_export(stage.ExportRequest(run_copy / "student.pt"), config, _quiet())
    qat = summary["int8"]["qat"]
    assert summary["int8"]["budget"]["met"] is False and "met_after_qat" in summary["int8"]["budget"]
    qat_onnx = run_copy / "student.qat.onnx"
    assert qat["fp32_onnx"] == str(qat_onnx) and summary["int8"]["source_onnx"] == str(qat_onnx)
    assert {"epochs", "lr", "val_top1_before", "val_top1_after", "val_qat_drop_points",
            "test_qat_drop_points"} <= set(qat)
    cache_path = Path(summary["int8"]["caches"][0]["path"])
    amax = read_cache(cache_path).amaxes()
    for tensor, value in qat["ranges_trained"].items():
        assert amax[tensor] == pytest.approx(value, rel=1e-6), tensor
    manifest = read_cache_manifest(cache_path.with_name(cache_path.name + ".json"))
    assert manifest.source_onnx == "student.qat.onnx" and manifest.qat["epochs"] == 1
    from kd2trt.artifacts import sha256_file
    assert manifest.source_onnx_sha256 == sha256_file(qat_onnx)
    preview = summary["preview"]
    assert preview["qat"]["epochs"] == 1 and "student QAT FP32 (ONNX Runtime)" in preview["top1"]


def test_an_unmet_budget_without_qat_warns_naming_the_flag(run_copy, monkeypatch) -> None:
    import io

    from kd2trt.onnx import stage
    from kd2trt.onnx.int8_budget import BudgetResult

    monkeypatch.setattr(stage, "search_budget", lambda fp32, ranges_of, methods, *a, **k: BudgetResult(
        methods[0], ranges_of(methods[0]), 100.0, 50.0, 0.5))
    (run_copy / "student.qat.onnx").write_bytes(b"stale")
    out = io.StringIO()
    config = ExportConfig(teacher=False, fp16=False, calib_images=256, int8_budget=0.5)
    summary = stage.run_export(stage.ExportRequest(run_copy / "student.pt"), config, Console(file=out, width=400))
    assert "--qat-epochs N (export.qat_epochs)" in out.getvalue()
    assert "qat" not in summary["int8"] and not (run_copy / "student.qat.onnx").exists()


def test_requests_qat_cannot_serve_are_one_line_errors_before_any_file(run_copy, monkeypatch) -> None:
    from kd2trt.onnx import stage

    config = ExportConfig(teacher=False, fp16=False, qat_epochs=1)
    with pytest.raises(Kd2trtError, match="--calib-cache"):
        stage.run_export(stage.ExportRequest(run_copy / "student.pt", calib_cache=run_copy / "x.cache"), config,
                         _quiet())
    (run_copy / "teacher.pt").unlink()
    with pytest.raises(Kd2trtError, match=r"no teacher\.pt beside"):
        stage.run_export(stage.ExportRequest(run_copy / "student.pt"), config, _quiet())
    assert sorted(p.name for p in run_copy.iterdir()) == ["student.pt"]


def test_a_missing_modelopt_is_one_line_naming_the_install(monkeypatch) -> None:
    import sys

    for name in [n for n in sys.modules if n.startswith("modelopt")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "modelopt", None)
    with pytest.raises(Kd2trtError, match=r"pip install 'kd2trt\[qat\]'") as caught:
        require_modelopt()
    assert "\n" not in str(caught.value)


def test_the_recipe_and_the_flags_carry_qat() -> None:
    from kd2trt.cli_flags import EXPORT_FLAGS

    assert {"export.qat_epochs", "export.qat_lr"} <= {flag.key for flag in EXPORT_FLAGS}
    assert load_config(None, {"export.qat_epochs": 2}).export.qat_epochs == 2
    with pytest.raises(Kd2trtError, match="qat_epochs is set but int8 is off"):
        load_config(None, {"export.int8": False, "export.qat_epochs": 2})


def test_implicit_int8_engines_and_trtexec_lines_build_from_the_qat_graph(tmp_path) -> None:
    """The calibration cache of a QAT export holds ranges for student.qat.onnx's weights: implicit INT8 (engines
    stage and trtexec lines) builds from that graph; FP32/FP16 and the Q/DQ path are unchanged."""
    from kd2trt.layout import ModelFiles
    from kd2trt.targets import TrtVersion
    from kd2trt.trt.plan import discover_artifacts, implicit_int8_source, plan_precision
    from kd2trt.trt.trtexec import release_capabilities, trtexec_command

    files = ModelFiles(tmp_path, "student")
    for path in (files.onnx("fp32"), files.onnx("fp16"), files.onnx("int8"), files.calib_cache("10.3.0")):
        path.write_bytes(b"x")
    version = TrtVersion(10, 3, 0)
    caps = release_capabilities(version)

    def sources() -> dict[str, Path]:
        artifacts = discover_artifacts(files.onnx("fp32"), version)
        return {p: implicit_int8_source(plan_precision(caps, p, "auto", artifacts.kinds), artifacts.paths)
                for p in ("fp32", "fp16", "int8")}

    assert sources()["int8"] == files.onnx("fp32")
    files.qat_onnx.write_bytes(b"x")
    # TensorRT 10.3: FP16 by builder flag on the FP32 graph (untouched), INT8 implicit with the cache
    assert sources() == {"fp32": files.onnx("fp32"), "fp16": files.onnx("fp32"), "int8": files.qat_onnx}
    artifacts = discover_artifacts(files.onnx("fp32"), version)
    line = trtexec_command(plan_precision(caps, "int8", "auto", artifacts.kinds), files, version, (1, 8, 8),
                           (1, 8, 32))
    assert "--onnx=student.qat.onnx" in line and "--calib=student.calib-trt10.3.0.cache" in line
    qdq = plan_precision(caps, "int8", "qdq", artifacts.kinds)
    assert implicit_int8_source(qdq, artifacts.paths) == files.onnx("int8")


def test_the_qat_target_is_the_teachers_soft_labels(tiny, monkeypatch) -> None:
    """The loss QAT minimises is kd2trt's KD loss, soft-label term only, on the teacher's own outputs."""
    from torch.utils.data import Subset

    from kd2trt.distill import qat
    from kd2trt.distill.losses import DistillationLoss

    calls: list[tuple[float, torch.Tensor]] = []
    produced: list[torch.Tensor] = []

    class Spy(DistillationLoss):
        def __call__(self, student_logits, teacher_logits, labels, *args, **kwargs):
            calls.append((self.alpha, teacher_logits))
            return super().__call__(student_logits, teacher_logits, labels, *args, **kwargs)

    class Recording(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            produced.append(self.inner(x))
            return produced[-1]

    monkeypatch.setattr(qat, "DistillationLoss", Spy)
    quantized = qat.fake_quant_model(tiny["student"], {"stages.0.0.0": 2.0, "stages.1.0.0": 4.0, "pool": 4.0,
                                                       "classifier": 2.0})
    train = Subset(tiny["data"].train, range(64))
    qat.train_qat(quantized, Recording(tiny["teacher"]), train, Subset(tiny["data"].val, range(32)),
                  QatSettings(epochs=1, lr=1e-3, batch_size=32))
    assert len(calls) == 2 and all(alpha == 1.0 for alpha, _ in calls)
    assert all(any(target is out for out in produced) for _, target in calls)


def test_every_conv_of_a_torchvision_model_maps_to_its_own_module(tmp_path: Path) -> None:
    """MobileNetV3's blocks scope their convs relative to the block: each must still name its own module."""
    from kd2trt.models import build_model, model_spec
    from kd2trt.onnx.export import export_onnx

    model = build_model(model_spec("mobilenet_v3_small", 3, 10)).eval()
    path = export_onnx(model, torch.zeros(2, 3, 32, 32), tmp_path / "mnv3.onnx")
    convs = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    modules = [module_of_node(name) for name in convs]
    assert len(set(modules)) == len(convs) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert all(isinstance(model.get_submodule(m), torch.nn.Conv2d) for m in modules)


class _ScriptableLinear(torch.nn.Linear):
    """Like timm's `Linear` (every timm classifier head): a Linear subclass with its own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight, self.bias)


def test_a_linear_subclass_with_its_own_forward_is_fake_quantised_like_a_linear() -> None:
    """ModelOpt skips subclasses that override forward; kd2trt registers them with their base's quantised class,
    so the subclass computes exactly what a quantised nn.Linear with the same weights and amax computes."""
    from kd2trt.distill.qat import fake_quant_model

    torch.manual_seed(0)
    subclassed = torch.nn.Sequential(torch.nn.Flatten(), _ScriptableLinear(16, 4)).eval()
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    plain.load_state_dict(subclassed.state_dict())
    x = torch.randn(8, 16) * 2
    with torch.no_grad():
        got = fake_quant_model(subclassed, {"1": 1.5})(x)
        expected = fake_quant_model(plain, {"1": 1.5})(x)
        assert torch.equal(got, expected)
        assert not torch.allclose(got, subclassed(x), atol=1e-3)  # quantised: not the FP32 answer


class _Residual(torch.nn.Module):
    """A ResNet basic block with a downsample branch: the Add's residual input is the folded Conv+BN output."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU())
        self.conv1, self.bn1 = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8)
        self.conv2, self.bn2 = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.downsample = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1, stride=2), torch.nn.BatchNorm2d(8))
        self.pool, self.flat, self.fc = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(self.flat(self.pool(torch.relu(out + self.downsample(x)))))


def test_a_residual_addend_is_fake_quantised_on_the_module_that_outputs_it(tmp_path: Path) -> None:
    """The downsample branch's output (no module takes it as input) is quantised on `downsample`'s output, found
    by value, and the fake-quant model then computes what the Q/DQ graph computes; without it, it does not."""
    from kd2trt.distill.qat import fake_quant_model
    from kd2trt.onnx.export import export_onnx
    from kd2trt.onnx.qat import resolve_outputs

    torch.manual_seed(0)
    model = _Residual().eval()
    for bn in (model.bn1, model.bn2, model.downsample[1]):  # non-trivial statistics, as after training
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    images = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
    path = export_onnx(model, torch.from_numpy(images[:2]), tmp_path / "residual.onnx")
    graph = onnx.load(str(path))
    mapping = activation_map(graph)
    assert len(mapping.unsimulated) == 1
    resolved = resolve_outputs(mapping, graph, model, path, images[:16])
    assert resolved.outputs == {"downsample": mapping.unsimulated[0]} and resolved.unsimulated == []
    other = _Residual().eval()
    other.load_state_dict(model.state_dict())
    other.downsample[1].running_mean += 1.0  # not the network the graph was exported from: checked by value
    assert resolve_outputs(mapping, graph, other, path, images[:16]).outputs == {}
    ranges = calibration.collect_ranges(path, calibration.CalibrationSet(images, "normal"), "minmax")
    amax = calibration.amax_of(ranges)
    # a range that clips the residual: its quantisation then matters for the answer
    amax[resolved.outputs["downsample"]] *= 0.3
    ranges = calibration.ranges_from_amax(amax, "minmax")
    with OrtRunner(quantize_qdq(path, tmp_path / "residual.int8.onnx", ranges), fake_quant=True) as runner:
        graph_logits = runner.infer_many(images)
    inputs = {m: amax[t] for m, t in resolved.modules.items()}
    with_output = fake_quant_model(model, inputs, {"downsample": amax[resolved.outputs["downsample"]]})
    assert [name for name, _ in with_output.downsample.named_children()] == ["0", "1"]  # the tree is unchanged
    with torch.no_grad():
        simulated = with_output(torch.from_numpy(images)).numpy()
        unsimulated = fake_quant_model(model, inputs)(torch.from_numpy(images)).numpy()
    scale = np.abs(graph_logits).max()
    assert np.median(np.abs(simulated - graph_logits)) < 1e-5 and np.abs(simulated - graph_logits).max() < 2e-2 * scale
    assert np.abs(unsimulated - graph_logits).max() > 5 * np.abs(simulated - graph_logits).max()


def test_the_bench_report_states_qats_outcome_from_its_record(outcome) -> None:
    """The report's QAT line reads the record run_qat writes (its real keys), before → after on both splits."""
    from kd2trt.bench.report import _int8_plan_lines

    # the real record's keys, with four distinct drops so that a swapped split or direction shows
    record = {**outcome.record, "val_ptq_drop_points": 1.0, "val_qat_drop_points": 2.0,
              "test_ptq_drop_points": 3.0, "test_qat_drop_points": 4.0}
    (line,) = [line for line in _int8_plan_lines(None, record) if line]
    assert line.startswith(f"QAT ({record['epochs']} epoch(s), {record['library']}, from entropy ranges)")
    assert (f"validation {record['val_ptq_drop_points']:+.2f} → {record['val_qat_drop_points']:+.2f} points, "
            f"on test {record['test_ptq_drop_points']:+.2f} → {record['test_qat_drop_points']:+.2f} "
            f"(best epoch {record['best_epoch']})") in line
