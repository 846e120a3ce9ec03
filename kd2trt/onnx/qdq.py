"""Explicit INT8: a Q/DQ ONNX graph placed as TensorRT wants it, made with onnxruntime's quantiser.

**Placement** follows the Q/DQ layer-placement recommendations of NVIDIA's TensorRT developer guide
("Explicit Quantization" → "Q/DQ Layer-Placement Recommendations",
https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html):

* quantise every input of a weighted operation — Conv, ConvTranspose, Gemm, MatMul: the activation and
  the weight — which is what lets TensorRT pick INT8 kernels;
* by default do *not* quantise a weighted operation's output: TensorRT fuses the following ReLU (and a
  BatchNormalization, and a residual Add) into the layer itself and chooses the output precision;
  a Q/DQ pair between Conv and ReLU/Add would split that fusion (the guide's "suboptimal fusion" figure);
* do not simulate BN/ReLU fusions (no ReLU-range tricks): each Q/DQ scale is the one of the tensor it sits on;
* quantise the *residual* input of a skip connection's Add — the addend that does not come from the
  weighted op TensorRT fuses the Add into — so that the fused Conv+Add runs in INT8. When both addends
  come from weighted ops (a ResNet downsample block) the deeper branch is the one fused and the shorter
  (the downsample Conv) is the residual, as in NVIDIA's own quantised ResNet (pytorch-quantization's
  `residual_quantizer` on `downsample(x)`); an Add with no weighted-op addend is left unquantised;
* pooling (MaxPool, AveragePool, GlobalAveragePool) gets its input quantised: the guide describes a
  pooling layer with a DQ on its input and a Q on its output as one INT8 layer (MaxPool commutes with Q/DQ),
  and the output's Q comes from the next weighted op's input, propagated backwards through Flatten/Reshape;
* never the network's outputs (the logits stay FP32 — a Q/DQ there clipped them at ±8.7 before).

Numerics (DESIGN.md §3): symmetric, zero point 0, per-tensor activations, per-channel weights on axis 0
(Conv; Gemm with transB=1), int8 in [-128, 127] (scales from the symmetric ±127 range), the input's opset
kept (17: TensorRT 8.6 parses ≤ 17). `reduce_range` is never used. `DedicatedQDQPair` /
`AddQDQPairToWeight` give each consumer its own pair and keep weights as float initialiser → Q → DQ,
which the TensorRT 8.5-era parsers need (they reject an int8 initialiser feeding a DequantizeLinear).
Every activation scale is `amax / 127` of that same tensor as float32 — the value the TensorRT
calibration cache holds for it — so both INT8 paths quantise identically.

**Library**: onnxruntime's QDQ quantiser (`QDQQuantizer`, what `quantize_static` runs after calibrating;
already a dependency), restricted to the op types above with `OpTypesToExcludeOutputQuantization` (no output
Q/DQ) and `ForceQuantizeNoInputCheck` (pooling inputs), and handed kd2trt's own ranges directly: no
recalibration, and no need for `quantize_static(calibration_cache_path=…)`, which only onnxruntime 1.27+ has
(none of which installs on Python 3.10, i.e. JetPack 6). Then one graph pass here that
keeps exactly the (consumer, input) pairs the policy asks for — ORT quantises a tensor for all its consumers,
which would put a Q/DQ on the Conv-branch addend of a residual Add. NVIDIA ModelOpt's ONNX PTQ gives a
similar placement but was measured to raise the opset 17 → 19, skip convs with few channels and parse the
cache header unchecked, and it is a heavy extra dependency; this module keeps opset 17 and the cache's scales.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QDQQuantizer, QuantType
from onnxruntime.quantization.calibrate import TensorData, TensorsData
from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

from kd2trt.artifacts import atomic_path, temp_directory
from kd2trt.errors import Kd2trtError
from kd2trt.onnx import runtime
from kd2trt.onnx.export import check_onnx

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
POOLING_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool")
RESIDUAL_OPS = ("Add",)
# ops TensorRT fuses into the weighted op in front of them: an Add addend produced through them still
# "comes from" the weighted op (unfolded BatchNormalization)
_FUSED_INTO_WEIGHTED = ("BatchNormalization",)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

TENSORRT_QDQ_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "DedicatedQDQPair": True,
    "AddQDQPairToWeight": True,
    "ForceQuantizeNoInputCheck": True,
    "OpTypesToExcludeOutputQuantization": [*WEIGHTED_OPS, *POOLING_OPS, *RESIDUAL_OPS],
}


#: ops between a pooling layer and the weighted op it feeds that leave the values as they are
_SHAPE_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


def tensorrt_qdq_inputs(model: onnx.ModelProto, high_precision: Iterable[str] = ()) -> set[tuple[str, int]]:
    """The (node name, input index) pairs TensorRT's placement quantises; every node must be named.

    `high_precision`: weighted nodes kept out of INT8. Their inputs are not quantised, and neither is what only
    exists to let them run in INT8: the residual input of an Add fused into one of them, and the input of a
    pooling layer whose every weighted consumer is one of them.
    """
    kept = set(high_precision)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}

    depth: dict[str, int] = {}  # longest path from the graph inputs, per tensor (nodes are topologically sorted)
    for node in graph.node:
        level = 1 + max((depth.get(t, 0) for t in node.input), default=0)
        depth.update((out, level) for out in node.output)

    def weighted_source(tensor: str) -> onnx.NodeProto | None:
        node = producers.get(tensor)
        while node is not None and node.op_type in _FUSED_INTO_WEIGHTED:
            node = producers.get(node.input[0])
        return node if node is not None and node.op_type in WEIGHTED_OPS else None

    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)

    def weighted_consumers(tensor: str) -> list[onnx.NodeProto]:
        found = []
        for consumer in consumers.get(tensor, []):
            if consumer.op_type in _SHAPE_OPS:
                found += weighted_consumers(consumer.output[0])
            elif consumer.op_type in WEIGHTED_OPS:
                found.append(consumer)
        return found

    wanted: set[tuple[str, int]] = set()
    for node in graph.node:
        if node.op_type in WEIGHTED_OPS:
            if node.name not in kept:
                wanted.update((node.name, i) for i in (0, 1) if i < len(node.input) and node.input[i])
        elif node.op_type in POOLING_OPS:
            fed = weighted_consumers(node.output[0])
            if not fed or any(n.name not in kept for n in fed):
                wanted.add((node.name, 0))
        elif node.op_type in RESIDUAL_OPS and len(node.input) == 2 and not set(node.input) & initializers:
            fused = [weighted_source(t) is not None for t in node.input]
            if not any(fused):
                continue  # not an Add TensorRT fuses into a weighted op: left as it is
            if all(fused):  # downsample block: the deeper branch is fused, the shorter one is the residual
                residual = 0 if depth.get(node.input[0], 0) < depth.get(node.input[1], 0) else 1
            else:
                residual = fused.index(False)
            fused_into = weighted_source(node.input[1 - residual])
            if fused_into is None or fused_into.name not in kept:
                wanted.add((node.name, residual))
    return wanted


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give unnamed nodes unique names (ORT's node filters and the placement work by name)."""
    taken = {n.name for n in model.graph.node if n.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return model


def _check_ranges(tensors: Iterable[str], ranges: TensorsData, source: Path) -> None:
    """Every activation to quantise has a finite, non-zero range (a zero scale divides by zero in Q)."""
    missing = sorted(t for t in tensors if t not in ranges.data)
    if missing:
        raise Kd2trtError(f"{source}: no calibration range for {len(missing)} tensor(s) the Q/DQ graph needs "
                          f"({', '.join(missing[:5])}{', …' if len(missing) > 5 else ''}); recalibrate")
    bad = sorted(t for t in tensors if not (0 < _amax(ranges.data[t]) < math.inf))
    if bad:
        raise Kd2trtError(f"{source}: zero or non-finite calibration range for {', '.join(bad[:5])}"
                          f"{', …' if len(bad) > 5 else ''}; recalibrate with representative images")


def _amax(data: TensorData) -> float:
    low, high = data.range_value
    return max(abs(float(np.asarray(low).min())), abs(float(np.asarray(high).max())))


def _prune(model: onnx.ModelProto, wanted: set[tuple[str, int]]) -> None:
    """Keep only the Q/DQ pairs that feed a wanted (consumer, input); rewire the rest to the float tensor."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    source_of: dict[str, str] = {}  # DQ output -> the float tensor its Q quantises
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            q = producers.get(node.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                source_of[node.output[0]] = q.input[0]
    for node in graph.node:
        if node.op_type in QDQ_OPS:
            continue
        for index, name in enumerate(node.input):
            if name in source_of and (node.name, index) not in wanted:
                node.input[index] = source_of[name]
    graph_outputs = {o.name for o in graph.output}
    while True:  # drop Q/DQ nodes nothing consumes any more (DQ first, then its Q)
        used = {name for node in graph.node for name in node.input} | graph_outputs
        dead = [n for n in graph.node if n.op_type in QDQ_OPS and n.output[0] not in used]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def check_placement(model: onnx.ModelProto, wanted: set[tuple[str, int]], source: Path) -> None:
    """Every wanted input is fed by a DequantizeLinear, and no graph output comes out of one."""
    producers = {out: node for node in model.graph.node for out in node.output}
    nodes = {n.name: n for n in model.graph.node}
    missing = sorted(f"{name}[{i}]" for name, i in wanted
                     if getattr(producers.get(nodes[name].input[i]), "op_type", None) != "DequantizeLinear")
    if missing:
        raise Kd2trtError(f"{source}: the quantiser left {', '.join(missing[:5])} without Q/DQ; report the model")
    quantized_outputs = [o.name for o in model.graph.output
                         if getattr(producers.get(o.name), "op_type", None) == "DequantizeLinear"]
    if quantized_outputs:
        raise Kd2trtError(f"{source}: graph output(s) {', '.join(quantized_outputs)} quantised; report the model")


def weighted_nodes(model: onnx.ModelProto) -> list[str]:
    """The names of the weighted nodes (Conv, Gemm, …) in graph order: the layers INT8 fallback chooses from."""
    return [node.name for node in _named(model).graph.node if node.op_type in WEIGHTED_OPS]


def quantize_qdq(onnx_path: Path, output_path: Path, ranges: TensorsData, high_precision: Iterable[str] = ()
                 ) -> Path:
    """Write the Q/DQ model of `onnx_path` quantised with `ranges`; checked by the ONNX checker.

    `high_precision`: weighted nodes left without Q/DQ on their inputs, so that TensorRT runs them in FP16/FP32
    (the per-layer fallback of an INT8 accuracy budget).
    """
    model = _named(onnx.load(str(onnx_path)))
    kept = set(high_precision)
    unknown = sorted(kept - {n.name for n in model.graph.node})
    if unknown:
        raise Kd2trtError(f"{onnx_path}: no node named {', '.join(unknown[:3])} to keep in high precision")
    wanted = tensorrt_qdq_inputs(model, kept)
    nodes = {n.name: n for n in model.graph.node}
    initializers = {i.name for i in model.graph.initializer}
    _check_ranges({nodes[name].input[i] for name, i in wanted} - initializers, ranges, onnx_path)
    with temp_directory("qdq") as tmp, atomic_path(output_path) as out, runtime.quiet():
        named = Path(tmp) / "named.onnx"
        onnx.save(model, str(named))
        quantizer = QDQQuantizer(
            load_model_with_shape_infer(named), True, False, QuantType.QInt8, QuantType.QInt8, ranges,
            sorted({name for name, _ in wanted}), [], [*WEIGHTED_OPS, *POOLING_OPS, *RESIDUAL_OPS],
            dict(TENSORRT_QDQ_OPTIONS))  # per_channel, no reduce_range, weight/activation types, ranges, nodes
        quantizer.quantize_model()
        quantizer.model.topological_sort()
        quantized = quantizer.model.model
        _prune(quantized, wanted)
        check_placement(quantized, wanted, output_path)
        onnx.save(quantized, str(out))
        check_onnx(out, display=output_path)
    return output_path
