"""kd2trt.trt.cuda_memory on a real GPU: buffers, copies, streams, events and CUDA graphs.

This is the layer under the TensorRT runner and calibrator that does *not* need TensorRT, so it runs on any
CUDA machine with NVIDIA's ``cuda-python`` bindings (``cuda-bindings``), the NGC containers included. Marked
``cuda``; skipped with the probe's reason where there is no device or no bindings. ``python -m pytest -m cuda``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from kd2trt.trt import cuda_memory
from kd2trt.trt.cuda_memory import CudaError

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module", autouse=True)
def _needs_cuda_bindings():
    try:
        cuda_memory.load_cudart()
    except CudaError as exc:
        pytest.skip(str(exc))
    count, reason = cuda_memory.cuda_device_count()
    if count == 0:
        pytest.skip(reason)


@pytest.fixture
def stream():
    stream = cuda_memory.Stream()
    yield stream
    stream.free()


def test_device_info_agrees_with_torch() -> None:
    torch = pytest.importorskip("torch")
    info = cuda_memory.device_info(0)
    assert info.total_memory_mb > 0
    assert info.sm == info.compute_capability.replace(".", "")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        assert info.name == props.name
        assert info.compute_capability == f"{props.major}.{props.minor}"
    version = cuda_memory.runtime_version()
    assert version is not None and version.count(".") == 1 and int(version.split(".")[0]) >= 11


def test_round_trip_through_the_device(stream) -> None:
    values = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    host_in = cuda_memory.PinnedHostBuffer(values.shape, np.float32)
    host_out = cuda_memory.PinnedHostBuffer(values.shape, np.float32)
    device = cuda_memory.DeviceBuffer(values.nbytes)
    try:
        host_in.array[...] = values
        cuda_memory.memcpy_htod_async(device, host_in.array, values.nbytes, stream)
        cuda_memory.memcpy_dtoh_async(host_out.array, device, values.nbytes, stream)
        stream.synchronize()
        np.testing.assert_array_equal(host_out.array, values)
        # the synchronous copy the calibrator uses, from ordinary (pageable) memory
        cuda_memory.memcpy_htod(device, np.ascontiguousarray(values[::-1]))
        cuda_memory.memcpy_dtoh_async(host_out.array, device, values.nbytes, stream)
        stream.synchronize()
        np.testing.assert_array_equal(host_out.array, values[::-1])
    finally:
        for buffer in (device, host_out, host_in):
            buffer.free()


def test_events_time_work_on_the_gpu(stream) -> None:
    nbytes = 256 << 20
    host = cuda_memory.PinnedHostBuffer((nbytes // 4,), np.float32)
    device = cuda_memory.DeviceBuffer(nbytes)
    start, end = cuda_memory.Event(), cuda_memory.Event()
    try:
        stream.synchronize()
        t0 = time.perf_counter()
        start.record(stream)
        cuda_memory.memcpy_htod_async(device, host.array, nbytes, stream)
        end.record(stream)
        end.synchronize()
        wall_ms = (time.perf_counter() - t0) * 1e3
        gpu_ms = end.elapsed_ms_since(start)
        # 256 MiB over PCIe/NVLink-C2C takes well over 10 µs and cannot take longer than the host waited
        assert 0.01 < gpu_ms <= wall_ms + 0.01
        empty_start, empty_end = cuda_memory.Event(), cuda_memory.Event()
        empty_start.record(stream)
        empty_end.record(stream)
        empty_end.synchronize()
        assert empty_end.elapsed_ms_since(empty_start) < gpu_ms
        empty_start.free()
        empty_end.free()
    finally:
        for item in (start, end, device, host):
            item.free()


def test_cuda_graph_replays_the_captured_copies(stream) -> None:
    shape = (4, 16)
    src = cuda_memory.PinnedHostBuffer(shape, np.float32)
    dst = cuda_memory.PinnedHostBuffer(shape, np.float32)
    device = cuda_memory.DeviceBuffer(src.nbytes)
    graph = cuda_memory.CudaGraph(stream)
    try:
        src.array[...] = 1.0
        dst.array[...] = 0.0
        graph.begin()
        cuda_memory.memcpy_htod_async(device, src.array, src.nbytes, stream)
        cuda_memory.memcpy_dtoh_async(dst.array, device, src.nbytes, stream)
        graph.end()
        stream.synchronize()
        assert not dst.array.any(), "capturing must record the work, not run it"
        graph.launch()
        stream.synchronize()
        np.testing.assert_array_equal(dst.array, 1.0)
        src.array[...] = np.arange(src.array.size, dtype=np.float32).reshape(shape)
        graph.launch()
        stream.synchronize()
        np.testing.assert_array_equal(dst.array, src.array)  # a replay reads the host buffer anew
    finally:
        graph.free()
        for buffer in (device, dst, src):
            buffer.free()


def test_misuse_is_a_cuda_error_not_a_crash(stream) -> None:
    device = cuda_memory.DeviceBuffer(64)
    with pytest.raises(CudaError, match="does not fit the 64-byte device buffer"):
        cuda_memory.memcpy_htod(device, np.zeros(32, np.float32))
    device.free()
    with pytest.raises(CudaError, match="used after free"):
        _ = device.ptr
    with pytest.raises(CudaError, match="launched before it was captured"):
        cuda_memory.CudaGraph(stream).launch()
    with pytest.raises(CudaError, match=r"CUDA call cudaMalloc failed: cudaError\w+"):
        cuda_memory.DeviceBuffer(1 << 60)  # an exabyte: CUDA's own error, named
    event = cuda_memory.Event()
    event.free()
    with pytest.raises(CudaError, match="event used after free"):
        event.record(stream)
