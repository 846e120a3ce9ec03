"""Distillation losses: soft-label KL (×T²), hard-label CE, feature-hint MSE, and their weighted sum.

Hinton et al. (2015): softening both distributions by a temperature T shrinks the soft-label
gradient by 1/T², so the KL term is multiplied by T² to keep its weight against the hard-label
term independent of T. `alpha` trades the two; `beta` weights the hint (FitNets, Romero et al.)
computed through a learned adapter, because the student's features have other channel counts and
spatial sizes than the teacher's.

Class weights (`data.class_weights: balanced`) weight both terms as a weighted mean over the batch (PyTorch's
`cross_entropy(weight=…)`: each item counts by its class's weight, divided by the batch's total weight). An
item's class is its label where the student may see it, else the teacher's prediction (under the label-scarce
protocol most images have no label, and their true one is exactly what the student is not given). Weighting
only the CE term was measured to fail: on the chest-X-ray stand-in (1:3, `bench/imagefolder.py`, 3 seeds,
alpha 0.7) the unweighted soft-label term pulled the KD student to the majority class, 79.2 ± 7.2 % balanced
accuracy against the class-weighted scratch baseline's 93.1 ± 6.4 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def soft_label_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                  item_weights: torch.Tensor | None = None) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) · T², averaged over the batch (weighted by `item_weights` if given)."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    if item_weights is None:
        kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    else:
        per_item = F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(dim=1)
        weights = item_weights.to(per_item.dtype)
        kl = (per_item * weights).sum() / weights.sum().clamp_min(torch.finfo(per_item.dtype).tiny)
    return kl * temperature**2


def hard_label_ce(logits: torch.Tensor, labels: torch.Tensor, labeled: torch.Tensor | None = None,
                  label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the labeled items of the batch only (0 when the batch has none), optionally
    class-weighted (a weighted mean over the items)."""
    if labeled is not None:
        logits, labels = logits[labeled], labels[labeled]
    if labels.numel() == 0:
        return logits.sum() * 0.0
    weight = class_weights.to(logits.device, logits.dtype) if class_weights is not None else None
    return F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing)


class HintAdapter(nn.Module):
    """Maps student features to the teacher's shape: a 1×1 conv (maps) or a linear layer (vectors).

    When spatial sizes differ the adapted map is resized to the teacher's with bilinear
    interpolation, so any pair of stages can be matched.
    """

    def __init__(self, student_shape: torch.Size | tuple[int, ...], teacher_shape: torch.Size | tuple[int, ...]):
        super().__init__()
        if len(student_shape) != len(teacher_shape) or len(student_shape) not in (2, 4):
            raise ValueError(f"hint features must both be maps (N,C,H,W) or vectors (N,C); got student "
                             f"{tuple(student_shape)} and teacher {tuple(teacher_shape)}")
        self.spatial = tuple(teacher_shape[2:]) if len(teacher_shape) == 4 else None
        if self.spatial is not None:
            self.project: nn.Module = nn.Conv2d(student_shape[1], teacher_shape[1], kernel_size=1, bias=False)
        else:
            self.project = nn.Linear(student_shape[1], teacher_shape[1], bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        projected = self.project(features)
        if self.spatial is not None and tuple(projected.shape[2:]) != self.spatial:
            projected = F.interpolate(projected, size=self.spatial, mode="bilinear", align_corners=False)
        return projected


def hint_mse(adapted_student: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(adapted_student, teacher_features.detach())


@dataclass(frozen=True)
class DistillationLoss:
    """(1 - alpha)·CE(labeled) + alpha·T²·KL + beta·hint; returns the total and each term for logging."""

    temperature: float = 4.0
    alpha: float = 0.9
    beta: float = 0.0
    label_smoothing: float = 0.0
    class_weights: torch.Tensor | None = None  # of both terms (see the module's docstring)

    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                 labeled: torch.Tensor | None = None, adapted_student_features: torch.Tensor | None = None,
                 teacher_features: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        ce = hard_label_ce(student_logits, labels, labeled, self.label_smoothing, self.class_weights)
        item_weights = None
        if self.class_weights is not None:  # by label where the student may see it, else the teacher's answer
            known = labeled if labeled is not None else torch.ones_like(labels, dtype=torch.bool)
            classes = torch.where(known, labels, teacher_logits.detach().argmax(dim=1))
            item_weights = self.class_weights.to(student_logits.device)[classes]
        kd = soft_label_kd(student_logits, teacher_logits, self.temperature, item_weights)
        total = (1.0 - self.alpha) * ce + self.alpha * kd
        terms = {"ce": float(ce.detach()), "kd": float(kd.detach())}
        if self.beta > 0:
            if adapted_student_features is None or teacher_features is None:
                raise ValueError("beta > 0 needs student and teacher features (set feature_tap on both)")
            hint = hint_mse(adapted_student_features, teacher_features)
            total = total + self.beta * hint
            terms["hint"] = float(hint.detach())
        return total, terms
