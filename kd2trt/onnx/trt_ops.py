"""TensorRT preflight: check an ONNX graph's operators and opset against the ONNX parser of each target.

A graph that TensorRT's ONNX parser cannot read is otherwise only discovered when the builder runs -- on a
Jetson that is after copying the model over, and the parser names one node at a time. Checking against
NVIDIA's operator tables (`kd2trt.onnx.trt_op_tables`) right after export stops on the host, with one message
that lists every offending operator, how many nodes use it, and the fix. Nodes outside the ``ai.onnx``
domain (``com.microsoft``, custom exporters' domains) need a TensorRT plugin and are reported separately.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

import onnx
import onnx.defs

from kd2trt.errors import Kd2trtError
from kd2trt.onnx.trt_op_tables import TRT_LINES, TrtOperatorTable
from kd2trt.targets import LINE_TARGETS, line_of

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

def resolve_line(version: str) -> TrtOperatorTable:
    """The operator table of a TensorRT version or line key (see :func:`kd2trt.targets.line_of`)."""
    return TRT_LINES[line_of(version)]


def max_opset_for(lines: Iterable[str]) -> int:
    """The highest ONNX opset that every given line's parser accepts (the exporter's safe default).

    Why the minimum: one exported file is meant to build on every listed target, and a parser rejects a
    model whose ``ai.onnx`` opset import is newer than its own.
    """
    tables = [resolve_line(line) for line in lines]
    if not tables:
        raise Kd2trtError(f"no TensorRT lines given to choose an ONNX opset for; known: {', '.join(LINE_TARGETS)}")
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
        where = LINE_TARGETS[self.line]
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
