"""Accuracy figures of one runner's logits against the labels, the teacher and the FP32 student."""

from __future__ import annotations

from typing import Any

import numpy as np

from kd2trt.metrics import top1
from kd2trt.onnx.parity import Tolerance, compare


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def accuracy(logits: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray,
             reference_logits: np.ndarray | None, classes: list[str], tolerance: Tolerance | None = None
             ) -> dict[str, Any]:
    """top-1 (top-5 with ≥ 10 classes), agreement with and KL(teacher ‖ model), parity with the FP32 student.

    The parity is kd2trt.onnx.parity's comparison — the export gates' own — against `tolerance` when given."""
    predictions = logits.argmax(1)
    out: dict[str, Any] = {"top1": top1(logits, labels)}
    if logits.shape[1] >= 10:
        top5 = np.argsort(-logits, axis=1)[:, :5]
        out["top5"] = float((top5 == labels[:, None]).any(axis=1).mean() * 100)
    out["agreement_with_teacher"] = float((predictions == teacher_logits.argmax(1)).mean() * 100)
    log_p_teacher, log_p_model = _log_softmax(teacher_logits), _log_softmax(logits)
    out["kl_to_teacher"] = float((np.exp(log_p_teacher) * (log_p_teacher - log_p_model)).sum(axis=1).mean())
    if reference_logits is not None:
        parity = compare(reference_logits, logits, tolerance)
        out["parity_vs_fp32_student"] = parity.as_dict()
        out["max_abs_diff_vs_fp32_student"] = parity.max_abs_diff
        out["agreement_with_fp32_student"] = parity.top1_agreement
    out["per_class_top1"] = {
        name: float((predictions[labels == index] == index).mean() * 100) if (labels == index).any() else None
        for index, name in enumerate(classes)
    }
    return out
