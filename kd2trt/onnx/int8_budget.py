"""An INT8 accuracy budget: the calibration method, then the fewest layers kept in higher precision.

Post-training INT8 loses accuracy on some models, and the cause is rarely spread evenly: one calibration
method clips a heavy-tailed activation that another keeps (measured on the imagefolder recipe: entropy −8.9
points, percentile or minmax −1.7), and a few layers (often the first conv, the head) carry most of the rest.
So, given a budget in top-1 points against the FP32 graph:

1. each calibration method's Q/DQ graph is scored on the **validation** split (fake-quant in ONNX Runtime, which
   is TensorRT's arithmetic). Among the methods within budget the one whose predictions agree most with the
   FP32 graph's is kept (INT8 is to reproduce the FP32 model: on a small validation split a method can score
   *above* FP32 by a lucky image or two while changing many answers — measured on the imagefolder stand-in,
   seed 2: entropy 97.9 % vs FP32 95.7 % on 47 validation images, then −8.5 points on test, where minmax,
   equal to FP32 on validation, lost nothing); when none is within budget, the most accurate one;
2. if its drop is still over budget, each weighted layer's sensitivity is measured (validation top-1 with only
   that layer left unquantised), and layers are kept in higher precision, most sensitive first, until the
   drop is within budget -- the curve of layers kept against accuracy is recorded.

The test split never takes part in a choice; export reports it afterwards. The result drives both INT8
paths: the Q/DQ graph without those layers' Q/DQ (TensorRT 11 runs them as typed, FP32 here) and, for implicit
INT8 on TensorRT <= 10, the list of layers the engine builder sets to higher precision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization.calibrate import TensorsData

from kd2trt.artifacts import temp_directory
from kd2trt.metrics import top1
from kd2trt.onnx.qdq import quantize_qdq, weighted_nodes
from kd2trt.onnx.runtime import OrtRunner

__all__ = ["BudgetResult", "search_budget"]


@dataclass
class BudgetResult:
    """What the budget search chose, and everything it measured on the validation split."""

    method: str
    ranges: TensorsData
    fp32_val_top1: float
    int8_val_top1: float                     # with `high_precision` kept out of INT8
    budget_points: float
    high_precision: list[str] = field(default_factory=list)
    methods_val_top1: dict[str, float] = field(default_factory=dict)
    methods_val_agreement: dict[str, float] = field(default_factory=dict)  # % of FP32's top-1 answers kept
    sensitivity: dict[str, float] = field(default_factory=dict)  # node -> val top-1 gain when left unquantised
    curve: list[dict[str, Any]] = field(default_factory=list)     # layers kept -> val top-1

    @property
    def met(self) -> bool:
        return self.fp32_val_top1 - self.int8_val_top1 <= self.budget_points

    def record(self) -> dict[str, Any]:
        return {"budget_points": self.budget_points, "method": self.method, "met": self.met,
                "fp32_val_top1": self.fp32_val_top1, "int8_val_top1": self.int8_val_top1,
                "val_drop_points": self.fp32_val_top1 - self.int8_val_top1,
                "high_precision_layers": self.high_precision, "methods_val_top1": self.methods_val_top1,
                "methods_val_agreement": self.methods_val_agreement,
                "sensitivity_val_points": self.sensitivity, "curve": self.curve}


def _qdq_logits(fp32_path: Path, ranges: TensorsData, high_precision: Sequence[str], images: np.ndarray,
                scratch: Path) -> np.ndarray:
    path = quantize_qdq(fp32_path, scratch / "candidate.int8.onnx", ranges, high_precision)
    with OrtRunner(path, fake_quant=True) as runner:
        return runner.infer_many(images)


def _qdq_top1(fp32_path: Path, ranges: TensorsData, high_precision: Sequence[str], images: np.ndarray,
              labels: np.ndarray, scratch: Path) -> float:
    return top1(_qdq_logits(fp32_path, ranges, high_precision, images, scratch), labels)


def search_budget(fp32_path: Path, ranges_of: Callable[[str], TensorsData], methods: Sequence[str],
                  images: np.ndarray, labels: np.ndarray, budget_points: float,
                  progress: Callable[[str], None] = lambda _: None) -> BudgetResult:
    """Choose the calibration method and the layers kept in high precision (module docstring).

    `ranges_of(method)` calibrates (or returns a reused cache's ranges); `images`/`labels` are the validation
    split, preprocessed.
    """
    with OrtRunner(fp32_path) as runner:
        fp32_logits = runner.infer_many(images)
    fp32, fp32_answers = top1(fp32_logits, labels), fp32_logits.argmax(axis=1)
    with temp_directory("budget") as tmp:
        scratch = Path(tmp)
        scores: dict[str, float] = {}
        agreement: dict[str, float] = {}
        ranges: dict[str, TensorsData] = {}
        for method in methods:
            ranges[method] = ranges_of(method)
            logits = _qdq_logits(fp32_path, ranges[method], (), images, scratch)
            scores[method] = top1(logits, labels)
            agreement[method] = 100.0 * float(np.mean(logits.argmax(axis=1) == fp32_answers))
            progress(f"calibration {method}: validation top-1 {scores[method]:.2f}% (FP32 {fp32:.2f}%), "
                     f"{agreement[method]:.1f}% of FP32's answers")
        within = [m for m in methods if fp32 - scores[m] <= budget_points]
        # ties: the earlier (the configured one comes first)
        method = max(within, key=lambda m: agreement[m]) if within else max(methods, key=lambda m: scores[m])
        result = BudgetResult(method, ranges[method], fp32, scores[method], budget_points,
                              methods_val_top1=scores, methods_val_agreement=agreement,
                              curve=[{"layers": 0, "val_top1": scores[method]}])
        if result.met:
            return result
        nodes = weighted_nodes(onnx.load(str(fp32_path)))
        for node in nodes:
            gain = _qdq_top1(fp32_path, result.ranges, [node], images, labels, scratch) - scores[method]
            result.sensitivity[node] = gain
        order = sorted(nodes, key=lambda n: -result.sensitivity[n])  # stable: graph order among equals
        for node in order:
            result.high_precision.append(node)
            result.int8_val_top1 = _qdq_top1(fp32_path, result.ranges, result.high_precision, images, labels,
                                             scratch)
            result.curve.append({"layers": len(result.high_precision), "added": node,
                                 "val_top1": result.int8_val_top1})
            progress(f"{len(result.high_precision)} layer(s) in high precision (+{node}): validation top-1 "
                     f"{result.int8_val_top1:.2f}%")
            if result.met:
                break
    return result
