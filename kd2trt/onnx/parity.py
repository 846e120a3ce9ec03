"""Numerical parity between two runs of the same model: max |Δlogit| and top-1 agreement.

Used as a gate, not a warning: an export whose logits drift beyond tolerance is an error, because
every later figure (calibration, engines, the bench) would inherit the drift unnoticed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kd2trt.errors import Kd2trtError


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float  # percent
    samples: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def compare(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    if reference.shape != candidate.shape:
        raise Kd2trtError(f"parity: output shapes differ ({reference.shape} vs {candidate.shape})")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agreement = float((reference.argmax(1) == candidate.argmax(1)).mean() * 100.0)
    return Parity(float(diff.max()), float(diff.mean()), agreement, int(reference.shape[0]))


def require(parity: Parity, what: str, atol: float, min_agreement: float = 100.0) -> Parity:
    """Raise when `parity` is beyond `atol` or below `min_agreement` percent."""
    if parity.max_abs_diff > atol or parity.top1_agreement < min_agreement:
        raise Kd2trtError(
            f"{what}: parity failed — max |Δlogit| {parity.max_abs_diff:.3g} (tolerance {atol:g}), top-1 "
            f"agreement {parity.top1_agreement:.2f}% (required {min_agreement:g}%) on {parity.samples} "
            "validation images; the exported graph does not compute what the model does"
        )
    return parity
