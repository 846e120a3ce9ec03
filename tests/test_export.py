"""`kd2trt export` on a real (tiny) distilled student: ONNX, parity, FP16, INT8 cache + Q/DQ, preview."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from rich.console import Console

from kd2trt.config import ExportConfig
from kd2trt.errors import Kd2trtError
from kd2trt.onnx import calibration, runtime
from kd2trt.onnx import stage as export_stage
from kd2trt.onnx.calib_cache import read_cache, read_cache_manifest
from kd2trt.onnx.export import check_onnx
from kd2trt.onnx.stage import ExportRequest, run_export
from kd2trt.targets import parse_target


def _version(text: str):
    return parse_target(text).version

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("export")
    for name in ("student.pt", "teacher.pt"):
        shutil.copy(tiny_run / name, out / name)
    config = ExportConfig(trt_versions=["8.5", "10.3", "11.0"], calib_images=200)
    summary = run_export(ExportRequest(out / "student.pt"), config, QUIET)
    return out, summary


def test_all_artifacts_written_and_checked(exported: tuple[Path, dict]) -> None:
    out, summary = exported
    for name in ("student.onnx", "teacher.onnx", "student.fp16.onnx", "student.int8.onnx",
                 "student.calib-trt8.5.2.cache", "student.calib-trt10.3.0.cache", "student.export.json"):
        assert (out / name).is_file(), name
    assert not (out / "student.calib-trt11.0.0.cache").exists()  # TensorRT 11: no calibrator, Q/DQ only
    assert not list(out.glob(".*.tmp"))
    for onnx_file in out.glob("*.onnx"):
        check_onnx(onnx_file)
    assert summary["onnx"]["opset"] == 17
    assert summary["onnx"]["parity"]["max_abs_diff"] < 1e-4
    assert summary["onnx"]["parity"]["top1_agreement"] == 100.0
    # recorded in absolute and relative terms, with the tolerance it was held to and the share of it used
    assert summary["onnx"]["parity"]["max_rel_diff"] < 1e-5
    assert (summary["onnx"]["parity"]["atol"], summary["onnx"]["parity"]["rtol"]) == (1e-4, 1e-3)
    assert 0 <= summary["onnx"]["parity"]["tolerance_used"] < 0.1
    assert json.loads((out / "student.export.json").read_text())["onnx"]["sha256"] == summary["onnx"]["sha256"]
    assert set(summary["preflight"]) == {"8.5", "10.3", "11.0"}


def test_onnx_has_dynamic_batch(exported: tuple[Path, dict]) -> None:
    out, _ = exported
    session = runtime.session(out / "student.onnx")
    for batch in (1, 7):
        logits = session.run(None, {"input": np.zeros((batch, 1, 8, 8), np.float32)})[0]
        assert logits.shape == (batch, 10)


def test_fp16_graph_has_fp32_io_and_fp16_inside(exported: tuple[Path, dict]) -> None:
    out, summary = exported
    model = onnx.load(str(out / "student.fp16.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    assert {i.data_type for i in model.graph.initializer if i.name in conv_weights} == {onnx.TensorProto.FLOAT16}
    assert summary["fp16"]["parity_vs_fp32"]["max_abs_diff"] < 0.05
    assert summary["fp16"]["parity_vs_fp32"]["tolerance_used"] < 1.0


def test_qdq_graph_follows_tensorrt_rules(exported: tuple[Path, dict]) -> None:
    """Symmetric int8, zero point 0, per-channel weights on axis 0, per-tensor activations, opset ≥ 13."""
    out, _ = exported
    model = onnx.load(str(out / "student.int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    producers = {o: n for n in model.graph.node for o in n.output}
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
        scale = inits[node.input[1]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        feeds_conv_weight = any(node.output[0] == w or producers.get(w) is node for w in conv_weights)
        if feeds_conv_weight and node.op_type == "DequantizeLinear":
            assert scale.ndim == 1 and scale.size > 1 and axis == 0, node.name
    # weights stay float initialisers → Q → DQ (TensorRT 8.5-era parsers reject int8 initialiser → DQ)
    weight_dq_inputs = [n.input[0] for n in qdq if n.op_type == "DequantizeLinear"]
    assert not any(inits.get(name) is not None and inits[name].dtype == np.int8 for name in weight_dq_inputs)


def test_cache_and_qdq_share_the_same_statistics(exported: tuple[Path, dict]) -> None:
    out, _ = exported
    cache = read_cache(out / "student.calib-trt10.3.0.cache")
    assert cache.header == "TRT-100300-EntropyCalibration2"
    assert read_cache(out / "student.calib-trt8.5.2.cache").header == "TRT-8502-EntropyCalibration2"
    fp32 = onnx.load(str(out / "student.onnx"))
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in fp32.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    model = onnx.load(str(out / "student.int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    checked = 0
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in cache.scales:
            # each activation is quantised with its own range: no ReLU-range fusion simulated
            scale = float(inits[node.input[1]])
            assert scale == pytest.approx(cache.scales[node.input[0]], rel=1e-6), node.input[0]
            assert all(user.op_type != "Relu" for user in consumers.get(node.input[0], [])), node.input[0]
            checked += 1
    assert checked == 4  # input → Conv, ReLU → Conv, ReLU → pool, flattened features → Gemm
    assert "input" in cache.scales


def test_preview_reports_every_form(exported: tuple[Path, dict]) -> None:
    _, summary = exported
    rows = summary["preview"]["top1"]
    assert set(rows) == {"teacher (PyTorch)", "student (PyTorch)", "student FP32 (ONNX Runtime)",
                         "student FP16 (ONNX Runtime)", "student INT8 Q/DQ (ONNX Runtime, fake-quant)"}
    assert rows["student FP32 (ONNX Runtime)"] == pytest.approx(rows["student (PyTorch)"])
    assert rows["student INT8 Q/DQ (ONNX Runtime, fake-quant)"] > rows["student FP32 (ONNX Runtime)"] - 5
    assert rows["student FP32 (ONNX Runtime)"] > 30  # the tiny student learned something


def test_reusing_a_cache_needs_no_data_and_is_checked(exported: tuple[Path, dict], tmp_path: Path) -> None:
    out, first = exported
    shutil.copy(out / "student.pt", tmp_path / "student.pt")
    cache = out / "student.calib-trt10.3.0.cache"
    config = ExportConfig(trt_versions=["10.3"], fp16=False, teacher=False)
    summary = run_export(ExportRequest(tmp_path / "student.pt", calib_cache=cache), config, QUIET)
    # the original calibration's provenance is carried forward, not replaced by "reused cache, 0 images"
    assert summary["int8"]["calibration"] == {**first["int8"]["calibration"], "reused_from": str(cache)}
    assert summary["onnx"]["sha256"] == first["onnx"]["sha256"]  # the export is deterministic
    assert read_cache(tmp_path / "student.calib-trt10.3.0.cache").scales == read_cache(cache).scales

    # a cache from another TensorRT release is usable: export writes the ranges under each target's header
    other = run_export(ExportRequest(tmp_path / "student.pt", calib_cache=cache),
                       config.model_copy(update={"trt_versions": ["8.6"]}), QUIET)
    rewritten = read_cache(tmp_path / "student.calib-trt8.6.2.cache")
    assert rewritten.header == "TRT-8602-EntropyCalibration2" and rewritten.scales == read_cache(cache).scales
    assert [c["header"] for c in other["int8"]["caches"]] == ["TRT-8602-EntropyCalibration2"]
    shutil.copy(out / "teacher.pt", tmp_path / "teacher.pt")
    with pytest.raises(Kd2trtError, match="was calibrated for another ONNX"):
        run_export(ExportRequest(tmp_path / "teacher.pt", calib_cache=cache), config, QUIET)
    forced = run_export(ExportRequest(tmp_path / "teacher.pt", calib_cache=cache, force=True),
                        config.model_copy(update={"int8": True}), QUIET)
    assert forced["int8"]["caches"]


def test_reusing_a_cache_in_place_keeps_its_calibration_record(exported: tuple[Path, dict], tmp_path: Path) -> None:
    out, first = exported
    for name in ("student.pt", "student.calib-trt10.3.0.cache", "student.calib-trt10.3.0.cache.json"):
        shutil.copy(out / name, tmp_path / name)
    cache = tmp_path / "student.calib-trt10.3.0.cache"
    config = ExportConfig(trt_versions=["10.3"], fp16=False, teacher=False, calib_method="minmax")
    run_export(ExportRequest(tmp_path / "student.pt", calib_cache=cache), config, QUIET)
    manifest = read_cache_manifest(tmp_path / "student.calib-trt10.3.0.cache.json")
    original = first["int8"]["calibration"]
    assert original["method"] == "entropy" and original["images"] == 200
    assert manifest.calibration == {**original, "reused_from": str(cache)}  # not "images 0", not "minmax"
    # reused again (the manifest now records a reuse): the first calibration is still what it names
    run_export(ExportRequest(tmp_path / "student.pt", calib_cache=cache), config, QUIET)
    assert read_cache_manifest(tmp_path / "student.calib-trt10.3.0.cache.json").calibration == \
        {**original, "reused_from": str(cache)}


def _manifest_bytes(**changed: object) -> bytes:
    """A valid calibration-cache manifest with some fields changed."""
    manifest = {"kind": "kd2trt calibration cache", "cache": "student.calib-trt10.3.0.cache",
                "header": "TRT-100300-EntropyCalibration2", "trt_version": "10.3.0", "algorithm": "EntropyCalibration2",
                "tensors": 3, "source_onnx": "student.onnx", "source_onnx_sha256": "a" * 64,
                "calibration": {"method": "entropy"}, "preprocessing": {}, "tools": {}}
    return json.dumps({**manifest, **changed}).encode()


@pytest.mark.parametrize(("content", "message"), [
    (b"{not json", r"\.cache\.json:1: not valid JSON"),
    (b"[1, 2]", r"\.cache\.json: not a calibration-cache manifest .*found a JSON list"),
    (b"\xff\xfe{}", r"\.cache\.json: not UTF-8 text"),
    (_manifest_bytes(source_onnx_sha256=None), r"invalid calibration-cache manifest \(source_onnx_sha256: Input"),
    (_manifest_bytes(source_onnx_sha256="abc"), r"invalid calibration-cache manifest \(source_onnx_sha256: String"),
    (_manifest_bytes(calibration=None), r"invalid calibration-cache manifest \(calibration: Input should"),
    (_manifest_bytes(kind="other"), r"invalid calibration-cache manifest \(kind: Input should be"),
])
def test_malformed_cache_manifest_is_a_one_line_error(tmp_path: Path, content: bytes, message: str) -> None:
    manifest = tmp_path / "student.calib-trt10.3.0.cache.json"
    manifest.write_bytes(content)
    with pytest.raises(Kd2trtError, match=message) as caught:
        read_cache_manifest(manifest)
    assert str(manifest) in str(caught.value) and "\n" not in str(caught.value)


def test_reuse_with_a_malformed_manifest_names_it(exported: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = exported
    shutil.copy(out / "student.pt", tmp_path / "student.pt")
    cache = tmp_path / "other.cache"
    shutil.copy(out / "student.calib-trt10.3.0.cache", cache)
    (tmp_path / "other.cache.json").write_text('["not", "a", "manifest"]')
    config = ExportConfig(trt_versions=["10.3"], fp16=False, teacher=False)
    with pytest.raises(Kd2trtError, match=r"other\.cache\.json: not a calibration-cache manifest"):
        run_export(ExportRequest(tmp_path / "student.pt", calib_cache=cache), config, QUIET)


def test_parity_refuses_unnormalised_input(exported: tuple[Path, dict]) -> None:
    """Wrong preprocessing (the images fed without the checkpoint's mean/std normalisation) on the real exported
    student: refused by the FP32 and the FP16 tolerance alike, although it is one smooth change of the input."""
    from kd2trt.onnx.parity import Tolerance, compare

    out, _ = exported
    run = export_stage.ExportRun(ExportRequest(out / "student.pt"), ExportConfig(), QUIET)
    images, _ = run.split_images("val", 128)
    mean, std = (np.array(v, np.float32)[None, :, None, None] for v in (run.preprocessing.mean,
                                                                         run.preprocessing.std))
    reference = export_stage.ort_logits(out / "student.onnx", images)
    unnormalised = export_stage.ort_logits(out / "student.onnx", images * std + mean)
    for precision in ("fp32", "fp16"):
        parity = compare(reference, unnormalised, Tolerance.of(ExportConfig(), precision))
        assert not parity.within_tolerance and parity.max_rel_diff > 0.1, (precision, parity)


def test_failed_fp32_parity_leaves_no_onnx(exported: tuple[Path, dict], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = exported
    shutil.copy(out / "student.pt", tmp_path / "student.pt")
    real = export_stage.ort_logits
    monkeypatch.setattr(export_stage, "ort_logits", lambda *a, **k: real(*a, **k) + 1.0)  # drifted logits
    config = ExportConfig(trt_versions=["10.3"], fp16=False, int8=False, teacher=False)
    with pytest.raises(Kd2trtError, match=r"student\.onnx \(ONNX Runtime\): parity failed"):
        run_export(ExportRequest(tmp_path / "student.pt"), config, QUIET)
    assert not (tmp_path / "student.onnx").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_failed_fp16_parity_leaves_no_fp16_onnx(exported: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = exported
    shutil.copy(out / "student.pt", tmp_path / "student.pt")
    config = ExportConfig(trt_versions=["10.3"], int8=False, teacher=False, fp16_atol=1e-9, fp16_rtol=0.0)
    with pytest.raises(Kd2trtError, match=r"student\.fp16\.onnx vs FP32: parity failed — .* the input to FP16 .*"
                                          r"\(tolerance: export\.fp16_atol / export\.fp16_rtol, flags --fp16-atol "
                                          r"/ --fp16-rtol\)$"):
        run_export(ExportRequest(tmp_path / "student.pt"), config, QUIET)
    assert (tmp_path / "student.onnx").is_file()  # the FP32 graph passed its own gates
    assert not (tmp_path / "student.fp16.onnx").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_prime_calibration_count_is_fed_in_plain_chunks(exported: tuple[Path, dict]) -> None:
    """211 images (a prime): chunks of 64 and a ragged 19, not 211 batches of one; ranges as if fed at once."""
    out, _ = exported
    images = np.random.default_rng(0).standard_normal((211, 1, 8, 8)).astype(np.float32)
    calib = calibration.CalibrationSet(images, "prime")
    assert [len(batch) for batch in calib.batches(64)] == [64, 64, 64, 19]
    onnx_path = out / "student.onnx"
    for method in ("minmax", "percentile", "entropy"):
        chunked = calibration.amax_of(calibration.collect_ranges(onnx_path, calib, method))
        at_once = calibration.amax_of(calibration.collect_ranges(onnx_path, calib, method, batch_size=211))
        assert chunked.keys() == at_once.keys() and "input" in chunked
        for name, value in at_once.items():
            if method == "minmax":  # min/max merge exactly across chunks
                assert chunked[name] == value, name
            elif method == "percentile":  # the histogram's bins differ slightly
                assert chunked[name] == pytest.approx(value, rel=0.01), name
            else:  # entropy's KL threshold moves with the bins, within what resampling moves it
                assert chunked[name] == pytest.approx(value, rel=0.25), name


def test_calibration_data_file_shape_and_content(tmp_path: Path) -> None:
    good = tmp_path / "good.npy"
    np.save(good, np.random.default_rng(0).random((5, 1, 8, 8), np.float32))
    assert len(calibration.calibration_set_from_file(good, (1, 8, 8)).images) == 5
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((5, 3, 8, 8), np.float32))
    with pytest.raises(Kd2trtError, match=r"wrong\.npy: calibration data has shape \(5, 3, 8, 8\), the model takes "
                                          r"N×1×8×8"):
        calibration.calibration_set_from_file(wrong, (1, 8, 8))
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(Kd2trtError, match="calibration data is empty"):
        calibration.calibration_set_from_file(empty, (1, 8, 8))
    nan = tmp_path / "nan.npz"
    np.savez(nan, images=np.full((2, 1, 8, 8), np.nan, np.float32))
    with pytest.raises(Kd2trtError, match="NaN or inf"):
        calibration.calibration_set_from_file(nan, (1, 8, 8))


def test_non_finite_activation_range_is_an_error() -> None:
    ranges = calibration.ranges_from_amax({"conv_out": float("inf")}, "entropy")
    with pytest.raises(Kd2trtError, match="tensor 'conv_out' has non-finite activations"):
        calibration.amax_of(ranges)


def test_stratified_calibration_sample() -> None:
    from kd2trt.config import DataConfig
    from kd2trt.data import load_data

    data = load_data(DataConfig(image_size=8))
    calib = calibration.calibration_set_from_split(data.train, 100, seed=0, description="digits")
    assert calib.images.shape == (100, 1, 8, 8)
    again = calibration.calibration_set_from_split(data.train, 100, seed=0, description="digits")
    assert calib.sha256 == again.sha256


def test_bad_checkpoint_and_too_new_opset(tiny_run: Path, tmp_path: Path) -> None:
    import torch

    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(Kd2trtError, match=r"foreign\.pt: not a kd2trt checkpoint"):
        run_export(ExportRequest(foreign), ExportConfig(), QUIET)
    shutil.copy(tiny_run / "student.pt", tmp_path / "student.pt")
    config = ExportConfig(opset=18, trt_versions=["8.5"], fp16=False, int8=False, teacher=False)
    with pytest.raises(Kd2trtError, match="opset 18"):
        run_export(ExportRequest(tmp_path / "student.pt"), config, QUIET)


def test_checker_rejects_a_broken_graph(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["missing"], ["y"])], "g",
                                   [], [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), broken)
    with pytest.raises(Kd2trtError, match=r"broken\.onnx: fails the ONNX checker"):
        check_onnx(broken)
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(Kd2trtError, match=r"garbage\.onnx: (not a readable ONNX model|fails the ONNX checker)"):
        check_onnx(tmp_path / "garbage.onnx")


def test_short_targets_mean_the_jetpack_release() -> None:
    assert str(_version("8.5")) == "8.5.2"
    assert str(_version("8.6")) == "8.6.2"
    assert str(_version("10.3")) == "10.3.0"
    assert str(_version("10.14.1")) == "10.14.1"


def test_quiet_restores_the_root_logger_level() -> None:
    """Silencing onnxruntime.quantization must not change logging for the rest of the process."""
    import logging

    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    try:
        with runtime.quiet():
            assert root.level == logging.ERROR
        assert root.level == logging.INFO
    finally:
        root.setLevel(before)
