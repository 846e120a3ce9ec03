"""Explicit INT8: a Q/DQ ONNX graph that TensorRT 8.6–11.x builds, made by onnxruntime's quantiser.

TensorRT's rules for explicit quantisation (DESIGN.md §3): symmetric (zero point 0), per-tensor
activations, per-channel weights on axis 0, int8 in [-128, 127], opset ≥ 13. `reduce_range` is for
ONNX Runtime CPU deployment only and is never used here. `DedicatedQDQPair` / `AddQDQPairToWeight`
give every consumer its own Q/DQ pair and keep weights as float initialiser → Q → DQ, which the
TensorRT 8.5-era parsers need (they reject an int8 initialiser feeding a DequantizeLinear).

The ranges come from `kd2trt.onnx.calibration` and are handed to `quantize_static` through its
calibration-cache file, so the quantiser does not recalibrate: the Q/DQ scales are the statistics
written into the TensorRT calibration cache. One deliberate difference: a Conv output consumed only by
a ReLU is quantised with the ReLU output's range (the negative half is discarded anyway) — which is
also the scale TensorRT's fused Conv+ReLU kernel uses when it reads the cache.
"""

from __future__ import annotations

from pathlib import Path

from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

from kd2trt.artifacts import atomic_path, temp_directory
from kd2trt.onnx import runtime
from kd2trt.onnx.export import check_onnx

TENSORRT_QDQ_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "DedicatedQDQPair": True,
    "AddQDQPairToWeight": True,
}


def quantize_qdq(onnx_path: Path, output_path: Path, ranges: TensorsData) -> Path:
    """Write the Q/DQ model of `onnx_path` quantised with `ranges`; checked by the ONNX checker."""
    with temp_directory("qdq") as tmp, atomic_path(output_path) as out, runtime.quiet():
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        quantize_static(
            str(onnx_path), str(out), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
            per_channel=True, reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=ranges.calibration_method, extra_options=dict(TENSORRT_QDQ_OPTIONS),
            calibration_cache_path=str(cache),
        )
        check_onnx(out, display=output_path)
    return output_path
