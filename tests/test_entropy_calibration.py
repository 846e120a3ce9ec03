"""TensorRT's entropy calibration: the same thresholds as NVIDIA ModelOpt's reference, and what they mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kd2trt.onnx import calibration
from kd2trt.onnx.entropy import AbsHistogram, entropy_threshold_bin
from kd2trt.onnx.export import export_onnx


def _histograms(seed: int) -> list[np.ndarray]:
    """Histograms of the shapes calibration meets: flat, sparse, heavy-tailed, post-ReLU with an outlier."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in range(4):
        n = int(rng.integers(128, 400))
        if kind == 0:
            out.append(rng.integers(0, 50, n))
        elif kind == 1:
            out.append((rng.random(n) < 0.3) * rng.integers(1, 1000, n))
        elif kind == 2:
            out.append(np.histogram(np.abs(rng.standard_t(2, 20000)), bins=n)[0])
        else:
            relu = np.histogram(np.maximum(rng.normal(size=20000), 0), bins=n)[0]
            relu[-1] += 5
            out.append(relu)
    return out


@pytest.mark.parametrize("seed", range(10))
def test_threshold_search_equals_modelopts_reference(seed: int) -> None:
    """Exactly the bin ModelOpt's (NVIDIA's) per-bin reference loop picks, on 4 histogram shapes × 10 seeds."""
    histogram = pytest.importorskip("modelopt.torch.quantization.calib.histogram",
                                    reason="NVIDIA ModelOpt (the qat extra) is the reference")
    for counts in _histograms(seed):
        edges = np.arange(len(counts) + 1, dtype=np.float64)
        expected = float(histogram._compute_amax_entropy(counts.copy(), edges, 8, False))
        assert entropy_threshold_bin(counts) == expected


def test_ties_go_to_the_largest_threshold() -> None:
    """Mass only in the first two bins: every candidate reproduces it (KL 0); TensorRT/ModelOpt keep the widest."""
    counts = np.zeros(300, np.int64)
    counts[:2] = 7
    assert entropy_threshold_bin(counts) == 300


def test_collection_and_threshold_equal_modelopts_calibrator() -> None:
    """The whole path, widening included: batches whose range grows, through ModelOpt's public calibrator."""
    calib = pytest.importorskip("modelopt.torch.quantization.calib", reason="NVIDIA ModelOpt is the reference")
    rng = np.random.default_rng(0)
    batches = [np.maximum(rng.normal(size=5000), 0).astype(np.float32) * (1 + 0.7 * b) for b in range(3)]
    batches[1][:2] = 30.0
    reference, ours = calib.HistogramCalibrator(num_bins=300), AbsHistogram(300)
    for batch in batches:
        reference.collect(torch.from_numpy(batch))
        ours.add(batch)
    assert len(ours.counts) == reference._calib_hist.numel()
    assert ours.entropy_amax() == pytest.approx(float(reference.compute_amax("entropy")), rel=1e-5)


def test_entropy_clips_a_heavy_tail_but_not_into_empty_bins() -> None:
    """What TensorRT's threshold does: a heavy tail is clipped far below the max; a lone outlier past empty
    bins is kept (clipping it onto an empty bin is an infinite divergence); a flat range is kept whole."""
    rng = np.random.default_rng(0)
    tail = AbsHistogram()
    tail.add(rng.standard_t(2, 100_000).astype(np.float32))
    assert tail.entropy_amax() < 0.2 * tail.amax
    lone = AbsHistogram()
    lone.add(np.concatenate([np.abs(rng.normal(size=100_000)), [200.0]]).astype(np.float32))
    assert lone.entropy_amax() == pytest.approx(200.0)
    flat = AbsHistogram()
    flat.add(rng.uniform(-1.0, 1.0, 100_000).astype(np.float32))
    assert flat.entropy_amax() == pytest.approx(flat.amax, rel=0.01)


def test_zero_and_empty_inputs() -> None:
    """All zeros: amax 0 (the caller names the tensor); zeros first, data later: the data's histogram."""
    zeros = AbsHistogram()
    zeros.add(np.zeros(100, np.float32))
    assert zeros.entropy_amax() == 0.0
    later = AbsHistogram()
    later.add(np.zeros(100, np.float32))
    later.add(np.linspace(-2.0, 2.0, 10_000, dtype=np.float32))
    assert later.entropy_amax() == pytest.approx(2.0, rel=0.01)


def test_collect_ranges_entropy_is_tensorrts_threshold_on_each_tensor(tmp_path: Path) -> None:
    """Through ONNX Runtime's calibrator: the graph input's range is the threshold of its own |x| histogram,
    symmetric, and under the min/max range wherever something was clipped."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    path = export_onnx(model, torch.randn(2, 1, 8, 8), tmp_path / "m.onnx")
    images = np.random.default_rng(0).standard_t(3, (96, 1, 8, 8)).astype(np.float32)
    ranges = calibration.collect_ranges(path, calibration.CalibrationSet(images, "t3"), "entropy", batch_size=32)
    expected = AbsHistogram()
    for i in range(0, 96, 32):
        expected.add(images[i:i + 32])
    low, high = (float(v) for v in ranges.data["input"].range_value)
    assert high == pytest.approx(expected.entropy_amax(), rel=1e-6) and low == -high
    entropy_amax = calibration.amax_of(ranges)
    minmax_amax = calibration.amax_of(calibration.collect_ranges(path, calibration.CalibrationSet(images, "t3"),
                                                                 "minmax", batch_size=32))
    assert set(entropy_amax) == set(minmax_amax)
    assert all(entropy_amax[n] <= minmax_amax[n] for n in entropy_amax)
    assert entropy_amax["input"] < 0.8 * minmax_amax["input"]  # Student-t tails are clipped
