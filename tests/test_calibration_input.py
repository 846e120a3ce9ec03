"""Calibration inputs that must be refused, caches that cannot serve a graph, and byte-identical caches."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from kd2trt.errors import Kd2trtError
from kd2trt.onnx import calibration
from kd2trt.onnx.calib_cache import (
    CalibCacheError,
    CalibrationCache,
    activation_tensors,
    check_cache_tensors,
    parse_cache,
)
from kd2trt.onnx.export import export_onnx
from kd2trt.targets import TrtVersion
from tests.conftest import child_pythonpath


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    return export_onnx(model, torch.randn(2, 1, 8, 8), tmp_path_factory.mktemp("small") / "small.onnx")


def _images(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 1, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_constant_calibration_file_is_refused(tmp_path: Path, value: float) -> None:
    path = tmp_path / "calib.npy"
    np.save(path, np.full((20, 1, 8, 8), value, np.float32))
    with pytest.raises(Kd2trtError, match=rf"calib\.npy: calibration data is constant \(every value is {value:g}\)"):
        calibration.calibration_set_from_file(path, (1, 8, 8))


def test_all_zero_data_names_the_zero_range_tensors(small_onnx: Path) -> None:
    zeros = calibration.CalibrationSet(np.zeros((20, 1, 8, 8), np.float32), "zeros")
    with pytest.raises(Kd2trtError, match=r"calibration on zeros: \d+ tensor\(s\) have a zero range.*'input'"
                       ) as caught:
        calibration.collect_ranges(small_onnx, zeros, "minmax")
    assert "\n" not in str(caught.value)


def test_a_dead_layer_is_named_but_constants_are_not(tmp_path: Path) -> None:
    """Conv with all-zero weights and bias: its output and ReLU are zero for any data; an Identity of an
    initializer is a constant, not an activation, and is not reported."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 1, 3, 3], np.zeros(36, np.float32))
    bias = helper.make_tensor("b", TensorProto.FLOAT, [4], np.zeros(4, np.float32))
    nodes = [helper.make_node("Identity", ["b"], ["b_copy"], name="id"),
             helper.make_node("Conv", ["input", "w", "b_copy"], ["dead"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["dead"], ["dead_relu"], name="relu"),
             helper.make_node("Add", ["dead_relu", "input"], ["out"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4, 8, 8])],
                              [weight, bias])
    path = tmp_path / "dead.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert activation_tensors(onnx.load(path)) == ["input", "dead", "dead_relu", "out"]
    with pytest.raises(Kd2trtError, match=r"2 tensor\(s\) have a zero range.*'dead', 'dead_relu'; ") as caught:
        calibration.collect_ranges(path, calibration.CalibrationSet(_images(), "normal"), "minmax")
    assert "b_copy" not in str(caught.value)


def test_ranges_come_back_in_graph_order(small_onnx: Path) -> None:
    ranges = calibration.collect_ranges(small_onnx, calibration.CalibrationSet(_images(), "normal"), "minmax")
    assert list(ranges.data) == activation_tensors(small_onnx)
    assert next(iter(ranges.data)) == "input" and list(ranges.data)[-1] == "logits"


def _cache_for(small_onnx: Path) -> CalibrationCache:
    ranges = calibration.collect_ranges(small_onnx, calibration.CalibrationSet(_images(), "normal"), "minmax")
    return CalibrationCache.from_amax(calibration.amax_of(ranges), TrtVersion(10, 3, 0), "minmax")


def test_header_only_cache_is_a_one_line_error(small_onnx: Path) -> None:
    cache = parse_cache("TRT-100300-MinMaxCalibration\n", source="only-header.cache")
    with pytest.raises(CalibCacheError, match=r"only-header\.cache holds only its header \(TRT-100300-MinMax"
                                              r"Calibration\) and no tensor scales") as caught:
        check_cache_tensors(cache, small_onnx, "only-header.cache")
    assert "\n" not in str(caught.value)


def test_cache_lacking_graph_tensors_is_a_one_line_error(small_onnx: Path) -> None:
    full = _cache_for(small_onnx)
    check_cache_tensors(full, small_onnx, "full.cache")  # complete: no error
    partial = CalibrationCache(full.version, full.algorithm, dict(list(full.scales.items())[:3]))
    with pytest.raises(CalibCacheError, match=r"partial\.cache lacks 5 tensor\(s\) the graph needs "
                                              r"\('/2/Conv_output_0', .* and 2 more\); was it made") as caught:
        check_cache_tensors(partial, small_onnx, "partial.cache")
    assert "\n" not in str(caught.value)


def test_reusing_a_header_only_cache_stops_the_export(tiny_run: Path, tmp_path: Path) -> None:
    from rich.console import Console

    from kd2trt.config import ExportConfig
    from kd2trt.onnx.stage import ExportRequest, run_export

    shutil.copy(tiny_run / "student.pt", tmp_path / "student.pt")
    cache = tmp_path / "empty.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\n")
    config = ExportConfig(trt_versions=["10.3"], fp16=False, teacher=False)
    with pytest.raises(CalibCacheError, match=r"empty\.cache holds only its header"):
        run_export(ExportRequest(tmp_path / "student.pt", calib_cache=cache, force=True), config,
                   Console(file=open(os.devnull, "w")))  # noqa: SIM115
    assert not (tmp_path / "student.int8.onnx").exists()
    assert not (tmp_path / "student.calib-trt10.3.0.cache").exists()


_WRITE_CACHE = """
import sys
from pathlib import Path
import numpy as np
from kd2trt.onnx import calibration
from kd2trt.onnx.calib_cache import CalibrationCache, write_cache
from kd2trt.targets import TrtVersion
onnx_path, data, out = map(Path, sys.argv[1:])
calib = calibration.CalibrationSet(np.load(data), "normal")
for method in ("entropy", "minmax"):
    amax = calibration.amax_of(calibration.collect_ranges(onnx_path, calib, method))
    write_cache(CalibrationCache.from_amax(amax, TrtVersion(10, 3, 0), method), out.with_suffix(f".{method}"))
"""


def test_same_onnx_and_data_give_byte_identical_caches(small_onnx: Path, tmp_path: Path) -> None:
    """Separate processes with different hash seeds: ONNX Runtime's set order differs, the cache must not."""
    data = tmp_path / "calib.npy"
    np.save(data, _images())
    written = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"run{seed}.cache"
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": child_pythonpath()}
        subprocess.run([sys.executable, "-c", _WRITE_CACHE, str(small_onnx), str(data), str(out)], env=env,
                       check=True, capture_output=True, timeout=300)
        written.append({m: out.with_suffix(f".{m}").read_bytes() for m in ("entropy", "minmax")})
    assert written[0] == written[1] == written[2]
    names = [line.rpartition(b": ")[0].decode() for line in written[0]["minmax"].splitlines()[1:]]
    assert names == activation_tensors(small_onnx)  # graph (topological) order, input first
