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
