"""NVIDIA's ONNX-parser operator tables, one per TensorRT line kd2trt targets (keys of `kd2trt.targets.LINE_TARGETS`).

Each table transcribes ``docs/operators.md`` of NVIDIA's ONNX parser, onnx/onnx-tensorrt (the "ONNX operator
support" page TensorRT's documentation links to), at the commit named in the table's ``source``: an operator
is supported on a line when that revision marks it ``Y``. Only the ``ai.onnx`` domain is covered.

* 8.5 and 8.6: the tables headed "TensorRT 8.5/8.6 supports operators up to Opset 17". Of 8.5's rows,
  ``HardSwish``, ``Mod`` and ``OneHot`` are ``Y`` here as in the revision used, and carry a note, because the
  8.5 GA tag marks them ``N`` while its Changelog lists ``Mod`` as added in 8.5 GA.
* 10.3 (JetPack 6.1/6.2): NVIDIA's 10.8 table minus the operators the parser's Changelog dates to 10.4/10.5
  (the window functions, ``STFT``); maximum opset 20, from the TensorRT 10.0 table's header (a lower bound).
* 10 (10.4-10.16): the 10.15 table; operators added in 10.13-10.15 (``Attention``, ``RMSNormalization``,
  ``RotaryEmbedding``, ``TensorScatter``) do not parse on older 10.x releases.
* 11: the 11.0 table, opset 24 (NVIDIA's opset guide gives 25 from 11.5 on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["TRT_LINES", "TrtOperatorTable"]

_REPO = "onnx/onnx-tensorrt docs/operators.md"


@dataclass(frozen=True)
class TrtOperatorTable:
    """What one TensorRT line's ONNX parser accepts, transcribed from its ``docs/operators.md``.

    ``trt_version`` is the TensorRT version printed in the header of the table actually used (it differs
    from ``line`` when a line's own table was not found); ``notes`` maps an operator name -- or ``"*"`` for
    the whole table -- to a restriction that matters for small CNN classifiers, quoted or condensed from
    the table's Restrictions / Supported Types columns.
    """

    line: str
    trt_version: str
    max_opset: int
    supported: frozenset[str]
    notes: Mapping[str, str]
    source: str

    @property
    def parses_local_functions(self) -> bool:
        """Whether this parser expands ONNX model-local functions (Changelog, "TensorRT 9.0 EA Release")."""
        return int(self.trt_version.split(".", 1)[0]) >= 9


def _ops(text: str) -> frozenset[str]:
    """Split a whitespace-separated list of operator names (so each table reads like its source)."""
    return frozenset(text.split())


# --- TensorRT 8.5, docs/operators.md @ 6d0ab7be: every row marked "Y", in table order. --------------------
_SUPPORTED_8_5 = _ops(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor
    Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
    GridSample GRU HardSwish HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN
    LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike
    Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
    ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
    ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
    Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
    Transpose Trilu Unsqueeze Upsample Where Xor
    """
)

# --- TensorRT 8.6, docs/operators.md @ 66b25365: every "Y" of 8.5 is still "Y"; these rows turn "Y". ----
_ADDED_IN_8_6 = _ops("GroupNormalization IsInf LayerNormalization")
_SUPPORTED_8_6 = _SUPPORTED_8_5 | _ADDED_IN_8_6

# --- TensorRT 10.8, docs/operators.md @ 554c9f1b: every "Y" of 8.6 is still "Y"; these rows turn "Y". ---
_ADDED_BY_10_8 = _ops("BlackmanWindow CastLike DeformConv Gelu HammingWindow HannWindow Hardmax Mish STFT")
_SUPPORTED_10_8 = _SUPPORTED_8_6 | _ADDED_BY_10_8
# Removed for the 10.3 line: the Changelog dates them to 10.4 GA (the windows) and 10.5 GA (STFT).
_ADDED_AFTER_10_3 = _ops("BlackmanWindow HammingWindow HannWindow STFT")
_SUPPORTED_10_3 = _SUPPORTED_10_8 - _ADDED_AFTER_10_3

# --- TensorRT 10.15, docs/operators.md @ fa5aa9f6: every "Y" of 10.8 is still "Y"; these rows turn "Y". -
_ADDED_BY_10_15 = _ops("Attention RMSNormalization RotaryEmbedding TensorScatter")
_SUPPORTED_10_15 = _SUPPORTED_10_8 | _ADDED_BY_10_15

# --- TensorRT 11.0, docs/operators.md @ 2f3fa349: every "Y" of 10.15 is still "Y"; this row turns "Y". ---
_ADDED_IN_11_0 = _ops("Swish")
_SUPPORTED_11_0 = _SUPPORTED_10_15 | _ADDED_IN_11_0


# Restrictions. Quoted from the tables' Restrictions column (backticks kept) or condensed from the
# Supported Types column; only rows that a small CNN classifier (conv/pool/norm/activation/head, possibly
# INT8 Q/DQ, resize, reshape plumbing) is likely to contain.
_REDUCE_OPS = sorted(
    _ops(
        "ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum "
        "ReduceSumSquare"
    )
)
_RESIZE_8 = (
    "transformation modes half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric, align_corners; "
    "modes nearest, linear; nearest modes floor, ceil, round_prefer_floor, round_prefer_ceil"
)
_RESIZE_10 = _RESIZE_8 + (
    "; aspect ratio policy stretch only; when `scales` is a tensor input, `axes` must be an iota vector of "
    "length rank(input); antialiasing is not supported"
)
_DISCREPANCY_8_5 = "marked Y in 8.5 revision 6d0ab7be but N in the 8.5 GA release commit 0f305925"

_NOTES_8_5: dict[str, str] = {
    "*": (
        "data types DOUBLE, FLOAT32, FLOAT16, INT8, BOOL; INT32/INT64/DOUBLE have limited support: INT64 is "
        "cast down to INT32 and DOUBLE to FLOAT, clamping to +-INT_MAX / +-FLT_MAX"
    ),
    "AveragePool": "2D or 3D Pooling only",
    "MaxPool": "2D or 3D pooling only. `Indices` output tensor unsupported",
    "Cast": "types FP32, FP16, INT32, INT8, BOOL",
    "DequantizeLinear": (
        "INT8 only; `x_zero_point` must be zero (per-axis scales: since TensorRT 8.0, per the Changelog)"
    ),
    "QuantizeLinear": "input FP32 or FP16; `y_zero_point` must be 0",
    "MatMul": "types FP32, FP16 (no INT8 listed)",
    "Resize": "types FP32, FP16; " + _RESIZE_8,
    "Slice": "`axes` must be an initializer",
    "Squeeze": "`axes` must be an initializer",
    "Unsqueeze": "`axes` must be a constant tensor",
    "InstanceNormalization": "`scale` and `B` must be initializers; input rank must be >=3 & <=5",
    "TopK": "`K` input must be an initializer",
    "CumSum": "`axis` must be an initializer",
    "Einsum": "no ellipsis or diagonal operations; no broadcasting between inputs",
    "If": "Output tensors of the two conditional branches must have broadcastable shapes, and must have "
    "different names",
    "HardSwish": _DISCREPANCY_8_5 + "; if the parser rejects it, export with --opset 13 (HardSwish is an "
    "opset-14 function of HardSigmoid and Mul, which exporters then emit instead)",
    "Mod": _DISCREPANCY_8_5,
    "OneHot": _DISCREPANCY_8_5,
}

_NOTES_8_6: dict[str, str] = {
    "*": (
        "data types DOUBLE, FLOAT32, FLOAT16, INT8, BOOL; DOUBLE has limited support (cast down to FLOAT, "
        "clamping to +-FLT_MAX); this revision's type column lists INT64, which the Changelog dates to 9.0 EA"
    ),
    "AveragePool": "2D or 3D Pooling only",
    "MaxPool": "2D or 3D pooling only. `Indices` output tensor unsupported",
    "Cast": "types FP32, FP16, INT32, INT64, INT8, UINT8, BOOL",
    "DequantizeLinear": "INT8 only; `x_zero_point` must be zero",
    "QuantizeLinear": "input FP32 or FP16; `y_zero_point` must be 0",
    "MatMul": "types FP32, FP16 (no INT8 listed)",
    "Resize": "types FP32, FP16; " + _RESIZE_8,
    "Slice": "`axes` must be an initializer",
    "Squeeze": "`axes` must be an initializer",
    "Unsqueeze": "`axes` must be a constant tensor",
    "CumSum": "`axis` must be an initializer",
    "Einsum": "no ellipsis or diagonal operations; no broadcasting between inputs",
    "If": "Output tensors of the two conditional branches must have broadcastable shapes, and must have "
    "different names",
}


def _notes_10(quantized: str, dequantize_types: str, extra: Mapping[str, str]) -> dict[str, str]:
    """Notes shared by the 10.x/11.x tables, whose wording for these rows is the same."""
    notes = {
        "*": quantized + "; UINT8 is only supported as network input or output tensor types",
        "AveragePool": "2D or 3D Pooling only. `dilations` must be empty or all ones",
        "MaxPool": "2D or 3D pooling only; no `Indices` output; `dilations` must be empty or all ones",
        "LpPool": "`dilations` must be empty or all ones",
        "Cast": "types FP32, FP16, BF16, INT32, INT64, UINT8, BOOL (INT8 only through Q/DQ)",
        "DequantizeLinear": f"input {dequantize_types}; `x_zero_point` must be zero",
        "QuantizeLinear": "input FP32, FP16 or BF16; `y_zero_point` must be 0",
        "Resize": "types FP32, FP16, BF16; " + _RESIZE_10,
        "Squeeze": "`axes` must be resolvable to a constant.",
        "Unsqueeze": "`axes` must be resolvable to a constant.",
        "CumSum": "`axis` must be a build-time constant",
        "TopK": "`sorted` must be 1. `K` input must be less than 3840.",
        "LayerNormalization": "Only the first output `Y` is supported.",
        "GridSample": "Input must be 4D input.",
        "If": "outputs of the two branches must have the same rank and different names",
    }
    notes.update({op: "`axes` must be an initializer" for op in _REDUCE_OPS})
    notes.update(extra)
    return notes


_NOTES_10_3 = _notes_10(
    "INT8, INT4 and FP8 are quantized types, supported only through quantization from a higher-precision "
    "float (the 10.8 table adds FP4, which the Changelog dates to 10.8); the 10.3 table itself was not "
    "found -- operator set and restrictions are the 10.8 table's, minus the ops added in 10.4/10.5",
    "INT8, FP8 or INT4",
    {
        "Dropout": "`is_training` must be an initializer and evaluate to False.",
        "ScatterND": "`reduction` is not supported",
    },
)
_NOTES_10_15 = _notes_10(
    "INT8, INT4, FP8 and FP4 are quantized types: only through quantization from a higher-precision float",
    "INT8, FP8, FP4 or INT4",
    {
        "Dropout": "`is_training` must be an initializer and evaluate to False.",
        "ScatterND": "`reduction` other than `none` is not supported",
        "Attention": "added in 10.14 (Changelog): not parsed by older 10.x",
        "RMSNormalization": "added in 10.15 (Changelog): not parsed by older 10.x",
        "RotaryEmbedding": "added in 10.15 (Changelog): not parsed by older 10.x",
        "TensorScatter": "added in 10.15 (Changelog): not parsed by older 10.x",
    },
)
_NOTES_11_0 = _notes_10(
    "INT8, INT4, FP8 and FP4 are quantized types, supported only through quantization from a "
    "higher-precision float; the 11.0 table says opset 24, NVIDIA's ONNX Opset Guide says 25 for later 11.x",
    "INT8, FP8, FP4 or INT4",
    {
        "Dropout": "`is_training` must be an initializer and evaluate to False.",
        "ScatterND": "`reduction` other than `none` is not supported",
    },
)


def _table(
    line: str, trt_version: str, max_opset: int, supported: frozenset[str], notes: dict[str, str], source: str
) -> TrtOperatorTable:
    return TrtOperatorTable(line, trt_version, max_opset, supported, MappingProxyType(notes), source)


#: Target lines, keyed as :func:`resolve_line` returns them. See the module docstring for each source.
TRT_LINES: dict[str, TrtOperatorTable] = {
    "8.5": _table(
        "8.5",
        "8.5",
        17,
        _SUPPORTED_8_5,
        _NOTES_8_5,
        f"{_REPO} @ 6d0ab7be324d02c7feb3a306b6fdbeae84f71ddc",
    ),
    "8.6": _table(
        "8.6",
        "8.6",
        17,
        _SUPPORTED_8_6,
        _NOTES_8_6,
        f"{_REPO} @ 66b2536545b89bf1388c8255a366cad14eff952a",
    ),
    "10.3": _table(
        "10.3",
        "10.8",
        20,
        _SUPPORTED_10_3,
        _NOTES_10_3,
        f"{_REPO} @ 554c9f1b7fc048e39e3afe0c2af757902eb7b23e (TensorRT 10.8 table; 10.3 table not found) "
        "minus BlackmanWindow/HammingWindow/HannWindow/STFT (docs/Changelog.md: added in 10.4/10.5); "
        "max opset from the TensorRT 10.0 header",
    ),
    "10": _table(
        "10",
        "10.15",
        24,
        _SUPPORTED_10_15,
        _NOTES_10_15,
        f"{_REPO} @ fa5aa9f61e7781d2ca8f5351d42c1f19525a6124",
    ),
    "11": _table(
        "11",
        "11.0",
        24,
        _SUPPORTED_11_0,
        _NOTES_11_0,
        f"{_REPO} @ 2f3fa349247d9ff52d7662cb995c82278df31a86",
    ),
}
