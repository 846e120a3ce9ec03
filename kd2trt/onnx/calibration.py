"""INT8 calibration on the host: the calibration set, and activation ranges from ONNX Runtime's calibrators.

One set of statistics feeds both INT8 outputs — the TensorRT calibration cache (implicit INT8 on
TensorRT ≤ 10.x) and the Q/DQ ONNX (explicit INT8, TensorRT 8.6–11.x) — so the two paths quantise
with the same ranges. Methods: `entropy` (TensorRT's own default, EntropyCalibration2: KL-divergence
threshold on a 2048-bin |x| histogram, 128 levels; kd2trt.onnx.entropy), `minmax`, `percentile` (99.999th
of |x|). ONNX Runtime's calibrators run the model and feed the tensors for all three.

Checked before anything is written: calibration data that is constant (all zeros, say) is refused when
read, and an activation whose range over the calibration set is zero is an error naming the tensors — its
scale would be 0, which TensorRT accepts and turns into an all-zero INT8 tensor, and a Q/DQ divides by.
Ranges come back in the graph's topological order (graph inputs, then node outputs as the nodes are
sorted), not in ONNX Runtime's set order, so the same ONNX and data give the same cache bytes every time.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
from onnxruntime.quantization.calibrate import TensorData, TensorsData, create_calibrator

from kd2trt.artifacts import temp_directory
from kd2trt.data import ImageDataset
from kd2trt.errors import Kd2trtError
from kd2trt.onnx import runtime
from kd2trt.onnx.calib_cache import activation_tensors
from kd2trt.onnx.entropy import TensorRTEntropyCollector

METHODS = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
           "percentile": CalibrationMethod.Percentile}
_EXTRA_OPTIONS = {
    "entropy": {"symmetric": True},  # the histogram and search are kd2trt.onnx.entropy's (TensorRT's)
    "minmax": {"symmetric": True},
    "percentile": {"symmetric": True, "num_bins": 2048, "percentile": 99.999},
}
MIN_RECOMMENDED_IMAGES = 300


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed images (N×C×H×W float32) and where they came from."""

    images: np.ndarray
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()

    def batches(self, size: int) -> list[np.ndarray]:
        """Consecutive chunks of `size` images; the last one holds the remainder (ragged)."""
        if size < 1:
            raise Kd2trtError(f"calibration batch size must be a positive integer, got {size}")
        return [self.images[i:i + size] for i in range(0, len(self.images), size)]


def calibration_set_from_split(dataset: ImageDataset, count: int, seed: int, description: str) -> CalibrationSet:
    """A stratified, seeded sample of `count` images (or all there are), preprocessed as in training."""
    labels = dataset.labels
    count = min(count, len(dataset))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)
    # round-robin over classes in shuffled order keeps the sample stratified for any count
    per_class = [order[labels[order] == cls].tolist() for cls in labels.unique().tolist()]
    picked: list[int] = []
    while len(picked) < count:
        for members in per_class:
            if members and len(picked) < count:
                picked.append(members.pop())
    images = torch.stack([dataset[i][0] for i in sorted(picked)]).numpy().astype(np.float32)
    return CalibrationSet(images, f"{description}: {len(picked)} stratified images (seed {seed})")


def calibration_set_from_file(path: Path, expected_chw: tuple[int, int, int]) -> CalibrationSet:
    """Preprocessed images from a `.npy` / `.npz` (first array) file, N×C×H×W float32, checked for shape."""
    if not path.is_file():
        raise Kd2trtError(f"{path}: calibration data not found; pass a .npy/.npz of preprocessed N×C×H×W images")
    try:
        loaded = np.load(path, allow_pickle=False)
        array = loaded[loaded.files[0]] if isinstance(loaded, np.lib.npyio.NpzFile) else loaded
    except (ValueError, OSError, IndexError) as exc:
        raise Kd2trtError(f"{path}: not a readable .npy/.npz array ({exc}); save with numpy.save") from None
    if array.ndim != 4 or tuple(array.shape[1:]) != tuple(expected_chw):
        c, h, w = expected_chw
        raise Kd2trtError(f"{path}: calibration data has shape {tuple(array.shape)}, the model takes "
                          f"N×{c}×{h}×{w} (preprocessed as in the checkpoint)")
    if len(array) == 0:
        raise Kd2trtError(f"{path}: calibration data is empty; it needs a few hundred representative images")
    if not np.isfinite(array).all():
        raise Kd2trtError(f"{path}: calibration data contains NaN or inf values")
    low, high = float(array.min()), float(array.max())
    if low == high:
        raise Kd2trtError(f"{path}: calibration data is constant (every value is {low:g}); it needs a few "
                          "hundred representative preprocessed images, not a placeholder array")
    return CalibrationSet(array.astype(np.float32), f"{path}: {len(array)} images")


class _Reader(CalibrationDataReader):
    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self._items = iter([{input_name: batch} for batch in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def collect_ranges(onnx_path: Path, calibration: CalibrationSet, method: str, batch_size: int = 64,
                   input_name: str = "input") -> TensorsData:
    """Symmetric activation ranges of every float tensor of the graph (graph input included)."""
    if method not in METHODS:
        raise Kd2trtError(f"calibration method {method!r}: use one of {', '.join(METHODS)}")
    if len(calibration.images) == 0:
        raise Kd2trtError(f"{calibration.source}: calibration set is empty")
    with temp_directory("calib") as tmp, runtime.quiet():
        calibrator = create_calibrator(Path(onnx_path), None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=METHODS[method], extra_options=_EXTRA_OPTIONS[method])
        if method == "entropy":
            calibrator.collector = TensorRTEntropyCollector()
        # One collect_data call per chunk: within a call ONNX Runtime's histogram calibrators stack the
        # per-batch outputs into one array (a ragged last batch breaks that), while across calls they merge
        # what they have collected (histograms widened as needed, min/max combined), so any count works.
        for chunk in calibration.batches(batch_size):
            calibrator.collect_data(_Reader(input_name, [chunk]))
        ranges = calibrator.compute_data()
    model = onnx.load(str(onnx_path))
    ordered = graph_order(model, ranges.data)
    ranges = TensorsData(ranges.calibration_method, {name: ranges.data[name] for name in ordered})
    check_nonzero_ranges(amax_of(ranges), activation_tensors(model), calibration.source)
    return ranges


def graph_order(model: onnx.ModelProto, names: Iterable[str]) -> list[str]:
    """`names` in the graph's topological order (inputs, then node outputs); any others after, sorted."""
    wanted = set(names)
    order = [i.name for i in model.graph.input] + [out for node in model.graph.node for out in node.output]
    seen: set[str] = set()
    ordered = [n for n in order if n in wanted and not (n in seen or seen.add(n))]
    return ordered + sorted(wanted - seen)


def check_nonzero_ranges(amax: dict[str, float], activations: list[str], source: str) -> None:
    """A zero range on a data-dependent tensor (all-zero or constant over the calibration set) is an error
    naming the tensors; constants folded into the graph (e.g. Identity of an initializer) are exempt."""
    zero = [name for name in activations if amax.get(name) == 0.0]
    if zero:
        shown = ", ".join(repr(n) for n in zero[:5]) + (f" and {len(zero) - 5} more" if len(zero) > 5 else "")
        raise Kd2trtError(f"calibration on {source}: {len(zero)} tensor(s) have a zero range (all-zero or constant "
                          f"over every calibration image): {shown}; their INT8 scale would be 0 — calibrate "
                          "on representative images, or check the model for dead layers")


def amax_of(ranges: TensorsData) -> dict[str, float]:
    """Per-tensor absolute maximum; a non-finite range is an error naming the tensor."""
    amax: dict[str, float] = {}
    for name, data in ranges.data.items():
        low, high = (float(np.asarray(v).max()) if i else float(np.asarray(v).min())
                     for i, v in enumerate(data.range_value))
        value = max(abs(low), abs(high))
        if not math.isfinite(value):
            raise Kd2trtError(f"calibration: tensor {name!r} has non-finite activations ({low}, {high}); "
                              "check the model and the calibration images for overflow")
        amax[name] = value
    return amax


def ranges_from_amax(amax: dict[str, float], method: str) -> TensorsData:
    """Rebuild symmetric ranges from per-tensor amax (a reused TensorRT cache → Q/DQ without data)."""
    data = {name: TensorData(lowest=np.float32(-value), highest=np.float32(value)) for name, value in amax.items()}
    return TensorsData(METHODS[method], data)
