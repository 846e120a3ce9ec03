"""QAT for `kd2trt export --int8 --qat-epochs N`: PTQ ranges in, fine-tuned FP32 graph + the ranges trained with
out, for both INT8 paths (the Q/DQ graph of TensorRT 11, the calibration cache of implicit INT8 on <= 10.x).

The hard part is naming: ModelOpt's quantisers sit on module inputs (`stages.1.0.0.input_quantizer`), kd2trt's
ranges and TensorRT's cache are keyed by ONNX tensor names (`/stages/stages.0/…/Relu_output_0`). The map is
built from the placement itself: for every (node, input) that kd2trt's Q/DQ placement quantises
(`qdq.tensorrt_qdq_inputs`, budget-kept layers excluded), the module is the one the TorchScript exporter named
the node after (its scope, `/stages/stages.1/stages.1.0/stages.1.0.0/Conv` -> `stages.1.0.0`), and the tensor
is that input. Names alone could lie (another exporter, a module called twice), so the map is then *checked by
value*: the input each module receives in PyTorch, captured by a hook on a probe batch, must equal that ONNX
tensor as ONNX Runtime computes it. A quantised input with no module (a residual Add's addend: an operator in
`forward`, not a module) is quantised on the output of the module that produces it instead -- the deepest
module around the producing node whose PyTorch output equals the tensor, checked by value
(`resolve_outputs`: ResNet's `layer2.0.downsample`, whose Conv+BN the graph folds into one Conv), when every
consumer of the tensor quantises it; one that has no such module keeps its PTQ range and is listed in the
summary as not simulated.

Ranges after QAT: every tensor of the fine-tuned graph is calibrated as usual (the cache must name every
tensor TensorRT may need, the Q/DQ graph its residual inputs), then each tensor QAT quantised is overwritten
with the amax read back from its quantiser -- the range the weights were trained for, never a recalibrated
one. The fine-tuned FP32 graph is `<model>.qat.onnx` (parity-gated like the FP32 export); `<model>.onnx`,
`.fp16.onnx` and the checkpoint stay the distilled student (the FP32 reference bench's parity gates use).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization.calibrate import TensorData, TensorsData
from torch import nn

from kd2trt.artifacts import temp_directory
from kd2trt.distill.qat import (
    QatSettings,
    fake_quant_model,
    learned_amax,
    learned_output_amax,
    plain_state,
    train_qat,
)
from kd2trt.errors import Kd2trtError
from kd2trt.metrics import top1
from kd2trt.onnx import calibration, runtime
from kd2trt.onnx.qdq import POOLING_OPS, WEIGHTED_OPS, quantize_qdq, tensorrt_qdq_inputs, weighted_nodes

__all__ = ["QatOutcome", "activation_map", "check_map", "merged_ranges", "module_of_node", "qdq_top1",
           "resolve_outputs", "run_qat"]

PROBE_IMAGES = 32
_MATCH_ATOL = 1e-4


def module_of_node(name: str) -> str | None:
    """The module path the TorchScript exporter scoped a node under: `/a/a.b/a.b.c/Conv` -> `a.b.c`.

    A scope component is named relative to the module that opened it, so a module that is not a plain container
    starts a new chain: torchvision's MobileNetV3 gives `/features/features.1/block/block.0/block.0.0/Conv` for
    `features.1.block.0.0`. Taking the last component alone named every block's first conv `block.0.0`.
    """
    parts = [p for p in name.split("/") if p][:-1]  # the last part is the node's own name
    prefix, relative = "", ""
    for part in parts:
        if relative and part.startswith(relative + "."):
            relative = part  # deeper in the same chain
        else:
            prefix = f"{prefix}.{relative}" if prefix and relative else (relative or prefix)
            relative = part
    if not relative:
        return None
    return f"{prefix}.{relative}" if prefix else relative


@dataclass
class ActivationMap:
    """Module path -> the ONNX tensor its input quantiser stands for; quantised tensors without a module."""

    modules: dict[str, str] = field(default_factory=dict)
    unsimulated: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)   # module path -> the quantised tensor it outputs


def activation_map(model: onnx.ModelProto, high_precision: Sequence[str] = ()) -> ActivationMap:
    """The map for the activations kd2trt's placement quantises (module docstring); names only, see check_map."""
    weighted_nodes(model)  # names every node, as quantize_qdq does
    nodes = {n.name: n for n in model.graph.node}
    initializers = {i.name for i in model.graph.initializer}
    result = ActivationMap()
    for node_name, index in sorted(tensorrt_qdq_inputs(model, high_precision)):
        node = nodes[node_name]
        tensor = node.input[index]
        if tensor in initializers:
            continue  # a weight: TensorRT and the Q/DQ graph compute its scales from the weights themselves
        module = module_of_node(node_name) if node.op_type in (*WEIGHTED_OPS, *POOLING_OPS) and index == 0 else None
        if module is None:
            result.unsimulated.append(tensor)
            continue
        if result.modules.get(module, tensor) != tensor:
            raise Kd2trtError(f"QAT: module {module!r} feeds two quantised ONNX inputs ({result.modules[module]}, "
                              f"{tensor}), e.g. a module called twice; QAT cannot give it one range")
        result.modules[module] = tensor
    result.unsimulated = sorted(set(result.unsimulated) - set(result.modules.values()))
    return result


def _tensor_values(onnx_path: Path, names: Sequence[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """Intermediate tensors of the graph, as ONNX Runtime computes them (added as graph outputs in a copy)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    typed = {v.name: v for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            if name not in typed:
                raise Kd2trtError(f"{onnx_path}: tensor {name!r} has no inferred type; report the model")
            model.graph.output.append(typed[name])
    with temp_directory("qat") as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(model, str(path))
        session = runtime.session(path)
        values = session.run(list(names), {session.get_inputs()[0].name: images})
    return dict(zip(names, values, strict=True))


def _recorded(model: nn.Module, paths: Sequence[str], images: np.ndarray, what: str) -> dict[str, list[np.ndarray]]:
    """Every tensor each module at `paths` takes (`what="input"`: its first argument) or gives ("output") in
    one eval forward of `images`, one entry per call."""
    modules = dict(model.named_modules())
    seen: dict[str, list[np.ndarray]] = {p: [] for p in paths}

    def keep(path: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            seen[path].append(value.detach().numpy().copy())

    hooks = [modules[p].register_forward_pre_hook(lambda _m, args, p=p: keep(p, args[0])) if what == "input"
             else modules[p].register_forward_hook(lambda _m, _args, out, p=p: keep(p, out)) for p in paths]
    try:
        with torch.no_grad():
            model.eval()(torch.from_numpy(images))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def check_map(mapping: ActivationMap, model: nn.Module, onnx_path: Path, images: np.ndarray) -> None:
    """Each mapped module's PyTorch input equals its ONNX tensor on `images`; else an error naming both."""
    modules = dict(model.named_modules())
    missing = sorted(set(mapping.modules) - set(modules))
    if missing:
        raise Kd2trtError(f"QAT: {onnx_path} names module(s) {', '.join(missing[:3])} the student does not have "
                          "(the ONNX is not this checkpoint's export)")
    seen = _recorded(model, list(mapping.modules), images, "input")
    values = _tensor_values(onnx_path, sorted(set(mapping.modules.values())), images)
    for path, tensor in mapping.modules.items():
        ours, theirs = (seen[path][-1] if seen[path] else None), values[tensor]
        if ours is None or ours.size != theirs.size or not np.allclose(ours.reshape(theirs.shape), theirs,
                                                                      atol=_MATCH_ATOL, rtol=1e-4):
            raise Kd2trtError(f"QAT: the input of module {path!r} is not ONNX tensor {tensor!r} of {onnx_path} "
                              "(names and values disagree); report the model")


def _candidate_modules(node_name: str, modules: Mapping[str, nn.Module]) -> list[str]:
    """The module the exporter scoped `node_name` under and its parents, deepest first (a Conv folded with its
    BatchNorm outputs what the enclosing `downsample` Sequential outputs, not what the Conv module does)."""
    path = module_of_node(node_name)
    out = []
    while path:
        if path in modules:
            out.append(path)
        path = path.rpartition(".")[0]
    return out


def resolve_outputs(mapping: ActivationMap, onnx_model: onnx.ModelProto, model: nn.Module, onnx_path: Path,
                    images: np.ndarray, high_precision: Sequence[str] = ()) -> ActivationMap:
    """Simulate the quantised tensors no module takes as input (residual addends) on a module's output.

    A tensor qualifies when every consumer in the graph quantises it (a module output quantiser quantises it
    for all of them) and a module called once per forward outputs it: the producing node's module or a parent,
    the deepest one whose PyTorch output equals the ONNX tensor on `images` (checked by value, as check_map).
    The others stay listed as not simulated (they keep their calibrated range and are not trained with).
    """
    quantized = set(tensorrt_qdq_inputs(onnx_model, high_precision))
    producers = {out: node for node in onnx_model.graph.node for out in node.output}
    consumers: dict[str, list[tuple[str, int]]] = {}
    for node in onnx_model.graph.node:
        for index, tensor in enumerate(node.input):
            consumers.setdefault(tensor, []).append((node.name, index))
    modules = dict(model.named_modules())
    wanted = {t: _candidate_modules(producers[t].name, modules) for t in mapping.unsimulated
              if t in producers and all(c in quantized for c in consumers.get(t, []))}
    candidates = sorted({m for paths in wanted.values() for m in paths})
    if not candidates:
        return mapping
    seen = _recorded(model, candidates, images, "output")
    values = _tensor_values(onnx_path, sorted(wanted), images)
    taken = set(mapping.modules) | set(mapping.outputs)
    outputs, unsimulated = dict(mapping.outputs), []
    for tensor in mapping.unsimulated:
        match = next((m for m in wanted.get(tensor, []) if m not in taken and len(seen[m]) == 1
                      and seen[m][0].shape == values[tensor].shape
                      and np.allclose(seen[m][0], values[tensor], atol=_MATCH_ATOL, rtol=1e-4)), None)
        if match is None:
            unsimulated.append(tensor)
        else:
            outputs[match] = tensor
            taken.add(match)
    return ActivationMap(dict(mapping.modules), unsimulated, outputs)


def merged_ranges(calibrated: TensorsData, learned: Mapping[str, float]) -> TensorsData:
    """`calibrated` with every tensor in `learned` replaced by its symmetric learned range."""
    data = dict(calibrated.data)
    for name, amax in learned.items():
        data[name] = TensorData(lowest=np.float32(-amax), highest=np.float32(amax))
    return TensorsData(calibrated.calibration_method, data)


def qdq_top1(onnx_path: Path, ranges: TensorsData, high_precision: Sequence[str], images: np.ndarray,
             labels: np.ndarray, scratch: Path, name: str) -> float:
    """Top-1 of the Q/DQ graph of `onnx_path` with `ranges`, fake-quant (TensorRT's arithmetic)."""
    path = quantize_qdq(onnx_path, scratch / f"{name}.int8.onnx", ranges, high_precision)
    with runtime.OrtRunner(path, fake_quant=True) as runner:
        return top1(runner.infer_many(images), labels)


@dataclass
class QatOutcome:
    """What QAT produced: the fine-tuned FP32 graph, the ranges for the cache and Q/DQ, and the record."""

    onnx_path: Path
    ranges: TensorsData
    learned: dict[str, float]            # ONNX tensor -> amax QAT trained with (what the cache must hold)
    record: dict[str, Any]
    model: nn.Module | None = None       # the selected fake-quant model (PyTorch), for inspection and tests


@dataclass
class QatInputs:
    """Everything `run_qat` needs from the export run (kept as data so that tests can call it directly)."""

    student: nn.Module
    teacher: nn.Module
    train_set: Any
    val_set: Any
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    calibration_set: calibration.CalibrationSet
    method: str


def run_qat(inputs: QatInputs, fp32_path: Path, ranges: TensorsData, high_precision: Sequence[str],
            settings: QatSettings, export_plain: Callable[[nn.Module], Path],
            progress: Callable[[str], None] = lambda _: None) -> QatOutcome:
    """PTQ `ranges` of `fp32_path` -> fake-quant student -> distillation-aware QAT -> `export_plain(model)` (the
    fine-tuned FP32 graph) -> ranges for it; records val/test top-1 of the FP32, PTQ and QAT Q/DQ graphs."""
    started = time.perf_counter()
    graph = onnx.load(str(fp32_path))
    mapping = activation_map(graph, high_precision)
    val_images, val_labels = inputs.val
    probe = val_images[:PROBE_IMAGES]
    check_map(mapping, inputs.student, fp32_path, probe)
    mapping = resolve_outputs(mapping, graph, inputs.student, fp32_path, probe, high_precision)
    amax = calibration.amax_of(ranges)
    quantized = fake_quant_model(inputs.student, {m: amax[t] for m, t in mapping.modules.items()},
                                 {m: amax[t] for m, t in mapping.outputs.items()})
    result = train_qat(quantized, inputs.teacher, inputs.train_set, inputs.val_set, settings, progress)
    plain = copy.deepcopy(inputs.student)
    plain.load_state_dict(plain_state(result.model, plain))
    qat_path = export_plain(plain.eval())
    qat_graph = onnx.load(str(qat_path))
    qat_map = activation_map(qat_graph, high_precision)
    if qat_map.modules != mapping.modules:
        raise Kd2trtError(f"QAT: {qat_path} quantises other tensors than {fp32_path}; report the model")
    check_map(qat_map, plain, qat_path, probe)
    if resolve_outputs(qat_map, qat_graph, plain, qat_path, probe, high_precision).outputs != mapping.outputs:
        raise Kd2trtError(f"QAT: {qat_path}'s residual inputs come from other modules than {fp32_path}'s; "
                          "report the model")
    by_module, by_output = learned_amax(result.model), learned_output_amax(result.model)
    learned = {tensor: by_module[module] for module, tensor in mapping.modules.items()}
    learned.update({tensor: by_output[module] for module, tensor in mapping.outputs.items()})
    final = merged_ranges(calibration.collect_ranges(qat_path, inputs.calibration_set, inputs.method), learned)
    test_images, test_labels = inputs.test
    with temp_directory("qat") as tmp:
        scratch = Path(tmp)
        scores: dict[str, dict[str, float]] = {}
        for split, (images, labels) in (("val", (val_images, val_labels)), ("test", (test_images, test_labels))):
            with runtime.OrtRunner(fp32_path) as runner:
                fp32 = top1(runner.infer_many(images), labels)
            ptq = qdq_top1(fp32_path, ranges, high_precision, images, labels, scratch, "ptq")
            qat = qdq_top1(qat_path, final, high_precision, images, labels, scratch, "qat")
            scores[split] = {"fp32_top1": fp32, "ptq_int8_top1": ptq, "qat_int8_top1": qat,
                             "ptq_drop_points": fp32 - ptq, "qat_drop_points": fp32 - qat}
    record = {
        "epochs": settings.epochs, "lr": settings.lr, "temperature": settings.temperature,
        "batch_size": settings.batch_size, "loss": "soft-label KD (alpha 1): KL(teacher ‖ student) · T²",
        "library": _library_version(), "best_epoch": result.best_epoch,
        "val_top1_before": result.val_top1_before, "val_top1_after": result.val_top1_after,
        "history": result.history, "train_seconds": round(result.seconds, 3),
        "seconds": round(time.perf_counter() - started, 3), "fp32_onnx": str(qat_path),
        "method": inputs.method, "high_precision_layers": list(high_precision),
        "tensors_trained": len(learned), "ranges_trained": learned, "not_simulated": mapping.unsimulated,
        "simulated_on_module_outputs": dict(mapping.outputs),
        **{f"{split}_{key}": value for split, row in scores.items() for key, value in row.items()},
    }
    return QatOutcome(qat_path, final, learned, record, result.model)


def _library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"nvidia-modelopt {version('nvidia-modelopt')}"
    except PackageNotFoundError:
        return "nvidia-modelopt (version unknown)"
