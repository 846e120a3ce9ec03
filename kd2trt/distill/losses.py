"""Distillation losses: soft-label KL (×T²), hard-label CE, feature-hint MSE, and their weighted sum.

Hinton et al. (2015): softening both distributions by a temperature T shrinks the soft-label
gradient by 1/T², so the KL term is multiplied by T² to keep its weight against the hard-label
term independent of T. `alpha` trades the two; `beta` weights the hint (FitNets, Romero et al.)
computed through a learned adapter, because the student's features have other channel counts and
spatial sizes than the teacher's.

Class weights (`data.class_weights: balanced`) weight the hard-label CE term only, as a weighted mean (PyTorch's
`cross_entropy(weight=…)`: each item counts by its class's weight, divided by the batch's total weight). The
soft-label term is left unweighted: it is computed on every training image, most of which have no label under
the label-scarce protocol, and the teacher's distribution already speaks for every class on each image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def soft_label_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) · T², averaged over the batch."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
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
    class_weights: torch.Tensor | None = None  # of the CE term only (see the module's docstring)

    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                 labeled: torch.Tensor | None = None, adapted_student_features: torch.Tensor | None = None,
                 teacher_features: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        ce = hard_label_ce(student_logits, labels, labeled, self.label_smoothing, self.class_weights)
        kd = soft_label_kd(student_logits, teacher_logits, self.temperature)
        total = (1.0 - self.alpha) * ce + self.alpha * kd
        terms = {"ce": float(ce.detach()), "kd": float(kd.detach())}
        if self.beta > 0:
            if adapted_student_features is None or teacher_features is None:
                raise ValueError("beta > 0 needs student and teacher features (set feature_tap on both)")
            hint = hint_mse(adapted_student_features, teacher_features)
            total = total + self.beta * hint
            terms["hint"] = float(hint.detach())
        return total, terms
