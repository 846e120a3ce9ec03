"""kd2trt.trt.calibrator without TensorRT: batching of calibration data and the cache header gate."""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from kd2trt.errors import Kd2trtError
from kd2trt.onnx.calib_cache import CALIBRATION_ALGORITHMS, CalibCacheError, TrtVersion, parse_cache
from kd2trt.trt.calibrator import CALIBRATOR_CLASSES, BatchStream, _load_cache_bytes, make_calibrator

CALIB_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "calib"
CACHE_1030 = CALIB_FIXTURES / "trt100300_entropy2_colon_names.cache"


def samples(n: int, chw=(1, 4, 4)) -> list[np.ndarray]:
    return [np.full(chw, float(i), dtype=np.float32) for i in range(n)]


def ids(batches) -> list[list[int]]:
    return [[int(sample[0, 0, 0]) for sample in batch] for batch in batches]


# --------------------------------------------------------------------------------------------- batching


def test_exact_batches_from_single_samples() -> None:
    stream = BatchStream(samples(8), 4)
    batches = list(stream)
    assert [b.shape for b in batches] == [(4, 1, 4, 4)] * 2
    assert all(b.dtype == np.float32 and b.flags["C_CONTIGUOUS"] for b in batches)
    assert ids(batches) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert (stream.samples, stream.batches, stream.dropped, stream.padded) == (8, 2, 0, 0)


def test_batches_are_rechunked_across_items() -> None:
    items = [np.stack(samples(3)), np.stack(samples(5))[3:], samples(1)[0]]  # 3 + 2 + 1 samples
    assert ids(BatchStream(items, 2)) == [[0, 1], [2, 3], [4, 0]]


def test_auto_drops_a_partial_last_batch_when_full_batches_exist() -> None:
    stream = BatchStream(samples(10), 4)
    assert ids(stream) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert (stream.dropped, stream.padded) == (2, 0)


def test_auto_pads_when_there_is_no_full_batch() -> None:
    stream = BatchStream(samples(3), 8)
    assert ids(stream) == [[0, 1, 2, 0, 1, 2, 0, 1]]
    assert (stream.batches, stream.padded, stream.dropped) == (1, 5, 0)


def test_explicit_policies() -> None:
    assert ids(BatchStream(samples(5), 2, last="pad")) == [[0, 1], [2, 3], [4, 4]]
    assert ids(BatchStream(samples(3), 4, last="drop")) == []


def test_casts_to_float32_and_reiterates() -> None:
    stream = BatchStream([np.zeros((2, 1, 4, 4), dtype=np.float64), np.zeros((2, 1, 4, 4), dtype=np.uint8)], 4)
    first = list(stream)
    assert first[0].dtype == np.float32
    assert stream.samples == 4


@pytest.mark.parametrize(("items", "chw", "match"), [
    ([], None, "calibration data is empty"),
    ([np.zeros((4, 4), np.float32)], None, r"item 0 has shape \(4, 4\)"),
    ([np.zeros((1, 4, 4), np.float32), np.zeros((3, 4, 4), np.float32)], None,
     r"item 1 has images of shape \(3, 4, 4\)"),
    ([np.zeros((1, 4, 4), np.float32)], (3, 4, 4), r"expected \(3, 4, 4\)"),
    ([np.array([[[np.nan]]], dtype=np.float32)], None, "NaN or inf"),
    ([np.array([[["a"]]])], None, "dtype"),
])
def test_bad_calibration_data(items, chw, match) -> None:
    with pytest.raises(Kd2trtError, match=match):
        list(BatchStream(items, 2, chw))


@pytest.mark.parametrize(("size", "last"), [(0, "auto"), (2.5, "auto"), (True, "auto"), (2, "repeat")])
def test_bad_arguments(size, last) -> None:
    with pytest.raises(Kd2trtError):
        BatchStream(samples(2), size, last=last)


# --------------------------------------------------------------------------------------------- cache gate


def test_calibrator_classes_match_cache_algorithms() -> None:
    names = {"IInt8EntropyCalibrator2": "EntropyCalibration2", "IInt8MinMaxCalibrator": "MinMaxCalibration"}
    assert set(CALIBRATOR_CLASSES) == set(CALIBRATION_ALGORITHMS)
    for method, class_name in CALIBRATOR_CLASSES.items():
        assert names[class_name] == CALIBRATION_ALGORITHMS[method]


def test_a_matching_cache_is_handed_over_byte_for_byte() -> None:
    data = _load_cache_bytes(CACHE_1030, TrtVersion(10, 3, 0), "EntropyCalibration2", force=False)
    assert data == CACHE_1030.read_bytes()


def test_a_foreign_cache_is_refused_before_tensorrt_sees_it() -> None:
    with pytest.raises(CalibCacheError, match=r"TensorRT 10\.3\.0.*TensorRT 8\.6\.2.*silently ignore"):
        _load_cache_bytes(CACHE_1030, TrtVersion(8, 6, 2), "EntropyCalibration2", force=False)
    with pytest.raises(CalibCacheError, match="MinMaxCalibration"):
        _load_cache_bytes(CACHE_1030, TrtVersion(10, 3, 0), "MinMaxCalibration", force=False)


def test_force_rewrites_only_the_header() -> None:
    data = _load_cache_bytes(CACHE_1030, TrtVersion(10, 14, 1), "EntropyCalibration2", force=True)
    forced, original = parse_cache(data.decode()), parse_cache(CACHE_1030.read_text())
    assert forced.header == "TRT-101401-EntropyCalibration2"
    assert forced.scales == original.scales


def test_make_calibrator_on_tensorrt_without_calibrators() -> None:
    # A namespace standing for TensorRT 11's module: it has no calibrator classes (nothing else is imitated).
    trt11 = types.SimpleNamespace(__version__="11.0.0.14")
    with pytest.raises(Kd2trtError, match=r"calibrators were removed in TensorRT 11.*--int8-path qdq"):
        make_calibrator(trt11, "entropy", None, "missing.cache", 8, "input")
    with pytest.raises(Kd2trtError, match="unknown calibration method"):
        make_calibrator(trt11, "kl", None, "missing.cache", 8, "input")


def test_copies_of_real_fixture_still_parse(tmp_path: Path) -> None:
    copy = tmp_path / "student.calib-trt10.3.0.cache"
    shutil.copy(CACHE_1030, copy)
    assert _load_cache_bytes(copy, TrtVersion(10, 3, 0), "entropy", force=False) == copy.read_bytes()
