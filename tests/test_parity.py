"""The parity rule (kd2trt.onnx.parity): scale-aware, per image, and still refusing real mismatches.

The logits here imitate the zoo's students: EfficientNet-B0's span ~140 between its largest and smallest logit
(FP32 PyTorch vs ONNX Runtime 2.3e-3 absolute, 2e-5 of that range), digits students ~10.
"""

from __future__ import annotations

import numpy as np
import pytest

from kd2trt.config import ExportConfig, load_config
from kd2trt.errors import Kd2trtError
from kd2trt.onnx import stage as export_stage
from kd2trt.onnx.parity import TOLERANCE_KEYS, Parity, Tolerance, compare, require

DEFAULTS = ExportConfig()
FP32, FP16 = Tolerance.of(DEFAULTS, "fp32"), Tolerance.of(DEFAULTS, "fp16")


def _logits(scale: float, images: int = 256, classes: int = 10, seed: int = 0) -> np.ndarray:
    """Logits whose rows span about `scale` (max - min), with a clear winner on most rows."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((images, classes)) * scale / 6
    logits[np.arange(images), rng.integers(0, classes, images)] += scale / 3
    return logits.astype(np.float32)


def _rounded(logits: np.ndarray, relative: float, seed: int = 1) -> np.ndarray:
    """`logits` plus noise of `relative` × each row's range: floating-point error, which grows with the logits."""
    spread = (logits.max(1) - logits.min(1))[:, None]
    noise = np.random.default_rng(seed).uniform(-1, 1, logits.shape) * relative * spread
    return (logits + noise).astype(np.float32)


def test_large_logits_with_fp32_rounding_pass_where_an_absolute_bound_fails() -> None:
    """Guards the relative term: with `limits` returning atol alone (rtol ignored) this fails."""
    reference = _logits(140.0)
    candidate = _rounded(reference, 2e-5)  # EfficientNet-B0's measured FP32 error, relative to its range
    parity = compare(reference, candidate, FP32)
    assert parity.max_abs_diff > DEFAULTS.parity_atol  # the old absolute gate refused this correct export
    assert parity.within_tolerance and parity.tolerance_used < 0.1
    assert require(parity, "m.onnx", TOLERANCE_KEYS["fp32"]) is parity


def test_fp16_rounding_of_sensitive_models_passes() -> None:
    """The zoo's EfficientNet-B0 FP16 graph: 2.2 % of the range (2.4 absolute on logits spanning ~140)."""
    reference = _logits(140.0)
    assert compare(reference, _rounded(reference, 0.022), FP16).within_tolerance


@pytest.mark.parametrize("tolerance", [FP32, FP16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("scale", [10.0, 140.0])
def test_classes_swapped_are_refused(tolerance: Tolerance, scale: float) -> None:
    """Two output classes swapped (a wrong class order, a mis-wired Gemm). Guards the per-element difference:
    comparing sorted rows (or only the max logit) would pass it."""
    reference = _logits(scale)
    swapped = reference.copy()
    swapped[:, [2, 7]] = swapped[:, [7, 2]]
    parity = compare(reference, swapped, tolerance)
    assert not parity.within_tolerance and parity.max_rel_diff > 0.1
    with pytest.raises(Kd2trtError, match=r"^m\.onnx: parity failed — max \|Δlogit\| .* of an image's logit "
                                          r"range .*; the exported graph does not compute what the model does "
                                          r"\(tolerance: export\.\S+ / export\.\S+, flags --\S+ / --\S+\)$"):
        require(parity, "m.onnx", TOLERANCE_KEYS["fp32"])


def test_an_offset_on_one_class_is_refused() -> None:
    """A bias on one class of 10 % of the range (wrong bias folding, preprocessing): top-1 mostly holds, the
    logits do not."""
    reference = _logits(140.0)
    shifted = reference.copy()
    shifted[:, 3] += 0.1 * (reference.max(1) - reference.min(1))
    assert not compare(reference, shifted, FP16).within_tolerance
    assert not compare(reference, shifted, FP32).within_tolerance


def test_each_image_is_held_to_its_own_range() -> None:
    """Guards the per-row scale: one image with a small range may not borrow the slack of a large one (a rule
    using the largest range of the batch, or its max |logit|, passes this)."""
    reference = np.concatenate([_logits(140.0, images=63), _logits(1.0, images=1, seed=3)])
    candidate = reference.copy()
    candidate[-1, 0] += 0.5 * (reference[-1].max() - reference[-1].min())  # half of that image's own range
    parity = compare(reference, candidate, FP16)
    assert parity.max_rel_diff == pytest.approx(0.5, rel=1e-3)
    assert not parity.within_tolerance


def test_verdict_is_shift_invariant() -> None:
    """Softmax ignores a constant added to every logit; so does the rule (Polygraphy's elementwise
    |a - b| ≤ atol + rtol·|b| does not: logits near zero get no slack)."""
    reference = _logits(10.0)
    candidate = _rounded(reference, 0.03)
    for offset in (0.0, 1000.0, -50.0):
        parity = compare(reference + offset, candidate + offset, FP16)
        assert parity.within_tolerance
        assert parity.max_rel_diff == pytest.approx(compare(reference, candidate, FP16).max_rel_diff, rel=1e-3)


def test_constant_rows_and_non_finite_logits() -> None:
    """A constant row has no range: the absolute term alone applies. An FP16 overflow (inf/NaN) never passes."""
    reference = np.zeros((4, 3), np.float32)
    assert compare(reference, reference + DEFAULTS.parity_atol / 2, FP32).within_tolerance
    assert not compare(reference, reference + DEFAULTS.parity_atol * 2, FP32).within_tolerance
    for bad in (np.nan, np.inf):
        candidate = _logits(10.0)
        candidate[5, 1] = bad
        parity = compare(_logits(10.0), candidate, FP16)
        assert parity.max_abs_diff == np.inf and not parity.within_tolerance


def test_figures_are_recorded_in_absolute_and_relative_terms() -> None:
    reference = _logits(10.0)
    record = compare(reference, _rounded(reference, 1e-3), FP16).as_dict()
    assert set(record) == {"max_abs_diff", "mean_abs_diff", "max_rel_diff", "top1_agreement", "samples", "atol",
                           "rtol", "tolerance_used"}
    assert record["max_rel_diff"] == pytest.approx(1e-3, rel=0.05)
    assert Parity(**record).within_tolerance
    with pytest.raises(ValueError, match="without a tolerance"):
        require(compare(reference, reference), "m.onnx", TOLERANCE_KEYS["fp32"])


def test_tolerances_come_from_the_recipe_and_its_flags() -> None:
    config = load_config(None, {"export.fp16_rtol": 0.2, "export.parity_rtol": 0.0})
    assert Tolerance.of(config.export, "fp16") == Tolerance(config.export.fp16_atol, 0.2)
    assert Tolerance.of(config.export, "fp32") == Tolerance(1e-4, 0.0)
    with pytest.raises(Kd2trtError, match=r"export\.fp16_rtol"):
        load_config(None, {"export.fp16_rtol": -0.1})
    with pytest.raises(ValueError, match="int8"):
        Tolerance.of(config.export, "int8")


def test_fp16_failure_says_whether_the_model_or_the_conversion_is_at_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards fp16_sensitivity's two verdicts: the FP32 graph on FP16-rounded inputs is the model's own floor."""
    reference = _logits(10.0)
    images = np.ones((len(reference), 1, 2, 2), np.float32)

    def explain(floor: float, fp16_error: float) -> str:
        monkeypatch.setattr(export_stage, "ort_logits", lambda path, x: _rounded(reference, floor))
        return export_stage.fp16_sensitivity(None, images, reference,  # type: ignore[arg-type]
                                             compare(reference, _rounded(reference, fp16_error, seed=2), FP16))

    assert explain(0.05, 0.1).startswith("rounding only the input to FP16 already moves")
    assert explain(0.001, 0.1).startswith("far beyond what rounding the input to FP16 does")
