"""Numerical parity between two runs of the same model: the one comparison every gate in kd2trt uses.

Used as a gate, not a warning: an export whose logits drift beyond tolerance is an error, because
every later figure (calibration, engines, the bench) would inherit the drift unnoticed.

The rule, per image (row) i: max_j |candidate_ij - reference_ij| <= atol + rtol * range_i, where range_i is
the spread of the reference's logits on that image (max_j - min_j). Why per-row range, not Polygraphy's
elementwise |reference_ij|: logits cross zero and only their differences matter (softmax is shift-
invariant), so a logit near zero gets no relative slack elementwise although its rounding error is as large
as its neighbours'; and why relative at all: floating-point error grows with the logits' size, so an absolute
bound that fits a 10-logit-wide digits CNN refuses a correct export of a model whose logits span 140
(EfficientNet-B0 of the zoo: FP32 PyTorch vs ONNX Runtime 2.2e-3 absolute, 3e-5 of the row's range —
as far as PyTorch's own FP32 is from FP64). A wrong op, wrong preprocessing or a class swap moves logits by a
sizeable share of the range and still fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from kd2trt.config import ExportConfig
from kd2trt.errors import Kd2trtError

#: The recipe keys and command-line flags of each precision's tolerance, as a failed gate names them.
TOLERANCE_KEYS = {
    "fp32": "export.parity_atol / export.parity_rtol, flags --parity-atol / --parity-rtol",
    "fp16": "export.fp16_atol / export.fp16_rtol, flags --fp16-atol / --fp16-rtol",
}


@dataclass(frozen=True)
class Tolerance:
    """How far a candidate's logits may be from the reference's: atol + rtol · (the row's logit range)."""

    atol: float
    rtol: float

    def limits(self, reference: np.ndarray) -> np.ndarray:
        """Each row's allowed max |Δlogit|."""
        return self.atol + self.rtol * row_range(reference)

    @classmethod
    def of(cls, export: ExportConfig, precision: str) -> Tolerance:
        """The recipe's tolerance for an FP32 or FP16 form (INT8 is gated on top-1 agreement instead)."""
        if precision == "fp32":
            return cls(export.parity_atol, export.parity_rtol)
        if precision == "fp16":
            return cls(export.fp16_atol, export.fp16_rtol)
        raise ValueError(f"no logit tolerance for precision {precision!r}")


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    mean_abs_diff: float
    max_rel_diff: float      # max over rows of max |Δlogit| / the reference row's logit range
    top1_agreement: float    # percent
    samples: int
    atol: float | None = None
    rtol: float | None = None
    tolerance_used: float | None = None  # max over rows of max |Δlogit| / (atol + rtol·range); ≤ 1 passes

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    @property
    def within_tolerance(self) -> bool:
        return self.tolerance_used is not None and self.tolerance_used <= 1.0


def row_range(logits: np.ndarray) -> np.ndarray:
    """max - min of each row, in float64: the spread that decides the prediction, shift-invariant."""
    logits = logits.astype(np.float64)
    return logits.max(axis=1) - logits.min(axis=1)


def compare(reference: np.ndarray, candidate: np.ndarray, tolerance: Tolerance | None = None) -> Parity:
    """Absolute and range-relative |Δlogit| and top-1 agreement; with `tolerance`, the share of it used.

    A non-finite candidate logit (FP16 overflow: inf, NaN) counts as an infinite difference."""
    if reference.shape != candidate.shape:
        raise Kd2trtError(f"parity: output shapes differ ({reference.shape} vs {candidate.shape})")
    if reference.ndim != 2 or reference.shape[0] == 0:
        raise Kd2trtError(f"parity: expected a non-empty (images, classes) array of logits, got {reference.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    diff[~np.isfinite(diff)] = np.inf
    row_max = diff.max(axis=1)
    relative = _ratio(row_max, row_range(reference))
    agreement = float((reference.argmax(1) == candidate.argmax(1)).mean() * 100.0)
    used = None if tolerance is None else float(_ratio(row_max, tolerance.limits(reference)).max())
    return Parity(float(diff.max()), float(diff.mean()), float(relative.max()), agreement, int(reference.shape[0]),
                  None if tolerance is None else tolerance.atol, None if tolerance is None else tolerance.rtol, used)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, where 0/0 is 0 and x/0 is inf (a constant row, a zero tolerance)."""
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, np.where(numerator > 0, np.inf, 0.0))


def describe(parity: Parity) -> str:
    """The figures of a comparison made with a tolerance, absolute and relative, for messages and logs."""
    if parity.tolerance_used is None:
        raise ValueError("parity was compared without a tolerance; pass one to compare()")
    return (f"max |Δlogit| {parity.max_abs_diff:.3g}, at most {parity.max_rel_diff:.3g} of an image's logit range "
            f"({parity.tolerance_used:.2f}× the tolerance {parity.atol:g} + {parity.rtol:g}·range; top-1 "
            f"agreement {parity.top1_agreement:.2f}% on {parity.samples} images)")


def require(parity: Parity, what: str, keys: str, explain: Callable[[], str] | None = None) -> Parity:
    """Raise when `parity` (compared with a tolerance) is beyond it on any image.

    No separate top-1 agreement requirement: on an image within the tolerance the prediction can only change
    where the reference's top two logits are within twice the tolerance of each other (a tie at this
    precision), and any other change breaks the tolerance itself — so the logits decide, and agreement is
    reported. `keys`: the recipe keys and flags of that tolerance, named in the error; `explain()`: a sentence
    on the likely cause, computed only when the gate fails (it may cost another inference pass)."""
    if not parity.within_tolerance:
        cause = explain() if explain is not None else "the exported graph does not compute what the model does"
        raise Kd2trtError(f"{what}: parity failed — {describe(parity)}; {cause} (tolerance: {keys})")
    return parity
