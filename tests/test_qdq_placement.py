"""Q/DQ placement as NVIDIA's TensorRT guide recommends (kd2trt.onnx.qdq), checked on small real graphs.

A plain Conv-ReLU student and a residual block with MaxPool/Add/GlobalAveragePool, exported with
kd2trt's exporter, calibrated with kd2trt's calibration and quantised with `quantize_qdq`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from kd2trt.onnx import calibration
from kd2trt.onnx.calib_cache import CalibrationCache
from kd2trt.onnx.export import export_onnx, opset_of
from kd2trt.onnx.qdq import quantize_qdq
from kd2trt.targets import TrtVersion

WEIGHTED = ("Conv", "Gemm")


class Plain(nn.Module):
    """The shape of kd2trt's students: Conv-BN-ReLU stages, global pool, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Residual(nn.Module):
    """stem → MaxPool → identity block (Add) → downsample block (Add of two Conv branches) → pool → head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.a = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                               nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.b = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
                               nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2), nn.BatchNorm2d(32))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        x = torch.relu(self.a(x) + x)
        x = torch.relu(self.b(x) + self.down(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _build(module: nn.Module, shape: tuple[int, int, int], out: Path) -> dict:
    torch.manual_seed(0)
    for m in module.modules():  # non-trivial BN statistics so the folded graph is not an identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    module.eval()
    fp32 = export_onnx(module, torch.randn(2, *shape), out / "model.onnx")
    images = np.random.default_rng(0).standard_normal((48, *shape)).astype(np.float32)
    ranges = calibration.collect_ranges(fp32, calibration.CalibrationSet(images, "normal"), "minmax", batch_size=16)
    qdq = quantize_qdq(fp32, out / "model.int8.onnx", ranges)
    return {"fp32": onnx.load(str(fp32)), "qdq": onnx.load(str(qdq)), "ranges": ranges, "images": images,
            "paths": (fp32, qdq)}


@pytest.fixture(scope="module", params=["plain", "residual"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp(request.param)
    if request.param == "plain":
        return _build(Plain(), (1, 8, 8), out)
    return _build(Residual(), (3, 16, 16), out)


def _graph(model: onnx.ModelProto) -> tuple[dict, dict, dict]:
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return producers, consumers, inits


def _quantized_source(name: str, producers: dict) -> str | None:
    """The float tensor behind `name` when `name` is a DequantizeLinear(QuantizeLinear(tensor)), else None."""
    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producers.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]


def test_no_qdq_on_graph_outputs(built: dict) -> None:
    qdq = built["qdq"]
    producers, _, _ = _graph(qdq)
    for output in qdq.graph.output:
        assert producers[output.name].op_type not in ("QuantizeLinear", "DequantizeLinear"), output.name
        assert producers[output.name].op_type == "Gemm"  # the logits come straight from the head, in FP32


def test_no_qdq_on_weighted_outputs_feeding_relu(built: dict) -> None:
    fp32_producers, fp32_consumers, _ = _graph(built["fp32"])
    conv_into_relu = {name for name, node in fp32_producers.items() if node.op_type in WEIGHTED
                      and all(c.op_type == "Relu" for c in fp32_consumers.get(name, []))}
    assert conv_into_relu  # the graphs do have Conv → ReLU
    quantized = {n.input[0] for n in built["qdq"].graph.node if n.op_type == "QuantizeLinear"}
    assert not conv_into_relu & quantized
    # and the ReLU reads the Conv output itself, not a DequantizeLinear of it
    producers, _, _ = _graph(built["qdq"])
    for node in built["qdq"].graph.node:
        if node.op_type == "Relu" and node.input[0] in conv_into_relu:
            assert producers[node.input[0]].op_type == "Conv"


def test_every_weighted_input_is_quantized(built: dict) -> None:
    producers, _, inits = _graph(built["qdq"])
    weighted = [n for n in built["qdq"].graph.node if n.op_type in WEIGHTED]
    assert len(weighted) == len([n for n in built["fp32"].graph.node if n.op_type in WEIGHTED])
    for node in weighted:
        activation, weight = (_quantized_source(node.input[i], producers) for i in (0, 1))
        assert activation is not None and activation not in inits, f"{node.name} activation"
        assert weight in inits and inits[weight].dtype == np.float32, f"{node.name} weight"  # float → Q → DQ
        dq = producers[node.input[1]]
        scale = inits[dq.input[1]]
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert scale.ndim == 1 and scale.size == inits[weight].shape[0] and axis == 0, node.name  # per channel


def test_activation_scales_equal_the_calibration_cache(built: dict) -> None:
    """Each activation Q/DQ scale is the TensorRT cache's amax/127 for that very tensor, as float32."""
    cache = CalibrationCache.from_amax(calibration.amax_of(built["ranges"]), TrtVersion(10, 3, 0), "minmax")
    _, _, inits = _graph(built["qdq"])
    checked = 0
    for node in built["qdq"].graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            scale, zero_point = inits[node.input[1]], inits[node.input[2]]
            assert scale.shape == () and scale.dtype == np.float32, node.input[0]  # per tensor
            assert zero_point.dtype == np.int8 and int(zero_point) == 0, node.input[0]  # symmetric int8
            assert np.float32(cache.scales[node.input[0]]) == scale, node.input[0]
            checked += 1
    assert checked >= 4


def test_opset_kept_and_accuracy_close(built: dict) -> None:
    from kd2trt.onnx import runtime

    fp32_path, qdq_path = built["paths"]
    assert opset_of(built["qdq"]) == opset_of(built["fp32"]) == 17  # TensorRT 8.6 parses ≤ 17
    images = built["images"]
    reference = runtime.OrtRunner(fp32_path).infer_many(images)
    for fake_quant in (True, False):  # no output Q/DQ: ORT's default level must not change the result
        got = runtime.OrtRunner(qdq_path, fake_quant=fake_quant).infer_many(images)
        assert np.abs(got - reference).max() < 0.1 * np.abs(reference).max() + 1e-3


def test_residual_add_and_pooling_placement(tmp_path: Path) -> None:
    """Residual Add: only the skip addend quantised (downsample: the shorter, 1×1 branch); pools' inputs too."""
    built = _build(Residual(), (3, 16, 16), tmp_path)
    producers, _, _ = _graph(built["qdq"])

    def origin(name: str) -> tuple[str, bool]:
        source = _quantized_source(name, producers)
        tensor = source if source is not None else name
        node = producers.get(tensor)
        return (node.op_type if node is not None else "<input>"), source is not None

    adds = [n for n in built["qdq"].graph.node if n.op_type == "Add"]
    assert len(adds) == 2
    identity, downsample = adds
    assert sorted(origin(t) for t in identity.input) == [("Conv", False), ("MaxPool", True)]
    assert [origin(t) for t in downsample.input] in ([("Conv", False), ("Conv", True)],
                                                     [("Conv", True), ("Conv", False)])
    quantized_conv = next(_quantized_source(t, producers) for t in downsample.input if origin(t)[1])
    conv = producers[quantized_conv]
    kernel = next(i for i in built["qdq"].graph.initializer
                  if i.name == _quantized_source(conv.input[1], producers))
    assert list(kernel.dims[2:]) == [1, 1]  # the downsample branch is the residual, the 3×3 branch is fused
    for node in built["qdq"].graph.node:
        if node.op_type in ("MaxPool", "GlobalAveragePool"):
            assert origin(node.input[0])[1], node.name
