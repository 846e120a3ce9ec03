"""The INT8 accuracy budget: method chosen on validation, fewest layers kept in high precision, both INT8 paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnxruntime.quantization.calibrate import TensorData, TensorsData

from kd2trt.metrics import top1
from kd2trt.onnx import calibration
from kd2trt.onnx.export import export_onnx
from kd2trt.onnx.int8_budget import search_budget
from kd2trt.onnx.qdq import quantize_qdq, weighted_nodes
from kd2trt.onnx.runtime import OrtRunner


@pytest.fixture(scope="module")
def model_and_data(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[Path, np.ndarray, np.ndarray]:
    """The tiny distilled student as ONNX, and its validation split."""
    from kd2trt.distill.checkpoint import data_of, model_from_checkpoint, read_checkpoint

    checkpoint = read_checkpoint(tiny_run / "student.pt")
    val = data_of(checkpoint).val
    images = torch.stack([val[i][0] for i in range(len(val))]).numpy()
    path = tmp_path_factory.mktemp("budget") / "model.onnx"
    export_onnx(model_from_checkpoint(checkpoint), torch.from_numpy(images[:2]), path)
    return path, images, val.labels.numpy()


def _squeezed(ranges: TensorsData, factor: float) -> TensorsData:
    """Ranges `factor` times too narrow: activations clip, INT8 loses accuracy (what a bad method does)."""
    data = {name: TensorData(lowest=np.float32(low * factor), highest=np.float32(high * factor))
            for name, (low, high) in ((n, d.range_value) for n, d in ranges.data.items())}
    return TensorsData(ranges.calibration_method, data)


def test_the_best_method_on_validation_is_chosen_and_no_layer_kept_when_within_budget(model_and_data, tmp_path
                                                                                      ) -> None:
    path, images, labels = model_and_data
    good = calibration.collect_ranges(path, calibration.CalibrationSet(images, "random"), "minmax")
    ranges = {"entropy": _squeezed(good, 0.05), "minmax": good}
    result = search_budget(path, ranges.__getitem__, ["entropy", "minmax"], images, labels, budget_points=50.0)
    assert result.method == "minmax" and result.methods_val_top1["minmax"] > result.methods_val_top1["entropy"]
    assert result.met and result.high_precision == [] and result.curve == [
        {"layers": 0, "val_top1": result.methods_val_top1["minmax"]}]


def test_fallback_keeps_the_fewest_sensitive_layers_until_the_budget_is_met(model_and_data, tmp_path) -> None:
    path, images, labels = model_and_data
    good = calibration.collect_ranges(path, calibration.CalibrationSet(images, "random"), "minmax")
    bad = _squeezed(good, 0.02)
    result = search_budget(path, lambda _: bad, ["entropy"], images, labels, budget_points=0.0)
    nodes = weighted_nodes(onnx.load(str(path)))
    fp32 = result.fp32_val_top1
    assert result.met and result.int8_val_top1 >= fp32 and result.methods_val_top1["entropy"] < fp32 - 5
    assert result.high_precision and set(result.high_precision) <= set(nodes)
    assert [point["layers"] for point in result.curve] == list(range(len(result.high_precision) + 1))
    assert result.curve[-1]["val_top1"] >= fp32
    # the most sensitive layer went first, and one layer fewer was not enough
    assert result.high_precision[0] == max(nodes, key=lambda n: result.sensitivity[n])
    assert all(point["val_top1"] < fp32 for point in result.curve[:-1])
    # the Q/DQ graph leaves exactly those layers' inputs unquantised
    out = quantize_qdq(path, tmp_path / "kept.int8.onnx", bad, result.high_precision)
    graph = onnx.load(str(out)).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            fed = producers.get(node.input[0]) == "DequantizeLinear"
            assert fed is (node.name not in result.high_precision), node.name
    with OrtRunner(out, fake_quant=True) as runner:
        assert top1(runner.infer_many(images), labels) == result.int8_val_top1


def test_an_unknown_layer_name_is_an_error(model_and_data, tmp_path) -> None:
    from kd2trt.errors import Kd2trtError

    path, images, _ = model_and_data
    ranges = calibration.collect_ranges(path, calibration.CalibrationSet(images, "random"), "minmax")
    with pytest.raises(Kd2trtError, match="no node named nope"):
        quantize_qdq(path, tmp_path / "x.onnx", ranges, ["nope"])


def test_among_methods_within_budget_the_one_faithful_to_fp32_wins_over_a_lucky_one(model_and_data,
                                                                                     monkeypatch) -> None:
    from kd2trt.onnx import int8_budget
    from kd2trt.onnx.runtime import OrtRunner

    path, images, labels = model_and_data
    with OrtRunner(path) as runner:
        fp32_logits = runner.infer_many(images)
    wrong = np.flatnonzero(fp32_logits.argmax(1) != labels)
    right = np.flatnonzero(fp32_logits.argmax(1) == labels)
    assert len(wrong) >= 2
    lucky = fp32_logits.copy()  # two FP32 errors fixed, one FP32 answer broken: more accurate, less faithful
    for i in wrong[:2]:
        lucky[i] = np.eye(lucky.shape[1])[labels[i]] * 100.0
    lucky[right[0]] = np.eye(lucky.shape[1])[(labels[right[0]] + 1) % lucky.shape[1]] * 100.0
    outputs = {"entropy": lucky, "minmax": fp32_logits}
    monkeypatch.setattr(int8_budget, "_qdq_logits", lambda _p, ranges, _hp, _images, _s: outputs[ranges])
    result = search_budget(path, lambda method: method, ["entropy", "minmax"], images, labels, budget_points=0.5)
    assert result.methods_val_top1["entropy"] > result.methods_val_top1["minmax"] == result.fp32_val_top1
    assert result.methods_val_agreement["minmax"] == 100.0 > result.methods_val_agreement["entropy"]
    assert result.method == "minmax" and result.met
    # over budget everywhere: the most accurate method, then the fallback
    result = search_budget(path, lambda method: method, ["minmax", "entropy"], images, labels, budget_points=-1.0)
    assert result.method == "entropy"


def test_a_large_int8_drop_without_a_budget_warns_naming_the_flag(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    """Over 1 point lost and no budget: a warning (console and summary) names --int8-budget; with a budget, or
    a small drop, none."""
    import io
    import shutil

    from rich.console import Console

    from kd2trt.config import ExportConfig
    from kd2trt.onnx import stage

    shutil.copy(tiny_run / "student.pt", tmp_path / "student.pt")
    real_preview = stage.int8_preview

    def preview_with_drop(drop: float):
        def fake(*args, **kwargs):
            return {**real_preview(*args, **kwargs), "int8_drop_points": drop}
        return fake

    def export(drop: float, **extra) -> tuple[dict, str]:
        monkeypatch.setattr(stage, "int8_preview", preview_with_drop(drop))
        out = io.StringIO()
        summary = stage.run_export(stage.ExportRequest(tmp_path / "student.pt", force=True),
                                   ExportConfig(teacher=False, fp16=False, calib_images=64, **extra),
                                   Console(file=out, width=400))
        return summary, out.getvalue()

    summary, printed = export(17.7)
    assert summary["warnings"] == [
        "INT8 Q/DQ loses 17.70 top-1 points vs FP32 on the test split with entropy calibration; --int8-budget 0.5 "
        "(export.int8_budget) chooses the calibration method and any layers to keep in higher precision on the "
        "validation split"]
    assert "warning: INT8 Q/DQ loses 17.70" in printed
    for drop, extra in ((0.9, {}), (17.7, {"int8_budget": 0.5})):
        summary, printed = export(drop, **extra)
        assert "warnings" not in summary and "--int8-budget" not in printed
