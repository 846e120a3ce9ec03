"""kd2trt.trt.calibrator without TensorRT: batching of calibration data and the cache header gate."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from kd2trt.errors import Kd2trtError
from kd2trt.onnx.calib_cache import CALIBRATION_ALGORITHMS, CalibCacheError, TrtVersion, parse_cache
from kd2trt.trt.calibrator import (
    CALIBRATOR_CLASSES,
    BatchStream,
    CalibrationState,
    _load_cache_bytes,
    make_calibrator,
    raise_calibration_error,
)

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
    items = [np.arange(32, dtype=np.float64).reshape(2, 1, 4, 4), np.full((2, 1, 4, 4), 7, dtype=np.uint8)]
    stream = BatchStream(items, 4)
    first, second = list(stream), list(stream)
    assert len(first) == len(second) == 1 and first[0].dtype == np.float32
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[0][:2], items[0].astype(np.float32))
    assert (first[0][2:] == 7).all()
    assert (stream.samples, stream.batches) == (4, 1)  # counters restart with each pass, not accumulate


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



@pytest.mark.parametrize(("make", "match"), [
    (lambda path: path.mkdir(), "cannot read calibration cache"),
    (lambda path: path.write_bytes(b"\x80\x00plan"), "is not UTF-8 text"),
])
def test_an_unreadable_cache_is_one_line_naming_it(tmp_path: Path, make, match: str) -> None:
    cache = tmp_path / "student.calib-trt10.3.0.cache"
    make(cache)
    with pytest.raises(CalibCacheError, match=match) as err:
        _load_cache_bytes(cache, TrtVersion(10, 3, 0), "EntropyCalibration2", force=False)
    assert str(cache) in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------- callbacks


def state_for(tmp_path: Path, items, batch_size: int = 2) -> CalibrationState:
    stream = BatchStream(items, batch_size)
    return CalibrationState(tmp_path / "caches" / "student.calib-trt10.3.0.cache", "input", batch_size, stream, None)


def drain(state: CalibrationState, limit: int = 10) -> int:
    """Call get_batch as TensorRT does, until it answers None; the number of batches handed out."""
    for count in range(limit):
        if state.next_batch(["input"]) is None:
            return count
    raise AssertionError("get_batch never answered None")


def test_a_cache_is_written_atomically_into_a_new_folder(tmp_path: Path) -> None:
    state = state_for(tmp_path, samples(4))
    state.write_cache(CACHE_1030.read_bytes())
    assert state.cache_written and state.error is None
    assert state.cache_path.read_bytes() == CACHE_1030.read_bytes()
    assert [p.name for p in state.cache_path.parent.iterdir()] == [state.cache_path.name]  # no temporary left


def test_no_cache_is_written_after_get_batch_failed_part_way(tmp_path: Path, caplog) -> None:
    # Batch 1 is fine, batch 2 holds a NaN. Without a GPU, batch 1 already fails to reach the device; with one,
    # batch 2 fails validation. Either way get_batch fails part way and TensorRT ends calibration early.
    bad = samples(4)
    bad[3][0, 0, 0] = np.nan
    state = state_for(tmp_path, bad)
    drain(state)
    state.free()  # the device buffer, where batch 1 got one
    assert isinstance(state.error, Kd2trtError)
    assert state.next_batch(["input"]) is None  # no more batches once failed
    with caplog.at_level("WARNING", logger="kd2trt.trt.calibrator"):
        state.write_cache(CACHE_1030.read_bytes())  # what TensorRT computed from the partial set
    assert not state.cache_written and not state.cache_path.exists()
    assert "not written" in caplog.text
    with pytest.raises(Kd2trtError):
        raise_calibration_error(state.error)


def test_a_wrong_input_name_is_kept_and_nothing_is_written(tmp_path: Path) -> None:
    state = state_for(tmp_path, samples(4))
    assert state.next_batch(["images"]) is None
    assert isinstance(state.error, Kd2trtError) and "'input'" in str(state.error)
    state.write_cache(CACHE_1030.read_bytes())
    assert not state.cache_path.exists()


def test_keyboard_interrupt_in_get_batch_is_reraised_as_is(tmp_path: Path) -> None:
    def interrupted():
        yield from samples(2)
        raise KeyboardInterrupt

    state = state_for(tmp_path, interrupted(), batch_size=4)
    assert state.next_batch(["input"]) is None  # caught: it must not cross into TensorRT's C++
    assert isinstance(state.error, KeyboardInterrupt)
    state.write_cache(CACHE_1030.read_bytes())
    assert not state.cache_path.exists()
    with pytest.raises(KeyboardInterrupt):
        raise_calibration_error(state.error)


def test_raise_calibration_error() -> None:
    raise_calibration_error(None)
    with pytest.raises(Kd2trtError, match="INT8 calibration failed: ValueError: bad range"):
        raise_calibration_error(ValueError("bad range"))
    original = Kd2trtError("calib.npy: not images")
    with pytest.raises(Kd2trtError) as err:
        raise_calibration_error(original)
    assert err.value is original
    with pytest.raises(SystemExit):
        raise_calibration_error(SystemExit(3))


def test_without_data_get_batch_says_the_cache_was_not_accepted(tmp_path: Path) -> None:
    cache = tmp_path / "student.calib-trt10.3.0.cache"
    state = CalibrationState(cache, "input", 8, None, CACHE_1030.read_bytes())
    assert state.read_cache() == CACHE_1030.read_bytes()
    assert state.next_batch(["input"]) is None
    assert isinstance(state.error, Kd2trtError) and str(cache) in str(state.error)
