"""FP16 graph for TensorRT's strongly typed builds (11.x has no FP16 builder flag).

FP16 inside, FP32 inputs and outputs (Cast nodes at the edges), and numerically sensitive ops kept in
FP32. The converter is onnxruntime's `transformers.float16` (the maintained copy of
onnxconverter-common's), which ships with onnxruntime: no extra dependency, and no risk of pulling
onnxruntime-gpu over onnxruntime as `nvidia-modelopt[onnx]` does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel

from kd2trt.artifacts import atomic_path
from kd2trt.onnx.export import check_onnx

# Exponentials, logarithms, powers and reductions overflow or lose precision in FP16 (max 65504).
SENSITIVE_OPS = [
    "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "ReduceMean", "ReduceSum",
    "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "LayerNormalization", "InstanceNormalization",
    "GroupNormalization",
]


def convert_fp16(onnx_path: Path, output_path: Path, validate: Callable[[Path], None] | None = None) -> Path:
    """Write the FP16 version of `onnx_path` (FP32 I/O); checked by the ONNX checker.

    `validate(tmp)` (a parity check) runs before the file is renamed to `output_path`: when it raises,
    nothing is left there.
    """
    model = onnx.load(str(onnx_path))
    converted = convert_float_to_float16(model, keep_io_types=True,
                                         op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(SENSITIVE_OPS)))
    # the converter appends the input Casts at the end of the node list; ONNX requires topological order
    wrapper = OnnxModel(converted)
    wrapper.topological_sort()
    converted = wrapper.model
    with atomic_path(output_path) as tmp:
        onnx.save(converted, str(tmp))
        check_onnx(tmp, display=output_path)
        if validate is not None:
            validate(tmp)
    return output_path
