from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kd2trt.distill.losses import DistillationLoss, HintAdapter, hard_label_ce, soft_label_kd


def test_identical_logits_give_zero_kd() -> None:
    logits = torch.randn(8, 10)
    assert soft_label_kd(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_known_value() -> None:
    """Two classes, T=1: KL(p‖q) written out by hand."""
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # softmax = (0.75, 0.25)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert soft_label_kd(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-5)


def test_temperature_squared_keeps_gradient_scale() -> None:
    """Without ×T² the soft-label gradient shrinks ~1/T²; with it, its size stays of the same order."""
    torch.manual_seed(0)
    teacher = torch.randn(64, 10) * 3
    student = torch.randn(64, 10, requires_grad=True)

    def grad_norm(temperature: float, scale: bool) -> float:
        student.grad = None
        loss = soft_label_kd(student, teacher, temperature)
        (loss if scale else loss / temperature**2).backward()
        return student.grad.norm().item()

    # high-T limit: the gradient of T²·KL tends to (s - t)/N·… independent of T
    ratio_scaled = grad_norm(20.0, True) / grad_norm(10.0, True)
    ratio_unscaled = grad_norm(20.0, False) / grad_norm(10.0, False)
    assert ratio_scaled == pytest.approx(1.0, abs=0.05)
    assert ratio_unscaled == pytest.approx(0.25, abs=0.02)


def test_teacher_gets_no_gradient() -> None:
    teacher = torch.randn(4, 3, requires_grad=True)
    soft_label_kd(torch.randn(4, 3, requires_grad=True), teacher, 2.0).backward()
    assert teacher.grad is None


def test_ce_on_labeled_items_only() -> None:
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    mask = torch.tensor([True, False, True, False, False, False])
    assert hard_label_ce(logits, labels, mask).item() == pytest.approx(
        F.cross_entropy(logits[mask], labels[mask]).item())
    assert hard_label_ce(logits, labels, torch.zeros(6, dtype=torch.bool)).item() == 0.0


@pytest.mark.parametrize(("student_shape", "teacher_shape"), [
    ((2, 8, 4, 4), (2, 32, 4, 4)),
    ((2, 8, 8, 8), (2, 32, 4, 4)),
    ((2, 16), (2, 64)),
])
def test_adapter_maps_student_features_to_teacher_shape(student_shape, teacher_shape) -> None:
    adapter = HintAdapter(student_shape, teacher_shape)
    assert adapter(torch.randn(student_shape)).shape == torch.Size(teacher_shape)


def test_adapter_rejects_map_vs_vector() -> None:
    with pytest.raises(ValueError, match="both be maps"):
        HintAdapter((2, 8, 4, 4), (2, 32))


def test_weighted_sum() -> None:
    torch.manual_seed(1)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    fs, ft = torch.randn(8, 4), torch.randn(8, 4)
    loss = DistillationLoss(temperature=3.0, alpha=0.7, beta=2.0)
    total, terms = loss(s, t, y, None, fs, ft)
    expected = 0.3 * F.cross_entropy(s, y) + 0.7 * soft_label_kd(s, t, 3.0) + 2.0 * F.mse_loss(fs, ft)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(terms) == {"ce", "kd", "hint"}
    with pytest.raises(ValueError, match="beta > 0 needs"):
        loss(s, t, y)
