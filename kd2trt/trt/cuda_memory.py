"""The only module that talks to CUDA: device query, device and pinned host buffers, streams, copies, graphs.

Everything goes through NVIDIA's ``cuda-python`` runtime bindings, the library NVIDIA's own TensorRT samples
use (``samples/python/common_runtime.py``). They are imported lazily, so importing this module never needs a
GPU, a driver or even cuda-python:

* ``cuda-python`` >= 12.6 / ``cuda-bindings`` 13.x: ``from cuda.bindings import runtime``.
* ``cuda-python`` 11.8-12.x (JetPack 5 ships CUDA 11.4, where cuda-python 11.8 is the newest that runs):
  ``from cuda import cudart``; that spelling was removed in 13.x, hence both are tried.

Every call returns ``(cudaError_t, *results)``; :func:`_call` checks the code and turns a failure into a
:class:`CudaError` naming the call and CUDA's own error name and text, never a silent bad pointer.

Why not pycuda: it is a source build against the local CUDA toolkit (``cuda.h``, ``libcuda.so``), does not
build against CUDA 13, and its ``pycuda.autoinit`` creates its own context beside the runtime API's primary
context that TensorRT uses. cuda-python ships wheels and uses the primary context, so it is the one backend.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from kd2trt.errors import Kd2trtError

__all__ = [
    "CudaError",
    "CudaGraph",
    "DeviceBuffer",
    "DeviceInfo",
    "Event",
    "PinnedHostBuffer",
    "Stream",
    "cuda_device_count",
    "device_info",
    "load_cudart",
    "memcpy_dtoh_async",
    "memcpy_htod",
    "memcpy_htod_async",
    "runtime_version",
]

_INSTALL_HINT = "install NVIDIA's CUDA bindings: pip install 'cuda-python>=12' (the `trt` extra of kd2trt)"


class CudaError(Kd2trtError):
    """A CUDA runtime call failed, or the CUDA bindings are missing."""


_CUDART: Any = None


def load_cudart() -> Any:
    """The cuda-python runtime module (``cudart``), imported on first use; :class:`CudaError` if absent."""
    global _CUDART
    if _CUDART is None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6, cuda-bindings 13.x
        except ImportError:
            try:
                from cuda import cudart  # type: ignore[no-redef]  # cuda-python 11.8-12.x
            except ImportError:
                raise CudaError(f"the CUDA runtime bindings are not installed; {_INSTALL_HINT}") from None
        _CUDART = cudart
    return _CUDART


def _error_text(cudart: Any, err: Any) -> str:
    try:
        name = cudart.cudaGetErrorName(err)[1]
        text = cudart.cudaGetErrorString(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        text = text.decode() if isinstance(text, bytes) else str(text)
        return f"{name}: {text}"
    except Exception:  # the error text is a courtesy; never mask the real failure
        return str(err)


def _call(name: str, *args: Any) -> Any:
    """Call ``cudart.<name>(*args)``, raise :class:`CudaError` unless it returned cudaSuccess.

    Returns ``None``, the single result, or a tuple of results, like NVIDIA's ``cuda_call`` helper.
    """
    cudart = load_cudart()
    result = getattr(cudart, name)(*args)
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f"CUDA call {name} failed: {_error_text(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# --------------------------------------------------------------------------------------------- device query


@dataclass(frozen=True)
class DeviceInfo:
    """One CUDA device as kd2trt records it in engine manifests."""

    index: int
    name: str
    compute_capability: str  # "8.7"
    total_memory_mb: int

    @property
    def sm(self) -> str:
        """``"87"``: the compute capability as it appears in ``sm87`` engine file names."""
        return self.compute_capability.replace(".", "")

    @property
    def is_ampere_plus(self) -> bool:
        return int(self.compute_capability.split(".")[0]) >= 8


def cuda_device_count() -> tuple[int, str]:
    """``(number of CUDA devices, how it was found or why there are none)``; never raises, never crashes.

    Asks cuda-python's ``cudaGetDeviceCount`` first (it returns an error code without raising when there is
    no driver or GPU), then ``torch.cuda`` as a fallback when cuda-python is not installed. Creating no
    TensorRT object, it is the guard that must run before anything TensorRT touches the device.
    """
    try:
        cudart = load_cudart()
    except CudaError:
        cudart = None
    if cudart is not None:
        try:
            err, count = cudart.cudaGetDeviceCount()
        except Exception as exc:  # a broken install must not take the caller down
            return 0, f"cuda-python cudaGetDeviceCount raised {type(exc).__name__}: {exc}"
        if err != cudart.cudaError_t.cudaSuccess:
            return 0, (f"no usable CUDA device (cudaGetDeviceCount: {_error_text(cudart, err)}; no NVIDIA GPU or "
                       "driver here, or a driver older than the CUDA runtime)")
        if count == 0:
            return 0, "no CUDA device: cudaGetDeviceCount() found 0 devices"
        return int(count), f"{count} CUDA device(s) found by cuda-python"
    try:
        import torch
    except ImportError:
        return 0, f"cannot look for a CUDA device: neither cuda-python nor torch is installed; {_INSTALL_HINT}"
    try:
        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            return count, f"{count} CUDA device(s) found by torch (cuda-python is not installed)"
        return 0, "no CUDA device: torch.cuda.is_available() is False (and cuda-python is not installed)"
    except Exception as exc:
        return 0, f"torch.cuda raised {type(exc).__name__}: {exc}"


def device_info(index: int = 0) -> DeviceInfo:
    """Name, compute capability and memory of device ``index`` (cuda-python, else torch)."""
    try:
        cudart = load_cudart()
    except CudaError:
        cudart = None
    if cudart is not None:
        props = _call("cudaGetDeviceProperties", index)
        name = props.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return DeviceInfo(index, str(name).strip(), f"{props.major}.{props.minor}",
                          int(props.totalGlobalMem) // (1 << 20))
    try:
        import torch
    except ImportError:
        raise CudaError(f"cannot query the CUDA device; {_INSTALL_HINT}") from None
    if not torch.cuda.is_available():
        raise CudaError("no CUDA device is visible (torch.cuda.is_available() is False)")
    props = torch.cuda.get_device_properties(index)
    return DeviceInfo(index, props.name, f"{props.major}.{props.minor}", int(props.total_memory) // (1 << 20))


def runtime_version() -> str | None:
    """The CUDA runtime version of the bindings, e.g. ``"12.6"``; ``None`` when it cannot be told."""
    try:
        version = _call("cudaRuntimeGetVersion")
    except CudaError:
        try:
            import torch

            return torch.version.cuda
        except ImportError:
            return None
    return f"{int(version) // 1000}.{int(version) % 1000 // 10}"


# --------------------------------------------------------------------------------------------- memory


class _Owned:
    """One CUDA handle, released exactly once: use after :meth:`free` is a :class:`CudaError`, never a
    dangling pointer handed to CUDA or TensorRT. Subclasses name the resource and its destroy call."""

    _what = "CUDA resource"
    _destroy = ""

    def __init__(self, handle: Any) -> None:
        self._handle: Any = handle

    @property
    def raw(self) -> Any:
        if self._handle is None:
            raise CudaError(f"{self._what} used after free()")
        return self._handle

    def _before_free(self) -> None:
        """Drop whatever still refers to the resource (numpy views of pinned memory)."""

    def free(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            self._before_free()
            _call(self._destroy, handle)


class DeviceBuffer(_Owned):
    """``nbytes`` of device memory (``cudaMalloc``); :attr:`ptr` is what TensorRT's tensor addresses take."""

    _what, _destroy = "device buffer", "cudaFree"

    def __init__(self, nbytes: int) -> None:
        if nbytes <= 0:
            raise CudaError(f"cannot allocate {nbytes} bytes of device memory")
        self.nbytes = int(nbytes)
        super().__init__(int(_call("cudaMalloc", self.nbytes)))

    @property
    def ptr(self) -> int:
        return self.raw


class PinnedHostBuffer(_Owned):
    """Page-locked host memory (``cudaMallocHost``) seen as a numpy array: fast, truly async copies."""

    _what, _destroy = "pinned host buffer", "cudaFreeHost"

    def __init__(self, shape: tuple[int, ...], dtype: Any = np.float32) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        count = int(np.prod(self.shape)) if self.shape else 1
        self.nbytes = count * self.dtype.itemsize
        if self.nbytes <= 0:
            raise CudaError(f"cannot allocate a pinned host buffer of shape {self.shape}")
        super().__init__(int(_call("cudaMallocHost", self.nbytes)))
        raw = (ctypes.c_byte * self.nbytes).from_address(self._handle)
        self.array = np.frombuffer(raw, dtype=self.dtype, count=count).reshape(self.shape)

    @property
    def ptr(self) -> int:
        return self.raw

    def _before_free(self) -> None:
        self.array = np.empty((0,), dtype=self.dtype)  # drop the view before the memory goes


class Stream(_Owned):
    """A CUDA stream; :attr:`handle` is the integer TensorRT's ``execute_async_v3`` takes."""

    _what, _destroy = "stream", "cudaStreamDestroy"

    def __init__(self) -> None:
        super().__init__(_call("cudaStreamCreate"))

    @property
    def handle(self) -> int:
        return int(self.raw)

    def synchronize(self) -> None:
        _call("cudaStreamSynchronize", self.raw)


class Event(_Owned):
    """A CUDA event: a timestamp taken *on the GPU* when the stream reaches it.

    Two events around an enqueue measure GPU compute alone -- the figure ``trtexec`` reports as "GPU Compute
    Time" -- unaffected by Python, the host's scheduler or the launch overhead in front of the first kernel.
    Created with the default flags (timing enabled; ``cudaEventDisableTiming`` would make elapsed time fail).
    """

    _what, _destroy = "event", "cudaEventDestroy"

    def __init__(self) -> None:
        super().__init__(_call("cudaEventCreate"))

    def record(self, stream: Stream) -> None:
        _call("cudaEventRecord", self.raw, stream.raw)

    def synchronize(self) -> None:
        _call("cudaEventSynchronize", self.raw)

    def elapsed_ms_since(self, start: Event) -> float:
        """Milliseconds from ``start`` to this event; both must have been recorded, this one completed."""
        return float(_call("cudaEventElapsedTime", start.raw, self.raw))


def _kind(name: str) -> Any:
    return getattr(load_cudart().cudaMemcpyKind, name)


def _host_pointer(array: np.ndarray, nbytes: int, what: str) -> int:
    if not array.flags["C_CONTIGUOUS"]:
        raise CudaError(f"{what}: host array must be C-contiguous (use np.ascontiguousarray)")
    if array.nbytes < nbytes:
        raise CudaError(f"{what}: host array holds {array.nbytes} bytes, {nbytes} requested")
    return int(array.ctypes.data)


def memcpy_htod(dst: DeviceBuffer, src: np.ndarray) -> None:
    """Synchronous host-to-device copy of the whole of ``src`` (used by the calibrator, once per batch)."""
    nbytes = src.nbytes
    if nbytes > dst.nbytes:
        raise CudaError(f"host array of {nbytes} bytes does not fit the {dst.nbytes}-byte device buffer")
    _call("cudaMemcpy", dst.ptr, _host_pointer(src, nbytes, "memcpy_htod"), nbytes, _kind("cudaMemcpyHostToDevice"))


def memcpy_htod_async(dst: DeviceBuffer, src: np.ndarray, nbytes: int, stream: Stream) -> None:
    """Queue ``nbytes`` from host array ``src`` (pinned for a truly async copy) to ``dst`` on ``stream``."""
    if nbytes > dst.nbytes:
        raise CudaError(f"copy of {nbytes} bytes does not fit the {dst.nbytes}-byte device buffer")
    _call("cudaMemcpyAsync", dst.ptr, _host_pointer(src, nbytes, "memcpy_htod_async"), nbytes,
          _kind("cudaMemcpyHostToDevice"), stream.raw)


def memcpy_dtoh_async(dst: np.ndarray, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
    """Queue ``nbytes`` from ``src`` on the device into host array ``dst`` on ``stream``."""
    if nbytes > src.nbytes:
        raise CudaError(f"copy of {nbytes} bytes reads past the {src.nbytes}-byte device buffer")
    if not dst.flags["WRITEABLE"]:
        raise CudaError("memcpy_dtoh_async: destination host array is read-only")
    _call("cudaMemcpyAsync", _host_pointer(dst, nbytes, "memcpy_dtoh_async"), src.ptr, nbytes,
          _kind("cudaMemcpyDeviceToHost"), stream.raw)


# --------------------------------------------------------------------------------------------- CUDA graphs


class CudaGraph:
    """Work captured from a stream once and replayed with one launch (what ``trtexec --useCudaGraph`` does).

    ``cudaGraphInstantiateWithFlags`` is used because it has the same signature from CUDA 11.4 to 13.x,
    whereas ``cudaGraphInstantiate`` changed its arguments in CUDA 12.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._graph: Any = None
        self._exec: Any = None

    def begin(self) -> None:
        mode = load_cudart().cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _call("cudaStreamBeginCapture", self.stream.raw, mode)

    def end(self) -> None:
        self._graph = _call("cudaStreamEndCapture", self.stream.raw)
        self._exec = _call("cudaGraphInstantiateWithFlags", self._graph, 0)

    def launch(self) -> None:
        if self._exec is None:
            raise CudaError("CUDA graph launched before it was captured")
        _call("cudaGraphLaunch", self._exec, self.stream.raw)

    def free(self) -> None:
        if self._exec is not None:
            graph_exec, self._exec = self._exec, None
            _call("cudaGraphExecDestroy", graph_exec)
        if self._graph is not None:
            graph, self._graph = self._graph, None
            _call("cudaGraphDestroy", graph)
