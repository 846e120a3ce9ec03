"""INT8 calibrators for TensorRT <= 10.x (implicit quantization), fed from kd2trt's cache or from live data.

:func:`make_calibrator` returns an instance of a subclass of ``trt.IInt8EntropyCalibrator2`` (``entropy``,
``percentile``) or ``trt.IInt8MinMaxCalibrator`` (``minmax``), the calibrator whose algorithm name matches
the cache header kd2trt writes (:data:`kd2trt.onnx.calib_cache.CALIBRATION_ALGORITHMS`). The classes are
created inside the factory because ``tensorrt`` is imported lazily; TensorRT 11 has no calibrators at all,
and the factory says so.

* ``read_calibration_cache`` returns the cache file's bytes when it exists, after kd2trt's own header check
  (:func:`~kd2trt.onnx.calib_cache.check_compatible`): TensorRT silently ignores a cache whose header names
  another version or algorithm and recalibrates -- and fails outright when, as on a Jetson, no data is
  attached. The check runs in the factory, before any build starts, so the user gets one line naming the
  file and the fix. With a valid cache, ``get_batch`` is never called and no data is needed.
* ``get_batch`` streams fixed-size NCHW float32 batches (:class:`BatchStream`) to one device buffer
  (:mod:`kd2trt.trt.cuda_memory`).
* ``write_calibration_cache`` writes atomically, so an interrupted build never leaves a truncated cache that
  the next build would half-trust -- and writes nothing at all when ``get_batch`` failed part way, since
  TensorRT then finishes calibration on a partial set.

Exceptions raised inside these callbacks would cross TensorRT's C++ boundary; they are caught, kept in
``calibrator.error`` and re-raised by the builder (:func:`raise_calibration_error`) after
``build_serialized_network`` returns. The callbacks' logic lives in :class:`CalibrationState`, which needs no
TensorRT, so it is tested on CPU.

Python calling convention (NVIDIA's samples, ``samples/python/efficientdet/build_engine.py``,
``int8_caffe_mnist/calibrator.py``): ``get_batch(names)`` returns a list of device pointers (ints) or
``None`` when done; ``read_calibration_cache()`` returns bytes or ``None``; ``write_calibration_cache(cache)``
receives a buffer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kd2trt.artifacts import atomic_write_bytes
from kd2trt.errors import Kd2trtError
from kd2trt.onnx.calib_cache import (
    CALIBRATION_ALGORITHMS,
    CalibCacheError,
    check_compatible,
    parse_cache,
)
from kd2trt.targets import TrtVersion

__all__ = ["CALIBRATOR_CLASSES", "BatchStream", "CalibrationState", "make_calibrator", "raise_calibration_error"]

log = logging.getLogger(__name__)

#: kd2trt calibration method -> TensorRT calibrator class name. Must agree with CALIBRATION_ALGORITHMS.
CALIBRATOR_CLASSES = {
    "entropy": "IInt8EntropyCalibrator2",
    "percentile": "IInt8EntropyCalibrator2",
    "minmax": "IInt8MinMaxCalibrator",
}
LAST_BATCH_POLICIES = ("auto", "drop", "pad")


class BatchStream:
    """Re-chunk a stream of samples into NCHW float32 batches of exactly ``batch_size`` (pure numpy).

    Items may be single samples ``(C, H, W)`` or batches ``(N, C, H, W)`` of any ``N``; they are split and
    joined across item boundaries. The last, partial batch follows ``last``:

    * ``drop``: discarded (the calibrator's device buffer has a fixed size).
    * ``pad``: filled by repeating that batch's own samples -- duplicates shift the histogram less than zeros.
    * ``auto`` (default): ``drop`` if at least one full batch was produced, else ``pad``, so a tiny
      calibration set still calibrates.

    After iteration, :attr:`samples`, :attr:`batches`, :attr:`dropped` and :attr:`padded` tell what happened.
    """

    def __init__(self, items: Iterable[np.ndarray], batch_size: int, input_chw: tuple[int, int, int] | None = None,
                 last: str = "auto") -> None:
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise Kd2trtError(f"calibration batch size must be a positive integer, got {batch_size!r}")
        if last not in LAST_BATCH_POLICIES:
            raise Kd2trtError(f"unknown last-batch policy {last!r}; use one of {', '.join(LAST_BATCH_POLICIES)}")
        self.items = items
        self.batch_size = int(batch_size)
        self.input_chw = tuple(int(d) for d in input_chw) if input_chw is not None else None
        self.last = last
        self.samples = self.batches = self.dropped = self.padded = 0

    def _samples_of(self) -> Iterator[np.ndarray]:
        for index, item in enumerate(self.items):
            array = np.asarray(item)
            if array.ndim == 3:
                array = array[None]
            if array.ndim != 4:
                raise Kd2trtError(f"calibration item {index} has shape {array.shape}; expected (C, H, W) or "
                                  "(N, C, H, W) preprocessed images")
            chw = tuple(int(d) for d in array.shape[1:])
            if self.input_chw is None:
                self.input_chw = chw  # type: ignore[assignment]
            elif chw != self.input_chw:
                raise Kd2trtError(f"calibration item {index} has images of shape {chw}, expected {self.input_chw} "
                                  "(the model input's C, H, W); preprocess calibration data like the test data")
            if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
                raise Kd2trtError(f"calibration item {index} has dtype {array.dtype}; expected float32 images")
            array = array.astype(np.float32, copy=False)
            if not np.all(np.isfinite(array)):
                raise Kd2trtError(f"calibration item {index} contains NaN or inf; it would corrupt every range")
            yield from array

    def __iter__(self) -> Iterator[np.ndarray]:
        self.samples = self.batches = self.dropped = self.padded = 0
        pending: list[np.ndarray] = []
        for sample in self._samples_of():
            self.samples += 1
            pending.append(sample)
            if len(pending) == self.batch_size:
                self.batches += 1
                yield np.ascontiguousarray(np.stack(pending))
                pending = []
        if self.samples == 0:
            raise Kd2trtError("calibration data is empty: no images were given")
        if pending:
            if self.last == "drop" or (self.last == "auto" and self.batches > 0):
                self.dropped = len(pending)
                return
            self.padded = self.batch_size - len(pending)
            filled = [pending[i % len(pending)] for i in range(self.batch_size)]
            self.batches += 1
            yield np.ascontiguousarray(np.stack(filled))


def _load_cache_bytes(cache_path: Path, version: TrtVersion, algorithm: str, force: bool) -> bytes:
    """The cache file as TensorRT will read it, after the header check (see the module notes).

    The file is read once: the bytes that were checked are the bytes handed to TensorRT.
    """
    try:
        data = cache_path.read_bytes()
    except OSError as exc:
        raise CalibCacheError(f"cannot read calibration cache {cache_path}: {exc.strerror or exc}; fix its "
                              "permissions or pass another cache") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CalibCacheError(f"{cache_path} is not UTF-8 text (byte {exc.start}); is it a TensorRT engine or other "
                              "binary file instead of a calibration cache?") from None
    cache = parse_cache(text, source=str(cache_path))
    try:
        check_compatible(cache, version, algorithm, source=cache_path)
    except CalibCacheError:
        if not force:
            raise
        # --force: use the ranges anyway. TensorRT only accepts the file if the header names exactly this
        # version and algorithm, so the header is rewritten; the scales stay as they are.
        log.warning("%s: header %s rewritten for TensorRT %s (--force); its ranges are used unchanged",
                    cache_path, cache.header, version)
        cache = dataclasses.replace(cache, version=version, algorithm=algorithm)
        return cache.to_text().encode("utf-8")
    return data


class CalibrationState:
    """Everything the calibrator does apart from being a TensorRT object; needs no TensorRT.

    :func:`make_calibrator`'s ``trt`` subclass forwards TensorRT's callbacks here. Every exception is caught
    and kept in :attr:`error` (it must not cross TensorRT's C++ boundary) and is re-raised by
    :func:`raise_calibration_error` once ``build_serialized_network`` has returned. After an error, no more
    batches are handed out and the cache is **not** written: TensorRT ends calibration on whatever batches it
    got, and a cache computed from that partial set would be reused silently by every later build.
    """

    def __init__(self, cache_path: Path, input_name: str, batch_size: int, stream: BatchStream | None,
                 cache_bytes: bytes | None) -> None:
        self.cache_path = cache_path
        self.input_name = input_name
        self.batch_size = int(batch_size)
        self.stream = stream
        self.error: BaseException | None = None
        self.cache_written = False
        self._cache_bytes = cache_bytes
        self._iterator: Iterator[np.ndarray] | None = None
        self._device: Any = None

    def next_batch(self, names: list[str]) -> list[int] | None:
        """``get_batch``: the device pointer of the next batch, or ``None`` when done or after an error."""
        if self.error is not None:
            return None
        try:
            if self.stream is None:
                raise Kd2trtError(f"TensorRT asked for calibration data but none was given and the cache "
                                  f"{self.cache_path} was not accepted")
            if list(names) != [self.input_name]:
                raise Kd2trtError(f"TensorRT asked for calibration inputs {list(names)}; kd2trt feeds one "
                                  f"input, {self.input_name!r} — pass the model's input name")
            if self._iterator is None:
                self._iterator = iter(self.stream)
            batch = next(self._iterator, None)
            if batch is None:
                log.info("calibration: %d images in %d batches (%d dropped, %d padded)", self.stream.samples,
                         self.stream.batches, self.stream.dropped, self.stream.padded)
                return None
            from kd2trt.trt import cuda_memory

            if self._device is None:
                self._device = cuda_memory.DeviceBuffer(batch.nbytes)
            cuda_memory.memcpy_htod(self._device, batch)
            return [self._device.ptr]
        except BaseException as exc:  # must not cross into TensorRT's C++; see raise_calibration_error
            self.error = exc
            return None

    def read_cache(self) -> bytes | None:
        """``read_calibration_cache``: the checked cache's bytes, or ``None`` (calibrate from data)."""
        return self._cache_bytes

    def write_cache(self, cache: Any) -> None:
        """``write_calibration_cache``: write TensorRT's cache atomically -- unless calibration failed."""
        if self.error is not None:
            log.warning("calibration failed (%s: %s); %s not written, since TensorRT calibrated on a partial set",
                        type(self.error).__name__, self.error, self.cache_path)
            return
        try:
            data = bytes(cache)
            try:  # kd2trt reads these files back strictly; say so now if TensorRT wrote something new
                parse_cache(data.decode("utf-8"), source=f"the cache TensorRT wrote to {self.cache_path}")
            except (CalibCacheError, UnicodeDecodeError) as exc:
                log.warning("%s; kept as TensorRT wrote it", exc)
            atomic_write_bytes(self.cache_path, data)
            self.cache_written = True
            log.info("wrote calibration cache %s", self.cache_path)
        except BaseException as exc:  # must not cross into TensorRT's C++
            self.error = exc

    def free(self) -> None:
        if self._device is not None:
            self._device.free()
            self._device = None


def raise_calibration_error(error: BaseException | None) -> None:
    """Re-raise what a calibrator callback caught, once TensorRT has returned; nothing if ``error`` is None.

    A :class:`Kd2trtError` is raised as it is; so is a ``BaseException`` that is not an ``Exception``
    (``KeyboardInterrupt``, ``SystemExit``), which must stop the program rather than become a message. Any
    other exception becomes a one-line :class:`Kd2trtError`.
    """
    if error is None:
        return
    if isinstance(error, Kd2trtError) or not isinstance(error, Exception):
        raise error
    raise Kd2trtError(f"INT8 calibration failed: {type(error).__name__}: {error}") from error


def make_calibrator(
    trt: Any,
    algorithm: str,
    batches: Iterable[np.ndarray] | None,
    cache_path: str | os.PathLike[str],
    batch_size: int,
    input_name: str,
    *,
    input_chw: tuple[int, int, int] | None = None,
    last_batch: str = "auto",
    force: bool = False,
) -> Any:
    """An INT8 calibrator for the imported ``tensorrt`` module ``trt``.

    ``algorithm``: ``entropy`` | ``minmax`` | ``percentile`` (kd2trt methods; percentile ranges are consumed
    by the entropy calibrator, as the cache header says). ``batches``: calibration images (see
    :class:`BatchStream`), or ``None`` when ``cache_path`` holds a cache -- the Jetson case. ``force``: use
    a cache written for another TensorRT/algorithm (its header is rewritten; ranges unchanged).
    """
    if algorithm not in CALIBRATOR_CLASSES:
        raise Kd2trtError(f"unknown calibration method {algorithm!r}; use one of {', '.join(CALIBRATOR_CLASSES)}")
    algo_name = CALIBRATION_ALGORITHMS[algorithm]
    class_name = CALIBRATOR_CLASSES[algorithm]
    base = getattr(trt, class_name, None)
    version = TrtVersion.parse(str(trt.__version__))
    if base is None:
        raise Kd2trtError(f"TensorRT {version} has no {class_name} (INT8 calibrators were removed in TensorRT 11); "
                          "build INT8 from the Q/DQ graph instead (--int8-path qdq)")
    cache_path = Path(cache_path)
    cache_bytes: bytes | None = None
    if cache_path.is_file():
        cache_bytes = _load_cache_bytes(cache_path, version, algo_name, force)
        log.info("using calibration cache %s (no calibration data needed)", cache_path)
    elif batches is None:
        raise Kd2trtError(f"no calibration cache at {cache_path} and no calibration data: run "
                          f"`kd2trt export <checkpoint> --int8 --trt-version {version}` on the host with the data "
                          "and copy the cache here, or pass calibration images")
    stream = BatchStream(batches, batch_size, input_chw, last_batch) if batches is not None else None
    state = CalibrationState(cache_path, input_name, batch_size, stream, cache_bytes)

    class Kd2trtCalibrator(base):  # type: ignore[misc, valid-type]
        """kd2trt's calibrator: TensorRT's callbacks, forwarded to :class:`CalibrationState`."""

        def __init__(self) -> None:
            base.__init__(self)  # pybind11 trampolines need the explicit base __init__
            self.algorithm = algorithm
            self.state = state

        @property
        def cache_path(self) -> Path:
            return self.state.cache_path

        @property
        def input_name(self) -> str:
            return self.state.input_name

        @property
        def batch_size(self) -> int:
            return self.state.batch_size

        @property
        def stream(self) -> BatchStream | None:
            return self.state.stream

        @property
        def error(self) -> BaseException | None:
            return self.state.error

        @property
        def cache_written(self) -> bool:
            return self.state.cache_written

        def get_batch_size(self) -> int:
            return self.state.batch_size

        def get_batch(self, names: list[str], *_: Any) -> list[int] | None:
            return self.state.next_batch(names)

        def read_calibration_cache(self, *_: Any) -> bytes | None:
            return self.state.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            self.state.write_cache(cache)

        def free(self) -> None:
            self.state.free()

    return Kd2trtCalibrator()
