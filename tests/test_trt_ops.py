"""Tests for kd2trt.onnx.trt_ops: the TensorRT ONNX-parser preflight.

The graphs are built with onnx.helper and validated with onnx.checker where they are meant to be valid, so a
test fails if the module miscounts nodes, misses a subgraph or a domain, compares opsets the wrong way, or if
a transcribed operator name is misspelt (checked against the installed onnx package's schemas).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnx.defs
import pytest
from onnx import TensorProto, helper, numpy_helper

from kd2trt.errors import Kd2trtError
from kd2trt.onnx.trt_ops import (
    TRT_LINES,
    PreflightReport,
    TrtOperatorTable,
    check_trt_compat,
    foreign_domain_ops,
    graph_ops,
    local_function_calls,
    max_opset_for,
    preflight,
    resolve_line,
)

ALL_LINES = ["8.5", "8.6", "10.3", "10", "11"]


def _model(nodes, inputs, outputs, initializers=(), opset=17, extra_opsets=(), functions=()):
    graph = helper.make_graph(list(nodes), "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]]
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions))


def _cnn(opset: int) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm: the skeleton of a small classifier."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        weights,
        opset=opset,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _single(op: str, opset: int = 17, domain: str = "", **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], domain=domain, **attrs)
    extra = [(domain, 1)] if domain else []
    return _model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        opset=opset,
        extra_opsets=extra,
    )


def _layernorm(opset: int = 17) -> onnx.ModelProto:
    nodes = [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=-1)]
    inits = [
        numpy_helper.from_array(np.ones(4, np.float32), "scale"),
        numpy_helper.from_array(np.zeros(4, np.float32), "bias"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        inits,
        opset=opset,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# --- the tables -------------------------------------------------------------------------------------------


def test_lines_and_fields():
    assert list(TRT_LINES) == ALL_LINES
    for key, table in TRT_LINES.items():
        assert isinstance(table, TrtOperatorTable)
        assert table.line == key
        assert table.source.startswith("onnx/onnx-tensorrt docs/operators.md @ ")
        assert len(table.supported) > 100
        assert 13 <= table.max_opset <= 25


def test_table_values_transcribed():
    """Header values, and "Y" rows counted by hand in each operators.md revision (see the module docstring).

    8.5 has 180 rows, 38 of them "N"; 10.8 has 196 rows, 42 "N" (the 10.3 line drops 4 of its 154 "Y").
    """
    got = {key: (t.trt_version, t.max_opset, len(t.supported)) for key, t in TRT_LINES.items()}
    assert got == {
        "8.5": ("8.5", 17, 142),
        "8.6": ("8.6", 17, 145),
        "10.3": ("10.8", 20, 150),
        "10": ("10.15", 24, 158),
        "11": ("11.0", 24, 159),
    }


def test_every_supported_name_is_an_onnx_operator():
    """Catches a misspelt transcription: every name must be a real ai.onnx op (3 experimental ones aside)."""
    known = {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == ""}
    # Experimental ops removed from onnx long ago but still listed in the tables.
    experimental = {"ImageScaler", "ParametricSoftplus", "ScaledTanh"}
    for table in TRT_LINES.values():
        assert table.supported - known == experimental & table.supported


def test_later_lines_only_add_operators():
    for older, newer in itertools.pairwise(ALL_LINES):
        assert TRT_LINES[older].supported <= TRT_LINES[newer].supported, (older, newer)


def test_differences_between_lines():
    def added(a: str, b: str) -> set[str]:
        return set(TRT_LINES[b].supported - TRT_LINES[a].supported)

    assert added("8.5", "8.6") == {"GroupNormalization", "IsInf", "LayerNormalization"}
    assert added("8.6", "10.3") == {"CastLike", "DeformConv", "Gelu", "Hardmax", "Mish"}
    assert added("10.3", "10") == {
        "Attention", "BlackmanWindow", "HammingWindow", "HannWindow", "RMSNormalization", "RotaryEmbedding",
        "STFT", "TensorScatter",
    }  # fmt: skip
    assert added("10", "11") == {"Swish"}


def test_classifier_ops_supported_everywhere():
    cnn_ops = {
        "Conv", "Relu", "Clip", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool",
        "Flatten", "Gemm", "MatMul", "Add", "Mul", "Sigmoid", "Softmax", "Reshape", "Concat",
        "QuantizeLinear", "DequantizeLinear", "Resize", "HardSigmoid", "ReduceMean",
    }  # fmt: skip
    for table in TRT_LINES.values():
        assert cnn_ops <= table.supported, table.line


def test_quantization_notes_present():
    for table in TRT_LINES.values():
        assert "x_zero_point" in table.notes["DequantizeLinear"]
        assert "y_zero_point" in table.notes["QuantizeLinear"]
        assert "Cast" in table.notes
    assert "INT8 only" in TRT_LINES["8.5"].notes["DequantizeLinear"]
    assert "FP4" not in TRT_LINES["10.3"].notes["DequantizeLinear"]
    assert "FP4" in TRT_LINES["10"].notes["DequantizeLinear"]
    with pytest.raises(TypeError):
        TRT_LINES["8.5"].notes["Conv"] = "x"  # type: ignore[index]


# --- resolve_line / max_opset_for -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "line"),
    [
        ("8.5", "8.5"),
        ("8.5.2", "8.5"),
        ("8.5.2.2", "8.5"),
        ("8.6.2", "8.6"),
        ("8.6", "8.6"),
        ("10.3.0", "10.3"),
        ("10.3", "10.3"),
        ("10.0.1", "10.3"),
        ("10.14.1", "10"),
        ("10.16", "10"),
        ("10", "10"),
        ("10.x", "10"),
        ("TensorRT 10.13.3", "10"),
        ("11.1", "11"),
        ("11", "11"),
        (" trt11.0.0 ", "11"),
    ],
)
def test_resolve_line(version, line):
    assert resolve_line(version) is TRT_LINES[line]


@pytest.mark.parametrize("version", ["7.1.3", "8.4.1", "8.2", "9.2", "12.0", "", "abc", "8", "10.3.0.x"])
def test_resolve_line_unknown(version):
    with pytest.raises(Kd2trtError) as info:
        resolve_line(version)
    text = str(info.value)
    assert repr(version.strip()) in text
    for key in ALL_LINES:
        assert f'"{key}"' in text
    assert "\n" not in text


def test_max_opset_for():
    assert max_opset_for(ALL_LINES) == TRT_LINES["8.5"].max_opset == 17
    assert max_opset_for(["10", "11"]) == 24
    assert max_opset_for(["10.3.0", "11.1"]) == 20
    assert max_opset_for(["11"]) == 24
    with pytest.raises(Kd2trtError):
        max_opset_for([])
    with pytest.raises(Kd2trtError):
        max_opset_for(["8.5", "9.0"])


# --- graph walking ------------------------------------------------------------------------------------------


def test_graph_ops_counts():
    assert graph_ops(_cnn(13)) == {"Conv": 1, "Flatten": 1, "Gemm": 1, "GlobalAveragePool": 1, "Relu": 1}
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"], domain="ai.onnx")]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    assert graph_ops(model) == {"Relu": 2}
    assert foreign_domain_ops(model) == {}


def test_subgraph_ops_are_counted():
    then_graph = helper.make_graph(
        [helper.make_node("LayerNormalization", ["x"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )  # fmt: skip
    else_graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
    )  # fmt: skip
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)
    model = _model(
        [node],
        [
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    assert graph_ops(model) == {"If": 1, "LayerNormalization": 1, "Relu": 1}
    assert preflight(model, "8.5").unsupported == {"LayerNormalization": 1}
    assert preflight(model, "8.6").ok


def test_local_functions_expand_on_9_plus_and_are_plugins_before():
    body = [helper.make_node("Relu", ["a"], ["b"]), helper.make_node("Sigmoid", ["b"], ["c"])]
    function = helper.make_function("my.funcs", "ReluSig", ["a"], ["c"], body, [helper.make_opsetid("", 17)])
    nodes = [
        helper.make_node("ReluSig", ["x"], ["h"], domain="my.funcs"),
        helper.make_node("ReluSig", ["h"], ["y"], domain="my.funcs"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        extra_opsets=[("my.funcs", 1)],
        functions=[function],
    )
    onnx.checker.check_model(model, full_check=True)
    assert graph_ops(model) == {"Relu": 2, "Sigmoid": 2}
    assert foreign_domain_ops(model) == {}
    assert local_function_calls(model) == {"my.funcs::ReluSig": 2}
    old = preflight(model, "8.6.2")
    assert not old.ok
    assert old.foreign_domain_ops == {"my.funcs::ReluSig": 2}
    assert any("local functions" in note for note in old.notes)
    assert "inline_local_functions" in old.message("m.onnx")
    assert preflight(model, "10.3").ok
    assert preflight(model, "11").ok


# --- preflight -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("line", ALL_LINES)
def test_small_cnn_ok_everywhere(opset, line):
    report = preflight(_cnn(opset), line)
    assert isinstance(report, PreflightReport)
    assert report.ok, report.message("cnn.onnx")
    assert report.line == line
    assert report.opset == opset
    assert report.unsupported == {}
    assert report.foreign_domain_ops == {}
    assert not report.opset_too_new
    assert check_trt_compat(_cnn(opset), line, "cnn.onnx") == report
    assert report.message("cnn.onnx").startswith("cnn.onnx: ")


def test_op_added_after_8_5():
    model = _layernorm(17)
    report = preflight(model, "8.5.2")
    assert not report.ok
    assert report.unsupported == {"LayerNormalization": 1}
    assert not report.opset_too_new
    message = report.message("student.onnx")
    assert message.startswith("student.onnx: ")
    assert "LayerNormalization (1 node" in message
    assert "TensorRT 8.5" in message and "JetPack 5.1" in message
    assert "--opset 16" in message  # LayerNormalization: an opset-17 function of older operators
    for line in ["8.6", "10.3", "10", "11"]:
        assert preflight(model, line).ok, line
    with pytest.raises(Kd2trtError, match="LayerNormalization"):
        check_trt_compat(model, "8.5", "student.onnx")


def test_swish_only_on_11():
    model = _single("Swish", opset=24)
    assert preflight(model, "10").unsupported == {"Swish": 1}
    assert not preflight(model, "10").opset_too_new
    assert preflight(model, "11").ok


def test_invented_op_unsupported_everywhere():
    nodes = [helper.make_node("NotAnOp", ["x"], ["a"]), helper.make_node("NotAnOp", ["a"], ["y"])]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        opset=13,
    )
    for line in ALL_LINES:
        report = preflight(model, line)
        assert report.unsupported == {"NotAnOp": 2}
        assert not report.ok
        message = report.message("bad.onnx")
        assert "NotAnOp (2 nodes" in message
        assert "not an ai.onnx operator" in message


def test_microsoft_domain_op_is_foreign():
    model = _single("FusedGemm", domain="com.microsoft")
    assert graph_ops(model) == {}
    assert foreign_domain_ops(model) == {"com.microsoft::FusedGemm": 1}
    for line in ALL_LINES:
        report = preflight(model, line)
        assert report.unsupported == {}
        assert report.foreign_domain_ops == {"com.microsoft::FusedGemm": 1}
        assert not report.ok
        message = report.message("ort.onnx")
        assert "com.microsoft::FusedGemm (1 node)" in message
        assert "plugin" in message
    with pytest.raises(Kd2trtError, match="FusedGemm"):
        check_trt_compat(model, "11", "ort.onnx")


def test_opset_too_new():
    model = _cnn(18)
    report = preflight(model, "8.5")
    assert report.opset == 18
    assert report.opset_too_new
    assert report.unsupported == {}
    assert not report.ok
    message = report.message("cnn18.onnx")
    assert "opset 18" in message
    assert "--opset 17" in message
    with pytest.raises(Kd2trtError, match="--opset 17"):
        check_trt_compat(model, "8.6.2", "cnn18.onnx")
    assert preflight(model, "10.3").ok
    assert preflight(model, "10").ok
    assert preflight(_cnn(21), "10.3").opset_too_new
    assert not preflight(_cnn(21), "10").opset_too_new
    assert preflight(_cnn(25), "11").opset_too_new


def test_notes_follow_the_graph():
    report = preflight(_cnn(17), "8.5")
    assert report.notes == []  # no restricted op in the plain CNN
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [scale, zero],
        opset=13,
    )
    onnx.checker.check_model(model, full_check=True)
    report = preflight(model, "8.5")
    assert report.ok
    assert [note.split(":")[0] for note in report.notes] == ["DequantizeLinear", "QuantizeLinear"]
    assert "INT8 only" in report.notes[0]


def test_several_problems_in_one_message():
    nodes = [
        helper.make_node("LayerNormalization", ["x"], ["a"]),
        helper.make_node("NotAnOp", ["a"], ["b"]),
        helper.make_node("FusedGemm", ["b"], ["y"], domain="com.microsoft"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        opset=18,
        extra_opsets=[("com.microsoft", 1)],
    )
    report = preflight(model, "8.5")
    message = report.message("all.onnx")
    assert report.unsupported == {"LayerNormalization": 1, "NotAnOp": 1}
    assert "2 operators in 2 nodes" in message
    assert "replace NotAnOp" not in message and "not an ai.onnx operator" in message
    assert "opset 18" in message and "FusedGemm" in message
    assert "\n" not in message


def test_fix_advice_depends_on_the_operator():
    nodes = [helper.make_node("Unique", ["x"], ["y"])]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        opset=13,
    )
    message = preflight(model, "11").message("u.onnx")
    assert "Unique (1 node: replace Unique" in message  # not a composite op: no opset advice
    assert "--opset" not in message
    message = preflight(_single("Gelu", opset=20), "8.6").message("g.onnx")
    assert "Gelu (1 node: ONNX added it in opset 20" in message
    assert "--opset 17" in message  # capped at the parser's own maximum
