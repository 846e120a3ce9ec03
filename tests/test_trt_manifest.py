"""kd2trt.trt.manifest: engine naming, manifest read/write, and the runtime compatibility decision."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kd2trt.artifacts import sha256_file
from kd2trt.errors import Kd2trtError
from kd2trt.layout import RunLayout, engine_filename, sidecar
from kd2trt.manifests import BuildOptions, EngineManifest, JetsonRecord, PlanRecord
from kd2trt.trt.manifest import check_runtime_compatible, read_manifest, verify_engine_file, write_manifest
from kd2trt.trt.runner import read_engine

SHA = "0" * 64


def make_manifest(**changes) -> EngineManifest:
    build = {"input_name": "input", "input_chw": [1, 8, 8], "min_batch": 1, "opt_batch": 32, "max_batch": 32,
             "workspace_mb": 2048}
    build.update(changes.pop("build", {}))
    data = {
        "kd2trt_version": "0.1.0", "created_utc": "2026-11-01T00:00:00+00:00", "trt_version": "10.3.0.30",
        "cuda_version": "12.6", "gpu_name": "Orin", "compute_capability": "8.7",
        "jetson": {"l4t": "36.4.3", "jetpack": "6.2", "model": "NVIDIA Jetson AGX Orin Developer Kit"},
        "precision": "int8",
        "plan": {"precision": "int8", "onnx_kind": "onnx", "strongly_typed": False, "fp16_flag": True,
                 "int8_flag": True, "use_calibrator": True, "calibration_source": "cache",
                 "quantization": "implicit", "reason": "test"},
        "source_onnx": "runs/x/student.onnx", "source_onnx_sha256": SHA,
        "calib_cache": "runs/x/student.calib-trt10.3.0.cache", "calib_cache_sha256": SHA,
        "build": build, "build_seconds": 12.5, "engine_file": "student-int8-sm87-trt10.3.0.engine",
        "engine_sha256": SHA, "engine_bytes": 1234, "layer_info": "student-int8-sm87-trt10.3.0.engine.layers.json",
    }
    data.update(changes)
    return EngineManifest.model_validate(data)


# --------------------------------------------------------------------------------------------- naming


def test_engine_filename() -> None:
    assert engine_filename("student", "int8", "8.7", "10.3.0.30") == "student-int8-sm87-trt10.3.0.engine"
    assert engine_filename("resnet 18/kd", "fp16", "12.0", "11.0") == "resnet-18-kd-fp16-sm120-trt11.0.0.engine"
    assert RunLayout(Path("runs/digits")).engine("student", "fp32", "8.6", "8.5.2.2") == Path(
        "engines/digits/student-fp32-sm86-trt8.5.2.engine")
    assert sidecar("engines/d/a.engine") == Path("engines/d/a.engine.json")


@pytest.mark.parametrize(("cc", "version", "match"), [("87", "10.3", "compute capability"),
                                                      ("8.7", "ten", "not understood")])
def test_engine_filename_rejects_bad_parts(cc: str, version: str, match: str) -> None:
    with pytest.raises(Kd2trtError, match=match):
        engine_filename("student", "int8", cc, version)
    with pytest.raises(Kd2trtError, match="cannot be used in a file name"):
        engine_filename("///", "int8", "8.7", "10.3")


# --------------------------------------------------------------------------------------------- read/write


def test_manifest_round_trip(tmp_path: Path) -> None:
    engine = tmp_path / "student-int8-sm87-trt10.3.0.engine"
    manifest = make_manifest()
    path = write_manifest(manifest, engine)
    assert path == tmp_path / "student-int8-sm87-trt10.3.0.engine.json"
    assert read_manifest(engine) == manifest
    data = json.loads(path.read_text())
    assert data["kind"] == "kd2trt TensorRT engine" and data["jetson"]["jetpack"] == "6.2"


def test_manifest_models_forbid_unknown_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        make_manifest(gpu_memory=1)
    with pytest.raises(ValueError):
        BuildOptions(input_name="x", input_chw=[1, 8], min_batch=1, opt_batch=1, max_batch=1, workspace_mb=1)
    with pytest.raises(ValueError):
        JetsonRecord(l4t="36.4.3", board="x")
    with pytest.raises(ValueError):
        PlanRecord(precision="int4", onnx_kind="onnx", strongly_typed=False, fp16_flag=False, int8_flag=False,
                   use_calibrator=False, quantization="none", reason="")


def test_read_manifest_errors(tmp_path: Path) -> None:
    engine = tmp_path / "a.engine"
    with pytest.raises(Kd2trtError, match=r"a\.engine: no manifest a\.engine\.json"):
        read_manifest(engine)
    sidecar(engine).write_text("{not json")
    with pytest.raises(Kd2trtError, match="not valid JSON"):
        read_manifest(engine)
    data = make_manifest().model_dump(mode="json")
    data["compute_capability"] = "sm87"
    sidecar(engine).write_text(json.dumps(data))
    with pytest.raises(Kd2trtError, match=r"invalid engine manifest \(compute_capability"):
        read_manifest(engine)


def test_read_manifest_refuses_a_binary_file(tmp_path: Path) -> None:
    engine = tmp_path / "a.engine"
    sidecar(engine).write_bytes(b"\x9f\x00ftrt plan bytes")  # e.g. an engine copied over its manifest
    with pytest.raises(Kd2trtError, match=r"not UTF-8 text \(byte 0\).*kd2trt export") as err:
        read_manifest(engine)
    assert str(sidecar(engine)) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("version", ["latest", "", "10", "TensorRT 10.3"])
def test_read_manifest_refuses_a_trt_version_that_is_not_one(tmp_path: Path, version: str) -> None:
    engine = tmp_path / "a.engine"
    data = make_manifest().model_dump(mode="json")
    data["trt_version"] = version
    sidecar(engine).write_text(json.dumps(data))
    with pytest.raises(Kd2trtError, match=r"invalid engine manifest \(trt_version: .*not understood") as err:
        read_manifest(engine)
    assert str(sidecar(engine)) in str(err.value) and "\n" not in str(err.value)
    for good in ("10.3.0.30", "8.5.2", "11.0"):
        data["trt_version"] = good
        sidecar(engine).write_text(json.dumps(data))
        assert read_manifest(engine).trt_version == good  # kept as written (build number included)


def test_verify_engine_file(tmp_path: Path) -> None:
    engine = tmp_path / "a.engine"
    engine.write_bytes(b"engine bytes")
    manifest = make_manifest(engine_sha256=sha256_file(engine))
    verify_engine_file(manifest, engine)
    engine.write_bytes(b"another engine")
    with pytest.raises(Kd2trtError, match=r"does not match its manifest.*kd2trt export <checkpoint> --int8"):
        verify_engine_file(manifest, engine)
    with pytest.raises(Kd2trtError, match="does not exist"):
        verify_engine_file(manifest, tmp_path / "missing.engine")


def test_verify_engine_bytes_hashes_what_it_is_given(tmp_path: Path) -> None:
    engine = tmp_path / "a.engine"
    engine.write_bytes(b"engine bytes")
    manifest = make_manifest(engine_sha256=sha256_file(engine))
    verify_engine_file(manifest, engine, b"engine bytes")
    verify_engine_file(manifest, tmp_path / "not-read.engine", b"engine bytes")  # the bytes, not the path, count
    with pytest.raises(Kd2trtError, match=r"a\.engine: sha256 .* does not match its manifest"):
        verify_engine_file(manifest, engine, b"engine bytes\0")


# --------------------------------------------------------------------------------------------- compatibility


def test_same_version_and_gpu_is_accepted() -> None:
    check_runtime_compatible(make_manifest(), "10.3.0.30", "8.7")
    check_runtime_compatible(make_manifest(), "10.3.0.26", "8.7")  # the build number does not matter


def test_other_trt_version_is_refused_naming_both() -> None:
    with pytest.raises(Kd2trtError) as err:
        check_runtime_compatible(make_manifest(), "8.6.2.3", "8.7", "engines/d/e.engine")
    message = str(err.value)
    assert "engines/d/e.engine was built with TensorRT 10.3.0" in message
    assert "runs TensorRT 8.6.2" in message and "JetPack 6.2 (L4T 36.4.3)" in message
    assert "kd2trt export <checkpoint> --int8" in message and "not built version-compatible" in message


def test_patch_difference_is_refused() -> None:
    with pytest.raises(Kd2trtError, match=r"TensorRT 10\.3\.1"):
        check_runtime_compatible(make_manifest(), "10.3.1", "8.7")


def test_version_compatible_runs_forward_only() -> None:
    manifest = make_manifest(trt_version="8.6.1.6", jetson=None, compute_capability="8.6",
                             build={"version_compatible": True})
    check_runtime_compatible(manifest, "10.3.0", "8.6")
    check_runtime_compatible(manifest, "8.6.2", "8.6")
    with pytest.raises(Kd2trtError, match=r"only runs on the same or later TensorRT.*older 8\.6\.0"):
        check_runtime_compatible(manifest, "8.6.0", "8.6")


def test_version_compatible_claim_before_86_is_refused() -> None:
    manifest = make_manifest(trt_version="8.5.2", build={"version_compatible": True})
    with pytest.raises(Kd2trtError, match="predates version compatibility"):
        check_runtime_compatible(manifest, "8.6.2", "8.7")


def test_other_gpu_is_refused_naming_both() -> None:
    manifest = make_manifest(jetson=None, gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9",
                             trt_version="10.14.1")
    with pytest.raises(Kd2trtError) as err:
        check_runtime_compatible(manifest, "10.14.1", "8.6", running_gpu_name="NVIDIA A10")
    message = str(err.value)
    assert "NVIDIA GeForce RTX 4090 (sm89)" in message and "NVIDIA A10 (sm86)" in message
    assert "not built hardware-compatible" in message


def test_hardware_compatible_covers_ampere_and_newer_only() -> None:
    manifest = make_manifest(jetson=None, gpu_name="A100", compute_capability="8.0", trt_version="10.14.1",
                             build={"hardware_compatible": True})
    check_runtime_compatible(manifest, "10.14.1", "9.0")
    check_runtime_compatible(manifest, "10.14.1", "8.9")
    with pytest.raises(Kd2trtError, match="older than Ampere"):
        check_runtime_compatible(manifest, "10.14.1", "7.5")


def test_hardware_compatible_is_never_accepted_from_a_jetson() -> None:
    manifest = make_manifest(build={"hardware_compatible": True})
    with pytest.raises(Kd2trtError, match="built on a Jetson"):
        check_runtime_compatible(manifest, "10.3.0", "8.6")


def test_bad_running_versions() -> None:
    with pytest.raises(Kd2trtError, match="not understood"):
        check_runtime_compatible(make_manifest(), "latest", "8.7")
    with pytest.raises(Kd2trtError, match=r"MAJOR\.MINOR"):
        check_runtime_compatible(make_manifest(), "10.3.0", "sm87")


def test_same_cc_other_gpu_model_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    manifest = make_manifest(jetson=None, gpu_name="NVIDIA GeForce RTX 3090", compute_capability="8.6",
                             trt_version="10.14.1")
    with caplog.at_level("WARNING", logger="kd2trt.trt.manifest"):
        check_runtime_compatible(manifest, "10.14.1", "8.6", running_gpu_name="NVIDIA A10")
    assert "latency may differ" in caplog.text


# --------------------------------------------------------------------------------------------- the runner's engine file


def test_the_runner_reads_the_engine_once_and_verifies_those_bytes(tmp_path: Path) -> None:
    engine = tmp_path / "student-int8-sm87-trt10.3.0.engine"
    engine.write_bytes(b"serialized plan")
    manifest = make_manifest(engine_sha256=sha256_file(engine))
    assert read_engine(engine, manifest) == b"serialized plan"
    engine.write_bytes(b"another plan")
    with pytest.raises(Kd2trtError, match="does not match its manifest"):
        read_engine(engine, manifest)
    assert read_engine(engine, manifest, verify_sha256=False) == b"another plan"
    with pytest.raises(Kd2trtError, match=re.escape(f"engine {tmp_path / 'missing.engine'} does not exist")):
        read_engine(tmp_path / "missing.engine", manifest)
    folder = tmp_path / "folder.engine"
    folder.mkdir()
    with pytest.raises(Kd2trtError, match=re.escape(f"cannot read engine {folder}: ") + ".*kd2trt export"):
        read_engine(folder, manifest)
