"""TensorRT preflight: check an ONNX graph's operators and opset against the TensorRT ONNX parser of a target.

Why this exists: a graph that TensorRT's ONNX parser cannot read is only discovered when ``trtexec`` (or the
builder) runs -- on a Jetson that is after copying the model over, often minutes into a session, and the
parser's error names one node at a time. The operator tables below let kd2trt stop on the host, right after
export, with one message that lists *every* offending operator, how many nodes use it, and the fix.

The tables are transcriptions of NVIDIA's own support matrix, ``docs/operators.md`` in the ONNX parser's
repository ``onnx/onnx-tensorrt`` (the same file TensorRT's documentation links to as "ONNX operator
support"). An operator counts as supported on a line when that table marks it ``Y``; ``N`` rows and
operators missing from the table are unsupported. Only the ``ai.onnx`` domain is in those tables; nodes in
any other domain (``com.microsoft``, custom exporters' domains) need a TensorRT plugin, so they are reported
separately. Each revision below was read from the stored copy of that file at the commit named; the header
line of each revision states its TensorRT version and opset range, quoted here.

Sources, one per target line (``TRT_LINES`` key):

``"8.5"`` (JetPack 5.1, TensorRT 8.5.2)
    onnx/onnx-tensorrt ``docs/operators.md`` @ 6d0ab7be324d02c7feb3a306b6fdbeae84f71ddc,
    "TensorRT 8.5 supports operators up to Opset 17". This is the latest 8.5-labelled revision found. The
    8.5 GA release commit itself (0f305925c58b7358ea5caa308b41faed803382a5, whose ``docs/Changelog.md``
    tops out at "TensorRT 8.5 GA Release - 2022-11-2") marks ``HardSwish``, ``Mod`` and ``OneHot`` ``N``
    although that same Changelog says ``Mod`` was added in 8.5 GA; 6d0ab7be marks all three ``Y``. The table
    follows 6d0ab7be and the three operators carry a note (see ``notes``).

``"8.6"`` (JetPack 6.0, TensorRT 8.6.2)
    onnx/onnx-tensorrt ``docs/operators.md`` @ 66b2536545b89bf1388c8255a366cad14eff952a,
    "TensorRT 8.6 supports operators up to Opset 17". Caveat: its type column already lists INT64, which the
    Changelog dates to 9.0 EA, so this may be a main-branch revision made after 8.6 GA and before the header
    was bumped. Its ``Y`` set is the 8.5 set plus exactly the operators the Changelog's "TensorRT 8.6 EA"
    entry says were added (``GroupNormalization``, ``LayerNormalization``, ``IsInf``), so it is used as is.

``"10.3"`` (JetPack 6.1/6.2, TensorRT 10.3) -- NOT FOUND, derived from the nearest table
    No 10.3-labelled revision of ``docs/operators.md`` could be found in the stored copies (release branch
    ``release/10.3-GA`` was not reachable). The nearest table found is TensorRT 10.8: onnx/onnx-tensorrt
    ``docs/operators.md`` @ 554c9f1b7fc048e39e3afe0c2af757902eb7b23e, "TensorRT 10.8 supports operators in
    the inclusive range of opset 9 to opset 22". The 10.3 line uses that ``Y`` set minus the operators the
    onnx-tensorrt ``docs/Changelog.md`` dates after 10.3 ("TensorRT 10.4 GA": ``BlackmanWindow``,
    ``HammingWindow``, ``HannWindow``; "TensorRT 10.5 GA": ``STFT``). ``max_opset`` is 20, the value in the
    TensorRT 10.0 header ("TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20",
    seen in the code-search copy of the same file; commit not shown) -- a lower bound, since 10.3 postdates
    10.0 and the Changelog only moves the ONNX submodule to 1.17 (opset 22) in 10.6. Unverified: whether
    ``Gelu`` and ``Mish`` (in the 10.8 table, absent from 9.2, no Changelog entry) already parsed on 10.3.

``"10"`` (JetPack 7 / x86 TensorRT 10.13-10.16; the newest 10.x table found)
    onnx/onnx-tensorrt ``docs/operators.md`` @ fa5aa9f61e7781d2ca8f5351d42c1f19525a6124,
    "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24". Versions 10.4-10.14
    also resolve here; ops added in 10.13-10.15 (``Attention`` in 10.14; ``RMSNormalization``,
    ``RotaryEmbedding``, ``TensorScatter`` in 10.15, per the Changelog) will not parse on older 10.x.

``"11"`` (x86, TensorRT 11.x)
    onnx/onnx-tensorrt ``docs/operators.md`` @ 2f3fa349247d9ff52d7662cb995c82278df31a86,
    "TensorRT 11.0 supports operators in the inclusive range of opset 9 to opset 24". NVIDIA's "ONNX Opset
    Guide" (https://docs.nvidia.com/deeplearning/tensorrt/latest/reference/onnx-opset-guide.html) gives
    maximum opset 25 for TensorRT 11.x and the TensorRT 11.5 release notes
    (https://github.com/NVIDIA/TensorRT/releases/tag/v11.5) say opset 25 support was added then; the table,
    and so this line, says 24.

Also read, for cross-checks: the Changelog (``docs/Changelog.md``, revision topped by "TensorRT 10.15 GA
Release - 2026-2-2") and the 9.1/9.2 tables (commits 877b5dccf5779d7d7dfa0c45b9c11cbee3b285ce and the 9.2
revision in the same file, whose commit the index did not show), which bracket 8.6 and 10.x.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

import onnx
import onnx.defs

from kd2trt.errors import Kd2trtError

__all__ = [
    "AI_ONNX_DOMAINS",
    "TRT_LINES",
    "PreflightReport",
    "TrtOperatorTable",
    "check_trt_compat",
    "foreign_domain_ops",
    "graph_ops",
    "local_function_calls",
    "max_opset_for",
    "preflight",
    "resolve_line",
]

#: The domain strings that mean the default ONNX operator set; the support tables cover these only.
AI_ONNX_DOMAINS = frozenset({"", "ai.onnx"})

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

#: Where each line is deployed, for messages only.
_LINE_TARGETS = {
    "8.5": "JetPack 5.1",
    "8.6": "JetPack 6.0",
    "10.3": "JetPack 6.1/6.2",
    "10": "JetPack 7 / x86 TensorRT 10.x",
    "11": "x86 TensorRT 11.x",
}

_VERSION_RE = re.compile(r"^(?:tensorrt|trt)?[\s_-]*v?(\d+)(?:\.(\d+|x))?(?:\.\d+)*(?:\s*latest)?$", re.I)


def _known_lines() -> str:
    return ", ".join(f'"{key}" ({_LINE_TARGETS[key]})' for key in TRT_LINES)


def resolve_line(version: str) -> TrtOperatorTable:
    """Map a TensorRT version ("8.5.2", "10.3.0", "10.14.1", "11.1", or a line key) to its table.

    Why not an exact lookup: users pass what ``trtexec --version`` or ``dpkg`` prints, with patch and build
    numbers. 10.0-10.3 map to the 10.3 line (the oldest 10.x table here, so the least permissive) and 10.4+
    to the newest 10.x table, which may accept a few operators an older 10.x cannot parse (see its notes).
    Anything else -- 7.x, 8.4, 9.x, 12 -- has no table, and guessing would defeat the preflight.
    """
    text = str(version).strip()
    match = _VERSION_RE.match(text)
    if match:
        major, minor_text = int(match.group(1)), match.group(2)
        minor = None if minor_text in (None, "x", "X") else int(minor_text)
        key: str | None = None
        if major == 8 and minor in (5, 6):
            key = f"8.{minor}"
        elif major == 10:
            key = "10.3" if minor is not None and minor <= 3 else "10"
        elif major == 11:
            key = "11"
        if key is not None:
            return TRT_LINES[key]
    raise Kd2trtError(
        f"unknown TensorRT version {text!r}: kd2trt has ONNX operator tables for the lines {_known_lines()}; "
        "pass one of those (or a version such as 8.5.2, 10.3.0, 10.14.1, 11.1)"
    )


def max_opset_for(lines: Iterable[str]) -> int:
    """The highest ONNX opset that every given line's parser accepts (the exporter's safe default).

    Why the minimum: one exported file is meant to build on every listed target, and a parser rejects a
    model whose ``ai.onnx`` opset import is newer than its own.
    """
    tables = [resolve_line(line) for line in lines]
    if not tables:
        raise Kd2trtError(f"no TensorRT lines given to choose an ONNX opset for; known: {_known_lines()}")
    return min(table.max_opset for table in tables)


def _model_opset(model: onnx.ModelProto) -> int:
    """The model's ``ai.onnx`` opset import (0 when it declares none)."""
    versions = [entry.version for entry in model.opset_import if entry.domain in AI_ONNX_DOMAINS]
    return max(versions, default=0)


def _walk(model: onnx.ModelProto) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Count nodes by kind: ai.onnx op types, other-domain ops, and calls to model-local functions.

    Why walk subgraphs and function bodies: TensorRT parses the bodies of ``If``/``Loop``/``Scan`` and (9.0+)
    expands local functions, so an unsupported operator hidden there fails the build just the same. A
    function body is counted once per call, as the parser sees it after expansion.
    """
    functions = {(fn.domain, fn.name): fn for fn in model.functions}
    ai_onnx: Counter[str] = Counter()
    foreign: Counter[str] = Counter()
    calls: Counter[str] = Counter()

    def visit(nodes: Iterable[onnx.NodeProto], stack: tuple[tuple[str, str], ...]) -> None:
        for node in nodes:
            key = (node.domain, node.op_type)
            if key in functions:
                calls[f"{node.domain}::{node.op_type}"] += 1
                if key not in stack:  # a recursive function is invalid ONNX; do not loop forever on one
                    visit(functions[key].node, (*stack, key))
            elif node.domain in AI_ONNX_DOMAINS:
                ai_onnx[node.op_type] += 1
            else:
                foreign[f"{node.domain}::{node.op_type}"] += 1
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g.node, stack)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    for graph in attribute.graphs:
                        visit(graph.node, stack)

    visit(model.graph.node, ())
    return ai_onnx, foreign, calls


def graph_ops(model: onnx.ModelProto) -> dict[str, int]:
    """``ai.onnx`` operator type -> node count, including subgraphs and expanded local-function bodies."""
    return dict(sorted(_walk(model)[0].items()))


def foreign_domain_ops(model: onnx.ModelProto) -> dict[str, int]:
    """``"domain::op_type"`` -> node count for nodes outside ``ai.onnx`` that are not local functions.

    TensorRT has no importer for these; it can only run them through a plugin registered under that name.
    """
    return dict(sorted(_walk(model)[1].items()))


def local_function_calls(model: onnx.ModelProto) -> dict[str, int]:
    """``"domain::name"`` -> call count for nodes that call a function defined in the model itself."""
    return dict(sorted(_walk(model)[2].items()))


@lru_cache(maxsize=1)
def _schema_facts() -> Mapping[str, tuple[int, bool]]:
    """Operator -> (ai.onnx opset that introduced it, whether ONNX defines it as a function of other ops).

    Read from the installed onnx package. The second fact decides the advice: an operator the ONNX spec
    itself defines as a composition of older operators (LayerNormalization, HardSwish, Gelu, ...) is what an
    exporter decomposes when asked for an opset older than the operator; anything else has to be replaced.
    """
    first: dict[str, int] = {}
    composite: dict[str, bool] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain in AI_ONNX_DOMAINS:
            first[schema.name] = min(first.get(schema.name, schema.since_version), schema.since_version)
            is_function = schema.has_function or schema.has_context_dependent_function
            composite[schema.name] = composite.get(schema.name, False) or is_function
    return MappingProxyType({name: (first[name], composite[name]) for name in first})


def _nodes(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


def _unsupported_fix(op: str, table: TrtOperatorTable) -> str:
    """The fix for one unsupported operator: why it is unsupported and what to do instead."""
    facts = _schema_facts().get(op)
    if facts is None:
        return "not an ai.onnx operator -- check its domain, or replace it"
    first, composite = facts
    if composite and first > 1:
        return (
            f"ONNX added it in opset {first} as a function of older operators, so exporting with --opset "
            f"{min(first - 1, table.max_opset)} makes the exporter decompose it; otherwise replace {op}"
        )
    return f"replace {op} with supported operators, or provide a TensorRT plugin for it"


@dataclass
class PreflightReport:
    """The outcome of checking one model against one TensorRT line; ``message`` says what to do."""

    line: str
    opset: int
    unsupported: dict[str, int]
    foreign_domain_ops: dict[str, int]
    opset_too_new: bool
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the parser of this line should accept every node and the opset."""
        return not self.unsupported and not self.foreign_domain_ops and not self.opset_too_new

    def message(self, source_path: object) -> str:
        """One paragraph for a user: which ops, how many nodes, the target line and the fix."""
        table = TRT_LINES[self.line]
        where = _LINE_TARGETS[self.line]
        target = f"TensorRT {self.line} ({where}; operator table of TensorRT {table.trt_version})"
        if self.ok:
            return f"{source_path}: ai.onnx opset {self.opset} and every operator parse on {target}."
        problems: list[str] = []
        if self.opset_too_new:
            problems.append(
                f"the model imports ai.onnx opset {self.opset} but this parser accepts operators only up to "
                f"opset {table.max_opset} -- re-export with --opset {table.max_opset}"
            )
        if self.unsupported:
            kinds = len(self.unsupported)
            listed = "; ".join(
                f"{op} ({_nodes(n)}: {_unsupported_fix(op, table)})" for op, n in self.unsupported.items()
            )
            problems.append(
                f"{kinds} operator{'s' if kinds != 1 else ''} in {_nodes(sum(self.unsupported.values()))} "
                f"that this parser does not support: {listed}"
            )
        if self.foreign_domain_ops:
            listed = ", ".join(f"{op} ({_nodes(count)})" for op, count in self.foreign_domain_ops.items())
            problems.append(
                "operators outside the ai.onnx domain, which TensorRT can run only through a plugin "
                f"registered under that name: {listed} -- export without runtime-specific fusions or custom "
                "ops (for local functions: inline them with onnx.inliner.inline_local_functions), or provide "
                "the plugin"
            )
        text = f"{source_path}: will not build on {target}: " + "; and ".join(problems) + "."
        if self.notes:
            text += " Also check: " + "; ".join(self.notes) + "."
        return text


def preflight(model: onnx.ModelProto, line: str) -> PreflightReport:
    """Check ``model`` against the parser of ``line`` (a line key, or a version :func:`resolve_line` maps)."""
    table = resolve_line(line)
    ai_onnx, foreign, calls = _walk(model)
    opset = _model_opset(model)
    unsupported = {op: count for op, count in sorted(ai_onnx.items()) if op not in table.supported}
    foreign_ops = dict(foreign)
    notes: list[str] = []
    if calls and not table.parses_local_functions:
        # TensorRT < 9.0 looks local-function calls up as plugins, like any other custom-domain node.
        foreign_ops.update(calls)
        notes.append(
            f"the model calls ONNX local functions ({', '.join(sorted(calls))}), which TensorRT parses only "
            "from 9.0 on (Changelog, 9.0 EA)"
        )
    notes.extend(f"{op}: {table.notes[op]}" for op in sorted(ai_onnx) if op in table.notes)
    if opset == 0 and ai_onnx:
        notes.append("the model declares no ai.onnx opset import, which the parser needs")
    return PreflightReport(
        line=table.line,
        opset=opset,
        unsupported=unsupported,
        foreign_domain_ops=dict(sorted(foreign_ops.items())),
        opset_too_new=opset > table.max_opset,
        notes=notes,
    )


def check_trt_compat(model: onnx.ModelProto, line: str, source: object) -> PreflightReport:
    """Run :func:`preflight`; raise :class:`Kd2trtError` with its message when the model would not parse."""
    report = preflight(model, line)
    if not report.ok:
        raise Kd2trtError(report.message(source))
    return report
