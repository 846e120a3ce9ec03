"""Run a kd2trt engine: checked against this machine first, then name-based I/O only.

Order of operations in :class:`TrtRunner`:

1. read ``<engine>.json`` (:func:`~kd2trt.trt.manifest.read_manifest`) and look for a CUDA device and
   TensorRT (:func:`~kd2trt.trt.capabilities.probe_environment`) -- nothing TensorRT is created before that;
2. refuse an engine built for another TensorRT version or GPU (:func:`check_runtime_compatible`) and one
   whose bytes do not match the manifest's sha256 -- all *before* deserializing;
3. deserialize, allocate pinned host + device buffers for the profile's max batch, one stream.

Only the name-based tensor API is used, which exists from TensorRT 8.5 to 11.x (8.5 introduced it together
with ``enqueueV3``; 10.0 removed the binding-index API it replaced): ``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``get_tensor_dtype``, ``get_tensor_profile_shape``, ``set_input_shape``,
``get_tensor_shape``, ``set_tensor_address`` and ``execute_async_v3(stream_handle)``; see NVIDIA's
``samples/python/common_runtime.py`` and the 8.x -> 10.x migration guide ("name-based engine API"). Each is
checked with ``hasattr`` first, so an unexpected TensorRT fails with a message instead of AttributeError.

Host latency is the bench harness's job (it times :meth:`TrtRunner.infer`); :meth:`TrtRunner.time_compute`
measures GPU compute alone with CUDA events. Either can replay a captured CUDA graph per batch size (like
``trtexec --useCudaGraph``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from kd2trt.errors import Kd2trtError
from kd2trt.manifests import EngineManifest
from kd2trt.runner import InputSpec, Runner, RunnerInfo
from kd2trt.trt.manifest import check_runtime_compatible, read_manifest, verify_engine_file
from kd2trt.trt.wiring import apply_runtime_settings, runtime_settings

__all__ = ["REQUIRED_CONTEXT_API", "REQUIRED_ENGINE_API", "TrtRunner", "read_engine"]

log = logging.getLogger(__name__)

REQUIRED_ENGINE_API = ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype",
                       "get_tensor_profile_shape", "create_execution_context")
REQUIRED_CONTEXT_API = ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3")


def read_engine(engine_path: str | os.PathLike[str], manifest: EngineManifest, *, verify_sha256: bool = True
                ) -> bytes:
    """The engine file's bytes, read once; with ``verify_sha256`` those same bytes are checked against the
    manifest, so what is deserialized is what was verified. A missing or unreadable file is a one-line error."""
    engine_path = Path(engine_path)
    try:
        data = engine_path.read_bytes()
    except FileNotFoundError:
        raise Kd2trtError(f"engine {engine_path} does not exist; build it with `kd2trt export`") from None
    except OSError as exc:
        raise Kd2trtError(f"cannot read engine {engine_path}: {exc.strerror or exc}; fix its permissions or rebuild "
                          "it with `kd2trt export`") from None
    if verify_sha256:
        verify_engine_file(manifest, engine_path, data)
    return data


class TrtRunner(Runner):
    """A deserialized engine with its buffers; use as a context manager so that memory is freed.

    >>> with TrtRunner("engines/digits/student-int8-sm87-trt10.3.0.engine") as runner:  # doctest: +SKIP
    ...     logits = runner.infer(images)  # images: float32 (N, C, H, W), min_batch <= N <= max_batch
    """

    def __init__(self, engine_path: str | os.PathLike[str], *, info: RunnerInfo | None = None,
                 use_cuda_graph: bool = False, verify_sha256: bool = True, verbose: bool = False) -> None:
        from kd2trt.trt import cuda_memory
        from kd2trt.trt.capabilities import probe_environment

        self.engine_path = Path(engine_path)
        self.manifest: EngineManifest = read_manifest(self.engine_path)
        self.info = info or RunnerInfo(self.engine_path.name.split("-", 1)[0], "tensorrt", self.manifest.precision,
                                       f"cuda ({self.manifest.gpu_name})", file=str(self.engine_path))
        self._buffers: list[Any] = []
        self._graphs: dict[int, Any] = {}
        self._stream: Any = None
        self._closed = False
        caps, reason = probe_environment()
        if caps is None:
            raise Kd2trtError(f"cannot run {self.engine_path}: {reason}")
        import tensorrt as trt

        self._trt = trt
        device = cuda_memory.device_info(0)
        check_runtime_compatible(self.manifest, caps.version_string or str(caps.version),
                                 device.compute_capability, self.engine_path, running_gpu_name=device.name)
        engine_bytes = read_engine(self.engine_path, self.manifest, verify_sha256=verify_sha256)

        from kd2trt.trt.builder import _make_logger

        self._logger = _make_logger(trt, verbose)
        self._runtime = trt.Runtime(self._logger)
        # A version-compatible plan embeds its lean runtime (host code); TensorRT runs it only if allowed.
        apply_runtime_settings(self._runtime, runtime_settings(self.manifest.build))
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        del engine_bytes  # TensorRT holds its own copy
        if self._engine is None:
            last = self._logger.errors[-1] if self._logger.errors else "no error was logged"
            raise Kd2trtError(f"TensorRT {caps.version} could not deserialize {self.engine_path}: {last}; rebuild it "
                              "with `kd2trt export`")
        self._require_api(self._engine, REQUIRED_ENGINE_API, caps.version)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise Kd2trtError(f"TensorRT could not create an execution context for {self.engine_path} "
                              "(out of device memory?)")
        self._require_api(self._context, REQUIRED_CONTEXT_API, caps.version)
        self.use_cuda_graph = use_cuda_graph
        try:
            self._setup_io(cuda_memory)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------------------- setup

    @staticmethod
    def _require_api(obj: Any, names: tuple, version: Any) -> None:
        missing = [name for name in names if not hasattr(obj, name)]
        if missing:
            raise Kd2trtError(f"TensorRT {version} lacks the name-based tensor API ({', '.join(missing)}); "
                              "kd2trt needs TensorRT 8.5 or later")

    def _numpy_dtype(self, tensor: str) -> np.dtype:
        """The numpy dtype of an I/O tensor; ``trt.nptype`` has none for BF16/FP8/INT4/FP4 (it raises TypeError)."""
        trt_dtype = self._engine.get_tensor_dtype(tensor)
        try:
            return np.dtype(self._trt.nptype(trt_dtype))
        except TypeError:
            raise Kd2trtError(f"{self.engine_path}: tensor {tensor!r} is {trt_dtype}, which has no numpy type; kd2trt "
                              "runs engines with FP32/FP16/INT8/INT32 inputs and outputs (export keeps FP32 I/O)"
                              ) from None

    def _setup_io(self, cuda_memory: Any) -> None:
        trt, engine, context = self._trt, self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not self.output_names:
            raise Kd2trtError(f"{self.engine_path} has inputs {inputs} and outputs {self.output_names}; kd2trt runs "
                              "engines with one input and at least one output")
        self.input_name = inputs[0]
        low, _opt, high = engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(low[0]), int(high[0])
        self.input_chw = tuple(int(d) for d in high[1:])
        self.input_dtype = self._numpy_dtype(self.input_name)
        self.input_spec = InputSpec(self.input_name, self.input_chw, self.input_dtype, self.min_batch, self.max_batch)
        self._stream = cuda_memory.Stream()
        max_shape = (self.max_batch, *self.input_chw)
        self._host_in = self._own(cuda_memory.PinnedHostBuffer(max_shape, self.input_dtype))
        self._dev_in = self._own(cuda_memory.DeviceBuffer(self._host_in.nbytes))
        if not context.set_input_shape(self.input_name, max_shape):
            raise Kd2trtError(f"{self.engine_path}: TensorRT refused input shape {max_shape}")
        self._host_out: dict[str, Any] = {}
        self._dev_out: dict[str, Any] = {}
        self.output_dtypes: dict[str, np.dtype] = {}
        for name in self.output_names:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise Kd2trtError(f"{self.engine_path}: output {name!r} has a data-dependent shape {shape}; kd2trt "
                                  "runs classifiers with fixed-size outputs")
            dtype = self._numpy_dtype(name)
            self.output_dtypes[name] = dtype
            self._host_out[name] = self._own(cuda_memory.PinnedHostBuffer(shape, dtype))
            self._dev_out[name] = self._own(cuda_memory.DeviceBuffer(self._host_out[name].nbytes))
        context.set_tensor_address(self.input_name, self._dev_in.ptr)
        for name in self.output_names:
            context.set_tensor_address(name, self._dev_out[name].ptr)
        self._current_batch = self.max_batch

    def _own(self, buffer: Any) -> Any:
        self._buffers.append(buffer)
        return buffer

    # ----------------------------------------------------------------------------------------- run

    def check_batch(self, images: Any) -> np.ndarray:
        """The batch as a contiguous array of the engine's input dtype, or a clear error."""
        array = np.asarray(images)
        expected = f"(N, {', '.join(str(d) for d in self.input_chw)}) with {self.min_batch} <= N <= {self.max_batch}"
        if array.ndim != 4 or tuple(array.shape[1:]) != self.input_chw:
            raise Kd2trtError(f"{self.engine_path.name} takes images of shape {expected}; got {array.shape}")
        if not self.min_batch <= array.shape[0] <= self.max_batch:
            raise Kd2trtError(f"{self.engine_path.name} was built for batches of {self.min_batch}..{self.max_batch} "
                              f"images, got {array.shape[0]}; split the input, or rebuild with --min-batch/--max-batch")
        return np.ascontiguousarray(array, dtype=self.input_dtype)

    def infer_all(self, images: Any) -> dict[str, np.ndarray]:
        """Run one batch; every output by name, as new numpy arrays (the pinned buffers are reused)."""
        from kd2trt.trt import cuda_memory

        n = self._stage_input(images)
        self._enqueue(n)
        sizes = {}
        for name in self.output_names:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            host = self._host_out[name].array.reshape(-1)
            count = int(np.prod(shape))
            sizes[name] = (shape, count)
            cuda_memory.memcpy_dtoh_async(host, self._dev_out[name], count * host.itemsize, self._stream)
        self._stream.synchronize()
        return {name: self._host_out[name].array.reshape(-1)[:count].reshape(shape).copy()
                for name, (shape, count) in sizes.items()}

    def _stage_input(self, images: Any) -> int:
        """Check the batch, set the input shape if it changed, queue the host-to-device copy; the batch size."""
        from kd2trt.trt import cuda_memory

        if self._closed:
            raise Kd2trtError(f"{self.engine_path.name}: runner used after close()")
        batch = self.check_batch(images)
        n = batch.shape[0]
        if n != self._current_batch:
            if not self._context.set_input_shape(self.input_name, batch.shape):
                raise Kd2trtError(f"{self.engine_path.name}: TensorRT refused input shape {batch.shape}")
            self._current_batch = n
        host_in = self._host_in.array[:n]
        host_in[...] = batch
        cuda_memory.memcpy_htod_async(self._dev_in, host_in, batch.nbytes, self._stream)
        return n

    def time_compute(self, images: Any, iterations: int) -> list[float]:
        """GPU compute milliseconds of ``iterations`` enqueues of one batch, measured with CUDA events.

        The input is copied to the device once, then each iteration is ``record(start); enqueue; record(end)``
        on the runner's stream: no transfers, no host code inside the measured span -- trtexec's "GPU Compute
        Time", reported beside the host latency of :meth:`infer`. One untimed enqueue first, which is also when
        the CUDA graph for this batch size is captured if graphs are on.
        """
        from kd2trt.trt import cuda_memory

        if iterations < 1:
            raise Kd2trtError(f"iterations must be at least 1, got {iterations}")
        n = self._stage_input(images)
        self._enqueue(n)
        start, end = cuda_memory.Event(), cuda_memory.Event()
        try:
            times = []
            for _ in range(iterations):
                start.record(self._stream)
                self._enqueue(n)
                end.record(self._stream)
                end.synchronize()
                times.append(end.elapsed_ms_since(start))
        finally:
            start.free()
            end.free()
        return times

    def infer(self, images: Any) -> np.ndarray:
        """Run one batch; the first output (a classifier's logits)."""
        return self.infer_all(images)[self.output_names[0]]

    __call__ = infer

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.handle):
            last = self._logger.errors[-1] if self._logger.errors else "no error was logged"
            raise Kd2trtError(f"{self.engine_path.name}: inference failed: {last}")

    def _enqueue(self, batch: int) -> None:
        if not self.use_cuda_graph:
            self._execute()
            return
        graph = self._graphs.get(batch)
        if graph is not None:
            graph.launch()
            return
        from kd2trt.trt import cuda_memory

        # TensorRT must run once after a shape change before its work can be captured; that run also
        # produces this call's result, so the captured graph is only replayed from the next call on.
        self._execute()
        self._stream.synchronize()
        graph = cuda_memory.CudaGraph(self._stream)
        try:
            graph.begin()
            try:
                self._execute()
            finally:
                graph.end()
        except Kd2trtError as exc:
            graph.free()
            log.warning("CUDA graph capture failed (%s); running without CUDA graphs", exc)
            self.use_cuda_graph = False
            return
        self._graphs[batch] = graph

    # ----------------------------------------------------------------------------------------- cleanup

    def close(self) -> None:
        """Free graphs, buffers and the stream; drop context, engine and runtime (in that order)."""
        if self._closed:
            return
        self._closed = True
        for graph in self._graphs.values():
            graph.free()
        self._graphs.clear()
        if self._stream is not None:
            try:
                self._stream.synchronize()
            finally:
                for buffer in reversed(self._buffers):
                    buffer.free()
                self._buffers.clear()
                self._stream.free()
                self._stream = None
        for attr in ("_context", "_engine", "_runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)
