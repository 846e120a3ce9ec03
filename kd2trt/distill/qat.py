"""Distillation-aware quantisation-aware training (QAT): the student fine-tuned under INT8 fake quantisation,
with the teacher's soft labels as the target.

**Library: NVIDIA ModelOpt's torch quantisation** (`modelopt.torch.quantization`, package `nvidia-modelopt`,
never its `[onnx]` extra), chosen over PyTorch's own `torch.ao.quantization` by measurement (torch 2.14.1,
ModelOpt 0.47.0, 2-core CPU, the digits student):

* both run on the CPU; ModelOpt's CPU path is its "legacy" pure-PyTorch fake quant (no CUDA extension
  needed), `mtq.quantize` on the 10k-parameter student takes ~1 s;
* `torch.ao.quantization` is deprecated: its `prepare`/`prepare_qat`/`prepare_qat_fx` carry
  `typing_extensions.deprecated("torch.ao.quantization is deprecated and will be removed in 2.10 …")`, i.e.
  it is past its announced removal; ModelOpt is NVIDIA's maintained path to TensorRT;
* ModelOpt's default INT8 placement is TensorRT's (kd2trt.onnx.qdq): a quantiser on the *input* of every
  Conv/ConvTranspose/Linear (activation per-tensor, weight per-channel on axis 0) and of every pooling module,
  none on outputs, BatchNorm left alone (TensorRT folds it); each quantiser's `amax` is a tensor read and
  written per module (`<module>.input_quantizer.amax`), so kd2trt's own PTQ ranges go in and the ranges
  trained with come out, tensor by tensor (kd2trt.onnx.qat maps them to the ONNX tensor names);
* torch.ao's eager QAT needs QuantStub/DeQuantStub edits of the model and fused-module swaps, and its
  observers default to affine uint8 activations (TensorRT is symmetric int8).

**What the QAT forward computes, and why it is what TensorRT computes** (the exported Q/DQ graph, run in ONNX
Runtime at ORT_ENABLE_BASIC, is tested against it):

* activations: symmetric, scale amax/127, int8 in [-128, 127] (`narrow_range=False`, as ONNX QuantizeLinear);
  gradients by the straight-through estimator that zeroes clipped values' gradients (`_int8_config`: measured);
* weights: per output channel, amax = the channel's current max |w| at every step (no stored amax: ModelOpt
  then reduces it from the tensor itself), which is what ONNX Runtime's quantiser and TensorRT compute from the
  fine-tuned weights. BatchNorm is frozen (eval mode, running statistics as distilled) and the exported graph
  folds it into the conv: per-channel quantisation commutes with that per-channel scaling, so quantising the
  unfolded weight and applying BN equals quantising the folded weight (up to float rounding);
* activation ranges stay at the PTQ values they start from (kd2trt's calibration: entropy/minmax/percentile,
  or what an INT8 budget chose) -- ModelOpt keeps INT8 `amax` fixed during training (its `learn_amax` is
  deprecated and refused; its learnt-scale LSQ is NVFP4-only), as NVIDIA's QAT guidance advises ("do not change
  the quantisation scale during training"). The weights learn to live with those ranges; what is exported is
  read back from the trained model's quantisers, never recalibrated on the fine-tuned weights (which would
  hand TensorRT ranges the weights were not trained for).

Loss: `DistillationLoss` with alpha = 1 -- the teacher's soft labels (KL · T²) on every training image. The
hard-label term is left out on purpose: the label-scarce protocol lets the student see only
`data.labeled_fraction` of the labels, and QAT must not see more. Selection: validation top-1 of the
fake-quant model after each epoch, the starting point (epoch 0: PTQ) included, so QAT never returns a model
worse on validation than the PTQ it started from; the test split only reports (kd2trt.onnx.qat).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kd2trt.config import TrainConfig
from kd2trt.distill.losses import DistillationLoss
from kd2trt.distill.optim import build_optimizer, build_scheduler
from kd2trt.errors import Kd2trtError
from kd2trt.evaluation import predict
from kd2trt.metrics import top1

__all__ = ["INSTALL_HINT", "QatResult", "QatSettings", "fake_quant_model", "learned_amax", "learned_output_amax",
           "plain_state", "require_modelopt", "train_qat"]

INSTALL_HINT = "pip install 'kd2trt[qat]' (NVIDIA ModelOpt: pip install nvidia-modelopt requests huggingface_hub)"
#: module types whose input quantiser TensorRT's placement uses (weighted ops and pooling)
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
             nn.Linear)


def require_modelopt() -> Any:
    """`modelopt.torch.quantization`, imported quietly; missing, a one-line error naming the install command.

    ModelOpt 0.47.0 imports `requests` without declaring it, prints on import and warns about transformers;
    none of that reaches kd2trt's output.
    """
    try:
        with _quiet():
            import modelopt.torch.quantization as mtq
    except ImportError as exc:
        raise Kd2trtError(f"--qat-epochs needs NVIDIA ModelOpt's torch quantisation, which is not importable "
                          f"({exc}); {INSTALL_HINT}") from None
    return mtq


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _int8_config(mtq: Any) -> dict[str, Any]:
    """ModelOpt's INT8 config with ONNX's int8 range ([-128, 127], scale amax/127) instead of its narrow one, and
    the clipping-aware straight-through estimator (`pass_through_bwd=False`: no gradient for clipped values).

    Measured on the tiny test student from entropy ranges (which clip), 2 epochs at lr 1e-2: ModelOpt's default
    pass-through STE made QAT worse (validation 55.6 → 52.8 %, KD loss flat), the clipping-aware one recovered
    (55.6 → 67.2 %, loss 0.36 → 0.24); from unclipped minmax ranges both train (54.2 → 64.7 %).
    """
    config = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    for entry in config["quant_cfg"]:
        if entry.get("quantizer_name") in ("*weight_quantizer", "*input_quantizer") and "cfg" in entry:
            entry["cfg"] = {**entry["cfg"], "narrow_range": False, "pass_through_bwd": False}
    return config


def _quantizers(model: nn.Module) -> Iterator[tuple[str, str, nn.Module]]:
    """(module path, quantiser attribute, quantiser) of every ModelOpt TensorQuantizer in the model."""
    for path, module in model.named_modules():
        for attribute in ("input_quantizer", "weight_quantizer", "output_quantizer"):
            quantizer = getattr(module, attribute, None)
            if isinstance(quantizer, nn.Module) and hasattr(quantizer, "is_enabled"):
                yield path, attribute, quantizer


def fake_quant_model(model: nn.Module, input_amax: Mapping[str, float],
                     output_amax: Mapping[str, float] | None = None) -> nn.Module:
    """A copy of `model` under INT8 fake quantisation, activations quantised exactly at `input_amax`.

    `input_amax`: module path -> amax of the activation entering that module (kd2trt.onnx.qat maps the PTQ
    ranges of the ONNX tensors to it). Those modules' input quantisers are enabled with that amax, weighted
    ones also get a per-channel dynamic weight quantiser; every other quantiser ModelOpt inserted is disabled,
    so that fake quantisation happens where, and only where, the Q/DQ graph quantises. `output_amax`: module
    path -> amax of a tensor the graph quantises that no module takes as input (a residual Add's addend, e.g.
    a ResNet downsample branch): that module's output goes through a ModelOpt quantiser of the same kind.
    """
    mtq = require_modelopt()
    quantized = copy.deepcopy(model).cpu().eval()
    modules = dict(quantized.named_modules())
    unknown = sorted(set(input_amax) - set(modules))
    if unknown:
        raise Kd2trtError(f"QAT: no module {', '.join(unknown[:3])} in the student to quantise")
    register_weighted_subclasses(mtq, quantized)
    with _quiet():
        quantized = mtq.quantize(quantized, _int8_config(mtq), forward_loop=None)
    placed: set[str] = set()
    for path, attribute, quantizer in _quantizers(quantized):
        if attribute == "input_quantizer" and path in input_amax:
            amax = float(input_amax[path])
            if not (0 < amax < math.inf):
                raise Kd2trtError(f"QAT: activation range of {path!r} is {amax}; recalibrate")
            quantizer.reset_amax()
            quantizer.amax = torch.tensor(amax, dtype=torch.float32)
            quantizer.enable()
            placed.add(path)
        elif attribute == "weight_quantizer" and path in input_amax and isinstance(modules[path], _WEIGHTED):
            quantizer.reset_amax()  # no stored amax: the current per-channel max |w| at every forward
            quantizer.enable()
        else:
            quantizer.disable()
    missing = sorted(set(input_amax) - placed)
    if missing:
        raise Kd2trtError(f"QAT: ModelOpt put no input quantiser on {', '.join(missing[:3])} (module type "
                          f"{type(modules[missing[0]]).__name__}); report the model")
    _add_output_quantizers(quantized, output_amax or {})
    return quantized


OUTPUT_QUANTIZER = "kd2trt_output_quantizer"


def _quantize_output(module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
    return module.__dict__[OUTPUT_QUANTIZER](output)  # looked up on the module: survives deepcopy


def _add_output_quantizers(quantized: nn.Module, output_amax: Mapping[str, float]) -> None:
    """A ModelOpt TensorQuantizer (the input quantisers' settings, fixed amax) on each module's output.

    The quantiser is a plain attribute, not a registered submodule: registered on an `nn.Sequential` (ResNet's
    `downsample`) it would become one more stage of the sequence, and the module tree (the state dict the
    fine-tuned weights go back through) would change. Its amax is fixed, so it needs no state of its own.
    """
    from modelopt.torch.quantization.config import QuantizerAttributeConfig
    from modelopt.torch.quantization.nn import TensorQuantizer

    mtq = require_modelopt()
    settings = next(e["cfg"] for e in _int8_config(mtq)["quant_cfg"] if e.get("quantizer_name") == "*input_quantizer")
    modules = dict(quantized.named_modules())
    for path, amax in output_amax.items():
        if path not in modules:
            raise Kd2trtError(f"QAT: no module {path!r} in the student to quantise the output of")
        if not (0 < float(amax) < math.inf):
            raise Kd2trtError(f"QAT: activation range of {path!r}'s output is {amax}; recalibrate")
        quantizer = TensorQuantizer(QuantizerAttributeConfig(**settings))
        quantizer.amax = torch.tensor(float(amax), dtype=torch.float32)
        object.__setattr__(modules[path], OUTPUT_QUANTIZER, quantizer.eval())
        modules[path].register_forward_hook(_quantize_output)


def learned_output_amax(quantized: nn.Module) -> dict[str, float]:
    """Module path -> the amax of the quantiser on its output (`fake_quant_model(output_amax=...)`)."""
    return {path: float(module.__dict__[OUTPUT_QUANTIZER].amax) for path, module in quantized.named_modules()
            if OUTPUT_QUANTIZER in module.__dict__}


def register_weighted_subclasses(mtq: Any, model: nn.Module) -> None:
    """Give ModelOpt a quantised class for each subclass of Conv/Linear in `model` it does not know.

    ModelOpt's registry matches a subclass only when it keeps its base's `forward`; timm's `Linear` (every timm
    classifier head) overrides `forward` for TorchScript, so ModelOpt left it unquantised and QAT stopped with
    "no input quantiser on classifier". The base's quantised class wraps the subclass's own forward (the
    quantisers run around `super().forward`), so registering the subclass with it is exact.
    """
    registry = mtq.QuantModuleRegistry
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        if cls in _WEIGHTED or cls in registry:
            continue
        base = next((b for b in cls.__mro__ if b in _WEIGHTED), None)
        if base is not None:
            registry.register({cls: f"{cls.__module__}.{cls.__qualname__}"})(registry.get(base))


def learned_amax(quantized: nn.Module) -> dict[str, float]:
    """Module path -> the activation amax its enabled input quantiser holds (what QAT trained with)."""
    return {path: float(quantizer.amax) for path, attribute, quantizer in _quantizers(quantized)
            if attribute == "input_quantizer" and quantizer.is_enabled and quantizer.amax is not None}


def plain_state(quantized: nn.Module, model: nn.Module) -> dict[str, torch.Tensor]:
    """The fine-tuned weights of `quantized` as a state dict of the plain `model` (quantiser buffers dropped)."""
    own = model.state_dict()
    state = {k: v.detach().clone() for k, v in quantized.state_dict().items() if k in own}
    missing = sorted(set(own) - set(state))
    if missing:
        raise Kd2trtError(f"QAT: the fine-tuned model lacks {', '.join(missing[:3])}; report the model")
    return state


@dataclass(frozen=True)
class QatSettings:
    """What QAT trains for: epochs, learning rate (AdamW, cosine to zero), KD temperature, batch size."""

    epochs: int
    lr: float
    temperature: float = 4.0
    batch_size: int = 64
    seed: int = 0
    weight_decay: float = 0.0


@dataclass
class QatResult:
    """The selected fake-quant model and what training measured (validation top-1 of the fake-quant model)."""

    model: nn.Module                     # fake-quant model, best epoch on validation
    best_epoch: int                      # 0: the PTQ starting point was best
    val_top1_before: float               # the PTQ starting point (fake-quant, PyTorch)
    val_top1_after: float                # the selected epoch
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _evaluate(model: nn.Module, dataset: Dataset) -> float:
    return top1(*predict(model, dataset, torch.device("cpu")))


def train_qat(quantized: nn.Module, teacher: nn.Module, train_set: Dataset, val_set: Dataset,
              settings: QatSettings, progress: Callable[[str], None] = lambda _: None,
              loss_fn: DistillationLoss | None = None) -> QatResult:
    """Fine-tune `quantized` (from `fake_quant_model`) on the teacher's soft labels; keep the best epoch.

    The whole model stays in eval mode (BatchNorm frozen, no dropout): the training forward is the deployment
    forward, only with gradients (straight-through estimator) -- see the module docstring.
    """
    if settings.epochs < 1:
        raise Kd2trtError(f"QAT: --qat-epochs {settings.epochs}: give at least 1")
    started = time.perf_counter()
    teacher = teacher.cpu().eval().requires_grad_(False)
    loss_fn = loss_fn or DistillationLoss(temperature=settings.temperature, alpha=1.0)
    generator = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(train_set, batch_size=settings.batch_size, shuffle=True, generator=generator)
    if len(loader) == 0:
        raise Kd2trtError("QAT: the training split has no batch")
    config = TrainConfig(epochs=settings.epochs, lr=settings.lr, weight_decay=settings.weight_decay,
                         optimizer="adamw", schedule="cosine", warmup=0.0)
    params = [p for p in quantized.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, config)
    scheduler = build_scheduler(optimizer, config, settings.epochs * len(loader))
    before = _evaluate(quantized, val_set)
    best_epoch, best_top1 = 0, before
    best_state = copy.deepcopy(quantized.state_dict())
    history: list[dict[str, Any]] = [{"epoch": 0, "val_top1": before}]
    progress(f"epoch 0 (PTQ start): validation top-1 {before:.2f}% (fake-quant)")
    for epoch in range(1, settings.epochs + 1):
        quantized.eval()
        total, batches, epoch_started = 0.0, 0, time.perf_counter()
        for images, labels, _ in loader:
            with torch.no_grad():
                targets = teacher(images)
            loss, _ = loss_fn(quantized(images), targets, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            batches += 1
        val = _evaluate(quantized, val_set)
        history.append({"epoch": epoch, "train_loss": total / batches, "val_top1": val,
                        "seconds": round(time.perf_counter() - epoch_started, 3)})
        progress(f"epoch {epoch}: KD loss {total / batches:.4f}, validation top-1 {val:.2f}% (fake-quant)")
        if val > best_top1:
            best_epoch, best_top1 = epoch, val
            best_state = copy.deepcopy(quantized.state_dict())
    quantized.load_state_dict(best_state)
    return QatResult(quantized, best_epoch, before, best_top1, time.perf_counter() - started, history)
