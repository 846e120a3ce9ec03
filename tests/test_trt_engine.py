"""End to end with a real TensorRT and GPU: build FP32/FP16/INT8 engines of a tiny CNN, run them, compare.

Marked ``trt``; every test skips (with the reason) unless :func:`probe_environment` finds a CUDA device *and*
TensorRT -- the probe looks for the device before importing TensorRT, which matters because TensorRT objects
created without a GPU can segfault. Run inside the NVIDIA container or on a Jetson::

    python -m pytest -m trt -v

The graph (Conv 3x3 -> Relu -> Flatten -> Gemm, dynamic batch, opset 13) is built with ``onnx.helper``;
ONNX Runtime on the CPU is the reference.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kd2trt.errors import Kd2trtError
from kd2trt.layout import engine_filename
from kd2trt.layout import sidecar as manifest_path
from kd2trt.onnx.calib_cache import CalibCacheError, read_cache
from kd2trt.trt.capabilities import probe_environment
from kd2trt.trt.manifest import read_manifest

pytestmark = pytest.mark.trt

CHW = (1, 8, 8)
CLASSES = 10
FIXTURE_CACHE_8502 = Path(__file__).resolve().parent / "fixtures" / "calib" / "trt8502_entropy2_internal_names.cache"


@pytest.fixture(scope="module")
def caps():
    found, reason = probe_environment()
    if found is None:
        pytest.skip(f"needs TensorRT and a CUDA device: {reason}")
    if not found.has_builder:
        pytest.skip(f"TensorRT {found.version} here is runtime-only: {reason}")
    return found


@pytest.fixture(scope="module")
def device():
    from kd2trt.trt import cuda_memory

    return cuda_memory.device_info(0)


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"conv.w": (rng.standard_normal((8, 1, 3, 3)) * 0.5).astype(np.float32),
            "conv.b": (rng.standard_normal(8) * 0.1).astype(np.float32),
            "fc.w": (rng.standard_normal((CLASSES, 8 * 8 * 8)) * 0.05).astype(np.float32),
            "fc.b": (rng.standard_normal(CLASSES) * 0.1).astype(np.float32)}


def _graph(fp16: bool) -> onnx.ModelProto:
    """The tiny classifier; ``fp16=True`` is the FP16-cast form (FP16 inside, FP32 input and output)."""
    weights = _weights()
    dtype = np.float16 if fp16 else np.float32
    inits = [numpy_helper.from_array(w.astype(dtype), name) for name, w in weights.items()]
    nodes = []
    source = "input"
    if fp16:
        nodes.append(helper.make_node("Cast", ["input"], ["input16"], to=TensorProto.FLOAT16))
        source = "input16"
    nodes += [
        helper.make_node("Conv", [source, "conv.w", "conv.b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("Flatten", ["relu"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits16" if fp16 else "logits"], transB=1, name="fc"),
    ]
    if fp16:
        nodes.append(helper.make_node("Cast", ["logits16"], ["logits"], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *CHW])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by the ONNX parsers of TensorRT 8.5 onwards
    onnx.checker.check_model(model)
    return model


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *CHW)).astype(np.float32)


def _qdq(fp32: Path, out: Path) -> Path:
    """Symmetric per-channel Q/DQ, the settings of DESIGN §3 (what TensorRT 8.5-11 parse)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": _images(16, seed)} for seed in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                   "DedicatedQDQPair": True, "AddQDQPairToWeight": True})
    return out


def _ort(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # plain fake-quant
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": images})[0]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("graphs")
    paths = {"onnx": folder / "student.onnx", "fp16_onnx": folder / "student.fp16.onnx"}
    onnx.save(_graph(False), paths["onnx"])
    onnx.save(_graph(True), paths["fp16_onnx"])
    paths["qdq_onnx"] = _qdq(paths["onnx"], folder / "student.int8.onnx")
    return paths


def _settings(caps, device, graph: Path, plan, calibrator=None, **options):
    """The build settings the engines stage would plan on this machine (kd2trt.trt.wiring.plan_build)."""
    from kd2trt.config import BuildConfig
    from kd2trt.trt.jetson import detect_jetson
    from kd2trt.trt.stage import read_graph_input
    from kd2trt.trt.wiring import DeviceFacts, plan_build

    options.setdefault("timing_cache_dir", None)
    facts = DeviceFacts(device.name, device.compute_capability, on_jetson=detect_jetson(run=None) is not None)
    return plan_build(plan, BuildConfig(**options), caps, facts, read_graph_input(graph),
                      calibration_batch=getattr(calibrator, "batch_size", None))


def _build(caps, device, graphs, tmp: Path, precision: str, int8_path: str = "auto", calibrator=None,
           available=None, **options):
    from kd2trt.trt.builder import build_engine
    from kd2trt.trt.plan import plan_precision

    plan = plan_precision(caps, precision, int8_path, available or list(graphs), calibrator is not None)
    engine = tmp / engine_filename("student", precision, device.compute_capability, caps.version)
    settings = _settings(caps, device, graphs[plan.onnx_kind], plan, calibrator, min_batch=1, opt_batch=8,
                         max_batch=16, **options)
    manifest = build_engine(graphs[plan.onnx_kind], engine, settings, calibrator=calibrator)
    return plan, engine, manifest


def _run(engine: Path, images: np.ndarray, **options) -> np.ndarray:
    from kd2trt.trt.runner import TrtRunner

    with TrtRunner(engine, **options) as runner:
        return runner.infer(images)


def _close(actual: np.ndarray, expected: np.ndarray, rel: float) -> None:
    scale = float(np.abs(expected).max())
    assert float(np.abs(actual - expected).max()) <= rel * scale, (actual, expected)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------------------------- tests


def test_capabilities_match_the_version(caps) -> None:
    assert caps.weak_typing == (caps.version.major < 11)
    assert caps.has_calibrator == (caps.version.major < 11)
    assert caps.explicit_batch_flag_needed == (caps.version.major < 10)


def test_fp32_engine_matches_onnxruntime(caps, device, graphs, tmp_path) -> None:
    _, engine, manifest = _build(caps, device, graphs, tmp_path, "fp32")
    images = _images(16, 7)
    _close(_run(engine, images), _ort(graphs["onnx"], images), 1e-3)
    assert read_manifest(engine) == manifest
    assert manifest.compute_capability == device.compute_capability
    assert manifest.build.min_batch == 1 and manifest.build.max_batch == 16
    assert manifest.layer_info and json.loads((tmp_path / manifest.layer_info).read_text())


def test_fp16_engine(caps, device, graphs, tmp_path) -> None:
    plan, engine, manifest = _build(caps, device, graphs, tmp_path, "fp16")
    assert plan.onnx_kind == ("onnx" if caps.weak_typing else "fp16_onnx")
    assert manifest.build.builder_flags == (["FP16"] if caps.weak_typing else [])
    images = _images(8, 3)
    _close(_run(engine, images), _ort(graphs["onnx"], images), 2e-2)


def test_int8_qdq_engine(caps, device, graphs, tmp_path) -> None:
    plan, engine, manifest = _build(caps, device, graphs, tmp_path, "int8", "qdq")
    assert plan.quantization == "explicit" and manifest.plan.onnx_kind == "qdq_onnx"
    images = _images(16, 5)
    actual, reference = _run(engine, images), _ort(graphs["qdq_onnx"], images)
    assert _cosine(actual, reference) > 0.99


def test_int8_calibrate_then_rebuild_from_the_cache_alone(caps, device, graphs, tmp_path) -> None:
    if not caps.has_calibrator:
        pytest.skip(f"TensorRT {caps.version} has no INT8 calibrators (strong typing only)")
    import tensorrt as trt

    from kd2trt.trt.calibrator import make_calibrator

    cache = tmp_path / f"student.calib-trt{caps.version}.cache"
    live = make_calibrator(trt, "entropy", [_images(64, 11)], cache, 8, "input")
    available = ["onnx", "qdq_onnx"]
    plan, engine, manifest = _build(caps, device, graphs, tmp_path / "live", "int8", calibrator=live,
                                    available=available)
    assert plan.calibration_source == "data" and live.cache_written and cache.is_file()
    assert read_cache(cache).version == caps.version  # TensorRT wrote the header kd2trt expects
    assert manifest.calib_cache_sha256 is not None

    from_cache = make_calibrator(trt, "entropy", None, cache, 8, "input")  # the Jetson case: no data at all
    plan2, engine2, _ = _build(caps, device, graphs, tmp_path / "cached", "int8", calibrator=from_cache,
                               available=[*available, "calib_cache"])
    assert plan2.calibration_source == "cache" and from_cache.error is None
    images = _images(16, 9)
    first, second = _run(engine, images), _run(engine2, images)
    assert _cosine(first, second) > 0.999
    assert _cosine(first, _ort(graphs["onnx"], images)) > 0.98


def test_foreign_calibration_cache_is_refused_before_building(caps, tmp_path) -> None:
    if not caps.has_calibrator or str(caps.version) == "8.5.2":
        pytest.skip("needs a TensorRT with calibrators other than 8.5.2")
    import tensorrt as trt

    from kd2trt.trt.calibrator import make_calibrator

    cache = tmp_path / "student.calib.cache"
    shutil.copy(FIXTURE_CACHE_8502, cache)
    with pytest.raises(CalibCacheError, match="silently ignore"):
        make_calibrator(trt, "entropy", None, cache, 8, "input")


def test_runner_refuses_tampered_manifests_and_engines(caps, device, graphs, tmp_path) -> None:
    from kd2trt.trt.runner import TrtRunner

    _, engine, _ = _build(caps, device, graphs, tmp_path, "fp32")
    original = json.loads(manifest_path(engine).read_text())

    def tampered(**changes) -> None:
        manifest_path(engine).write_text(json.dumps({**original, **changes}))

    tampered(trt_version="7.1.3")
    with pytest.raises(Kd2trtError, match=r"built with TensorRT 7\.1\.3.*kd2trt export"):
        TrtRunner(engine)
    other_cc = "7.5" if device.compute_capability != "7.5" else "8.6"
    tampered(compute_capability=other_cc)
    with pytest.raises(Kd2trtError, match=f"sm{other_cc.replace('.', '')}"):
        TrtRunner(engine)
    tampered()
    engine.write_bytes(engine.read_bytes() + b"\0")
    with pytest.raises(Kd2trtError, match="does not match its manifest"):
        TrtRunner(engine)
    manifest_path(engine).unlink()
    with pytest.raises(Kd2trtError, match="no manifest"):
        TrtRunner(engine)


def test_runner_batches_and_cuda_graphs(caps, device, graphs, tmp_path) -> None:
    from kd2trt.trt.runner import TrtRunner

    _, engine, _ = _build(caps, device, graphs, tmp_path, "fp32")
    images = _images(37, 4)
    reference = _ort(graphs["onnx"], images)
    with TrtRunner(engine, use_cuda_graph=True) as runner:
        assert (runner.min_batch, runner.max_batch, runner.input_chw) == (1, 16, CHW)
        for _ in range(3):  # first call captures, later calls replay the graph
            _close(runner.infer(images[:4]), reference[:4], 1e-3)
        _close(runner.infer_many(images), reference, 1e-3)
        with pytest.raises(Kd2trtError, match=r"batches of 1\.\.16 images, got 17"):
            runner.infer(images[:17])
        with pytest.raises(Kd2trtError, match="takes images of shape"):
            runner.infer(images[:, :, :4])


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_gpu_compute_is_timed_apart_from_host_latency(caps, device, graphs, tmp_path, cuda_graph) -> None:
    import time

    from kd2trt.trt.runner import TrtRunner

    _, engine, _ = _build(caps, device, graphs, tmp_path, "fp32")
    images = _images(38, 16)
    with TrtRunner(engine, use_cuda_graph=cuda_graph) as runner:
        compute = runner.time_compute(images, 50)
        host = []
        for _ in range(50):
            t0 = time.perf_counter()
            runner.infer(images)
            host.append((time.perf_counter() - t0) * 1e3)
        assert len(compute) == 50 and min(compute) > 0
        # the event span holds no copies and no synchronisation: never above what the host waited for
        assert np.median(compute) <= np.median(host)
        _close(runner.infer(images), _ort(graphs["onnx"], images), 1e-3)  # buffers intact after timing
        with pytest.raises(Kd2trtError, match="iterations must be at least 1"):
            runner.time_compute(images, 0)


def test_timing_cache_is_reused(caps, device, graphs, tmp_path) -> None:
    _, _, first = _build(caps, device, graphs, tmp_path / "a", "fp32", timing_cache_dir=tmp_path / "timing")
    _, _, second = _build(caps, device, graphs, tmp_path / "b", "fp32", timing_cache_dir=tmp_path / "timing")
    assert first.build.timing_cache == second.build.timing_cache
    assert not first.build.timing_cache_loaded and second.build.timing_cache_loaded


def test_parser_errors_name_the_file(caps, device, tmp_path) -> None:
    from kd2trt.trt.builder import build_engine
    from kd2trt.trt.plan import plan_precision

    bad = tmp_path / "bad.onnx"
    node = helper.make_node("NoSuchOp", ["input"], ["logits"], domain="kd2trt.test", name="mystery")
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                      helper.make_opsetid("kd2trt.test", 1)]), bad)
    plan = plan_precision(caps, "fp32", "auto", ["onnx"])
    settings = _settings(caps, device, bad, plan, min_batch=1, max_batch=1)
    with pytest.raises(Kd2trtError, match=r"bad\.onnx: TensorRT .* ONNX parser failed"):
        build_engine(bad, tmp_path / "bad.engine", settings)
