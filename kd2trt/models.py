"""Model registry, weight loading and feature taps.

Names: `cnn` (the built-in small CNN, sized by `channels` and `blocks`), any torchvision
classification model (`resnet18`, `mobilenet_v3_small`, …), and `timm:NAME` when timm is
installed. Every model is adapted to the data's channels and classes at construction, so the same
name works for 1-channel digits and 3-channel photographs.

The built-in CNN is Conv-BN-ReLU only: the pattern TensorRT fuses into one kernel and quantises
cleanly, which is what a student headed for a Jetson should be made of.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd2trt.errors import Kd2trtError
from kd2trt.torch_io import load_torch

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SmallCNN(nn.Module):
    """Stages of Conv-BN-ReLU blocks (stride 2 from the second stage on), global pooling, a linear head.

    Module paths are stable (`stages.0`, `stages.1`, …, `classifier`) so recipes can name feature taps.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: list[int], blocks: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        stages = []
        previous = in_channels
        for index, width in enumerate(channels):
            layers = [ConvBNReLU(previous, width, stride=1 if index == 0 else 2)]
            layers += [ConvBNReLU(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(x)).flatten(1)
        return self.classifier(self.dropout(x))


def _registry_model(spec: dict[str, Any]) -> nn.Module:
    arch = spec["arch"]
    in_channels, num_classes = int(spec["in_channels"]), int(spec["num_classes"])
    dropout = spec.get("dropout")
    if arch == "cnn":
        return SmallCNN(in_channels, num_classes, list(spec["channels"]), int(spec.get("blocks", 1)),
                        float(dropout or 0.0))
    if arch.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise Kd2trtError(f"model {arch!r} needs timm: pip install timm") from None
        try:
            return _with_dropout(arch, functools.partial(timm.create_model, arch[5:], pretrained=False,
                                                         num_classes=num_classes, in_chans=in_channels),
                                 "drop_rate", dropout)
        except RuntimeError as exc:
            raise Kd2trtError(f"model {arch!r}: {exc}") from None
    import torchvision.models as tvm

    if arch not in tvm.list_models(module=tvm):
        raise Kd2trtError(
            f"model {arch!r} is not known: use cnn, a torchvision classification model "
            "(resnet18, mobilenet_v3_small, …) or timm:NAME"
        )
    model = _with_dropout(arch, functools.partial(tvm.get_model, arch, weights=None, num_classes=num_classes),
                          "dropout", dropout)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _with_dropout(arch: str, build: Callable[..., nn.Module], keyword: str, dropout: float | None) -> nn.Module:
    """`build()`, with `dropout` passed as the builder's `keyword` when it is set. A builder that refuses the
    keyword is an architecture without a classifier dropout to set (ResNet, RegNet, …): a one-line error; with
    nothing passed, any TypeError is the builder's own and propagates as it is."""
    if dropout is None:
        return build()
    try:
        return build(**{keyword: float(dropout)})
    except TypeError as exc:
        raise Kd2trtError(f"model {arch!r} has no classifier dropout to set ({exc}); leave dropout unset (null) "
                          "for this architecture") from None


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Build from a spec dict: arch, in_channels, num_classes, and channels/blocks/dropout for `cnn`; the modules
    named in `identity_modules` (what `probe_model` removed: rectifiers on the logits) are `nn.Identity`.

    The same dict is stored in checkpoints, so a checkpoint rebuilds its own model.
    """
    model = _registry_model(spec)
    replace_with_identity(model, list(spec.get("identity_modules", [])))
    return model


def model_spec(arch: str, in_channels: int, num_classes: int, channels: list[int] | None = None,
               blocks: int = 1, dropout: float | None = None) -> dict[str, Any]:
    """The checkpoint-stored description of a model (plain types only, for `weights_only` loading).

    `dropout` None is the architecture's own rate (none for `cnn`) and is left out of the spec, so a spec
    written before the knob applied to every architecture still names the same model.
    """
    spec: dict[str, Any] = {"arch": arch, "in_channels": in_channels, "num_classes": num_classes}
    if arch == "cnn":
        if not channels:
            raise Kd2trtError("arch 'cnn' needs channels, e.g. channels: [8, 16, 32]")
        spec.update(channels=list(channels), blocks=blocks, dropout=float(dropout or 0.0))
    elif dropout is not None:
        spec["dropout"] = float(dropout)
    return spec


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            replacement = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride,
                                    module.padding, module.dilation, module.groups, module.bias is not None)
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], replacement)
            return
    raise Kd2trtError(f"{type(model).__name__}: no Conv2d found to adapt to {in_channels} input channels")


# --------------------------------------------------------------------------------------------- weights

def strip_wrapper_prefixes(key: str) -> str:
    """`module.` (DDP) and `_orig_mod.` (torch.compile) prefixes, in any order and number, removed."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a bare state dict or a checkpoint (kd2trt's, or {'state_dict'|'model': …})."""
    if not path.is_file():
        raise Kd2trtError(f"{path}: weights file not found; fix the path")
    loaded = load_torch(path, "re-save it with torch.save(model.state_dict(), path)")
    if isinstance(loaded, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(loaded.get(key), dict) and all(isinstance(v, torch.Tensor) for v in loaded[key].values()):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise Kd2trtError(f"{path}: holds no state dict of tensors; save model.state_dict() instead")
    return {strip_wrapper_prefixes(k): v for k, v in loaded.items()}


def load_weights(model: nn.Module, path: Path, *, finetune: bool = False, role: str = "teacher") -> list[str]:
    """Load `path` into `model`; return the names of parameters left freshly initialised.

    Strict by default: classes or channels that do not fit the data are an error naming both
    shapes. With `finetune`, a classifier whose class count differs is re-initialised and a first
    conv whose input channels differ is averaged over them (ImageNet RGB weights → 1-channel data).
    """
    state = read_state_dict(path)
    own = model.state_dict()
    head_keys = _classifier_keys(model)
    first_conv_key = _first_conv_weight_key(model)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise Kd2trtError(f"{path}: does not match the {role} architecture ({detail}); check --{role} arch "
                          "or the file")
    reinitialised: list[str] = []
    for key, tensor in list(state.items()):
        expected = own[key].shape
        if tensor.shape == expected:
            continue
        if key in head_keys:
            if not finetune:
                raise Kd2trtError(
                    f"{path}: {role} classifier has {tensor.shape[0]} outputs but the data has {expected[0]} "
                    f"classes; use weights trained on this data, or fine-tune (--{role}-finetune) to replace the head"
                )
            state[key] = own[key]
            reinitialised.append(key)
        elif key == first_conv_key and tensor.shape[0] == expected[0] and tensor.shape[2:] == expected[2:]:
            if not finetune:
                raise Kd2trtError(
                    f"{path}: {role} takes {tensor.shape[1]}-channel images but the data has {expected[1]} "
                    f"channel(s); set data.channels: {tensor.shape[1]}, or fine-tune (--{role}-finetune)"
                )
            state[key] = tensor.mean(dim=1, keepdim=True).expand(expected).clone()
        else:
            raise Kd2trtError(f"{path}: {key} has shape {tuple(tensor.shape)}, the {role} expects "
                              f"{tuple(expected)}; the weights are for another architecture")
    model.load_state_dict(state)
    return reinitialised


def _classifier_keys(model: nn.Module) -> set[str]:
    """Keys of the last Linear layer (the classifier head in every supported family)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return {f"{last}.weight", f"{last}.bias"} if last is not None else set()


def _first_conv_weight_key(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    return None


# ------------------------------------------------------------------------------------------ feature taps

def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def resolve_module(model: nn.Module, path: str, role: str = "model") -> nn.Module:
    """The submodule at `path` (e.g. `layer3`, `stages.2`), prefixes of wrappers ignored on both sides."""
    inner = unwrap(model)
    clean = strip_wrapper_prefixes(path)
    try:
        return inner.get_submodule(clean)
    except AttributeError:
        names = [name for name, _ in inner.named_modules() if name and name.count(".") <= 1]
        hint = ", ".join(names[:12]) + (" …" if len(names) > 12 else "")
        raise Kd2trtError(f"{role} feature_tap {path!r} is not a module of {type(inner).__name__}; "
                          f"choose one of: {hint}") from None


class FeatureTap:
    """Captures the output of one submodule on every forward pass (a forward hook)."""

    def __init__(self, model: nn.Module, path: str, role: str = "model"):
        self.path = path
        self.output: torch.Tensor | None = None
        self._handle = resolve_module(model, path, role).register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        self.output = output[0] if isinstance(output, (tuple, list)) else output

    def remove(self) -> None:
        self._handle.remove()

    def take(self) -> torch.Tensor:
        if self.output is None:
            raise RuntimeError(f"feature tap {self.path!r} saw no forward pass")
        output, self.output = self.output, None
        return output


@contextlib.contextmanager
def tapped(model: nn.Module, path: str, role: str = "model") -> Iterator[FeatureTap]:
    tap = FeatureTap(model, path, role)
    try:
        yield tap
    finally:
        tap.remove()


# ----------------------------------------------------------------------------------------- construction probe

#: activations that zero their input below 0: on a model's logits they stop every gradient of a class once its
#: pre-activation goes negative, and all of them together make the loss stay at ln(classes) for good
RECTIFIERS = (nn.ReLU, nn.ReLU6)
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


#: a fresh head whose weights' standard deviation is more than this many times PyTorch's default for its fan-in
#: is scaled down to that default (`probe_model`). At 10 classes the heads measured at 10–20× (EfficientNet-B0/B1
#: and timm's: 11.4, MNASNet 19.5, timm's MobileNetV3 10.1); every other torchvision or timm head in the zoo and
#: beyond (ResNet, RegNet, MobileNetV2/V3, ShuffleNet, SqueezeNet, ConvNeXt, DenseNet, ViT) at 0–1.03.
HEAD_SCALE_LIMIT = 2.0


@dataclass(frozen=True)
class HeadRescale:
    """What `probe_model` did to an oversized head: its module path and weight std before and after."""

    path: str
    std_before: float
    std_after: float

    def describe(self, role: str, arch: str) -> str:
        return (f"{role} {arch!r}: head {self.path} initialised at weight std {self.std_before:.3g}, "
                f"{self.std_before / self.std_after:.1f}x PyTorch's default for its fan-in (an init scaled by the "
                f"class count); scaled to {self.std_after:.3g} ({role}.head_init: architecture keeps it)")


@dataclass(frozen=True)
class ProbeResult:
    """`identity_modules`: rectifiers on the logits, replaced by `nn.Identity` (record them in the model spec, so
    a checkpoint rebuilds the same network); `head_rescale`: the head's init, if it was scaled down."""

    identity_modules: list[str]
    head_rescale: HeadRescale | None = None


def default_weight_std(weight: torch.Tensor) -> float:
    """The std of PyTorch's default init for a Linear / Conv weight (kaiming-uniform, a=√5: U(±1/√fan_in))."""
    return 1.0 / math.sqrt(3.0 * weight[0].numel())


def fit_head_scale(head: nn.Module, path: str) -> HeadRescale | None:
    """Scale `head`'s weight down to PyTorch's default std when its init is more than HEAD_SCALE_LIMIT× larger.

    Why: some architectures initialise the classifier as U(±1/√classes) (torchvision's EfficientNet, timm's
    "goog" init) or by fan-out (MNASNet), a scale chosen for 1000 classes that is 10× larger at 10. On the zoo
    data (32 px, train mode, seed 0) EfficientNet-B0's initial logits had std 4.6 and cross-entropy 6.8 where
    chance is ln 10 = 2.3; the next largest of the zoo's students was 1.3. Scaling (not redrawing) keeps the
    architecture's distribution and the seed's draw; a head at its default scale is left bit-identical.
    """
    weight = head.weight
    std, target = float(weight.detach().std()), default_weight_std(weight)
    if not std > HEAD_SCALE_LIMIT * target:
        return None
    with torch.no_grad():
        weight.mul_(target / std)
    return HeadRescale(path, std, float(weight.detach().std()))


def probe_model(model: nn.Module, in_channels: int, image_size: int, role: str, arch: str, *,
                fit_head: bool = True) -> ProbeResult:
    """One forward pass of random images at the data's size, right after construction, to make a fresh model
    trainable here: rectifiers applied to the logits are replaced by `nn.Identity`, and with `fit_head` an
    oversized head init is scaled down (`fit_head_scale`). The head is the last weighted layer called.

    A model that cannot take images this small (SqueezeNet's ceil-mode pools need about 24 px) fails here in one
    line, before any training. Logits are unnormalised log-probabilities: a ReLU after the last weighted layer
    (torchvision's SqueezeNet: final conv, ReLU, global pool) keeps every logit >= 0, and lowering the
    non-target logits, the easy way down a cross-entropy or KD loss, drives their pre-activations below zero,
    where no gradient flows. Measured on the zoo data (32 px, CE, AdamW, seed 0): with the ReLU, the output is
    constant by the end of the first or second epoch at every learning rate tried (3e-4, 1e-3, 3e-3) and stays so;
    a head bias of 1 keeps the head alive, but the body then collapses instead; without the ReLU the same run
    trains (46 % after 6 epochs at 3e-3 and rising). Whatever the architecture, the rectifiers called after the
    last weighted layer in the probe's forward pass are the ones removed; pooling, dropout and flattening stay.
    """
    probe = torch.randn(8, in_channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    calls: list[tuple[str, nn.Module]] = []
    hooks = [module.register_forward_hook(lambda mod, _i, _o, name=name: calls.append((name, mod)))
             for name, module in model.named_modules() if not any(True for _ in module.children())]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(probe.to(device))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise Kd2trtError(f"{role} {arch!r} cannot take {image_size}×{image_size} images ({reason}); raise "
                          "data.image_size") from None
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    last_weighted = max((i for i, (_, mod) in enumerate(calls) if isinstance(mod, WEIGHTED)), default=None)
    if last_weighted is None:
        return ProbeResult([])
    before = {name for name, _ in calls[:last_weighted]}  # a module shared with the body stays
    after = [name for name, mod in calls[last_weighted + 1:] if isinstance(mod, RECTIFIERS) and name not in before]
    paths = list(dict.fromkeys(after))
    replace_with_identity(model, paths)
    head_path, head = calls[last_weighted]
    return ProbeResult(paths, fit_head_scale(head, head_path) if fit_head else None)


def replace_with_identity(model: nn.Module, paths: list[str]) -> None:
    """Put `nn.Identity()` at each module path (`classifier.2`); a path that names no module is an error."""
    for path in paths:
        parent_path, _, child = path.rpartition(".")
        try:
            parent = model.get_submodule(parent_path) if parent_path else model
            parent.get_submodule(child)
        except AttributeError:
            raise Kd2trtError(f"model spec: identity_modules names {path!r}, which this model does not have; "
                              "re-run `kd2trt distill` to write the checkpoint again") from None
        setattr(parent, child, nn.Identity())
