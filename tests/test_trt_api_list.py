"""scripts/check_trt_api.py: its list of TensorRT names stays true to kd2trt/trt/, and its string lookup is right.

The check itself runs against NVIDIA's bindings wheels (downloaded, not in CI); what CI can hold it to is that
every access the list cites still exists in the code, so the result in bench/results/trt_api_surface.json
cannot silently describe code that is gone.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("check_trt_api", REPO / "scripts" / "check_trt_api.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def test_every_cited_access_is_still_in_the_code(check) -> None:
    assert check.stale_sites() == []


def test_a_moved_or_dropped_access_is_reported(check, monkeypatch) -> None:
    moved = check.Group("engine", "ICudaEngine", (
        check._n("deserialize_cuda_engine", "method", ("runner.py:TrtRunner.close", "none", "always")),
        check._n("num_io_tensors", "property", ("runner.py:TrtRunner.no_such_method", "none", "always")),
        check._n("get_tensor_name", "method", ("runner.py:TrtRunner._setup_io", "none", "always")),
    ))
    monkeypatch.setattr(check, "NAMES", (moved,))
    assert check.stale_sites() == [
        "ICudaEngine.deserialize_cuda_engine: runner.py:TrtRunner.close does not mention it",
        "ICudaEngine.num_io_tensors: runner.py:TrtRunner.no_such_method does not exist",
    ]


def test_string_evidence_is_exact_tail_python_or_absent(check, tmp_path: Path) -> None:
    so = tmp_path / "tensorrt.so"
    so.write_bytes(b"\x7fELF\x02\x01\x00" + b"\x00".join([b"set_input_shape", b"UINT8", b"execute_async_v3"]) + b"\x00")
    (tmp_path / "__init__.py").write_text('__version__ = "10.3.0"\n\ndef nptype(trt_type):\n    pass\n')
    bindings = check._load(so, extract=False)
    assert bindings.version == "10.3.0"
    assert check.string_evidence(bindings, "set_input_shape") == "exact"
    assert check.string_evidence(bindings, "INT8") == "tail"  # stored only as the end of UINT8
    assert check.string_evidence(bindings, "nptype") == "python"
    assert check.string_evidence(bindings, "IInt8EntropyCalibrator2") == "absent"


# --------------------------------------------------------------------------------------------- the reverse way


def test_every_tensorrt_name_the_code_uses_is_in_the_list(check) -> None:
    """Reverse of the above: a `trt.X` / `trt.X.Y` the code uses but the list lacks is never checked."""
    assert check.unlisted_names() == []
    used = check.used_trt_names()
    # the wiring's names are data applied by getattr: they count as used
    assert "BuilderFlag.OBEY_PRECISION_CONSTRAINTS" in used and "DataType.HALF" in used
    assert {"Logger.ERROR", "TensorIOMode.INPUT", "tensorrt.nptype", "IBuilderConfig.int8_calibrator"} <= set(used)


def test_an_unlisted_name_is_reported(check, tmp_path: Path) -> None:
    (tmp_path / "extra.py").write_text(
        "def build(trt, config):\n"
        "    config.set_flag(trt.BuilderFlag.STRICT_TYPES)\n"
        "    flags = getattr(trt, 'NetworkDefinitionCreationFlag', None)\n"
        "    if hasattr(flags, 'PREFER_AOT_PYTHON_PLUGINS'):\n"
        "        pass\n"
        "    return trt.Refitter, trt.BuilderFlag.FP16, trt.ILogger.__init__\n")
    (tmp_path / "wiring.py").write_text("TRT_NAMES = {'BuilderFlag': ('FP16', 'DIRECT_IO')}\n")
    assert check.unlisted_names(tmp_path) == [
        "BuilderFlag.DIRECT_IO: used at wiring.py:1, not in check_trt_api.NAMES",
        "BuilderFlag.STRICT_TYPES: used at extra.py:2, not in check_trt_api.NAMES",
        "NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS: used at extra.py:4, not in check_trt_api.NAMES",
        "tensorrt.Refitter: used at extra.py:6, not in check_trt_api.NAMES",
    ]


def test_the_surface_json_covers_the_list(check) -> None:
    """bench/results/trt_api_surface.json was written from this list: every listed name has a row per version."""
    import json

    data = json.loads((REPO / "bench" / "results" / "trt_api_surface.json").read_text())
    listed = {f"{group.owner}.{entry.name}" for group in check.NAMES for entry in group.names}
    for version in data["versions"]:
        assert {f"{row['owner']}.{row['name']}" for row in version["names"]} == listed, version["version"]
