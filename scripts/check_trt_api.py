#!/usr/bin/env python3
"""Check the TensorRT names kd2trt's TensorRT layer uses against real TensorRT Python bindings, without TensorRT.

Why this exists: ``kd2trt/trt/`` (capabilities, plan, builder, calibrator, runner) targets TensorRT 8.5 to 11.x,
whose Python APIs differ (``BuilderFlag.FP16``/``INT8``, INT8 calibrators and ``EXPLICIT_BATCH`` are gone in
11.x; ``STRONGLY_TYPED`` and ``ParserError.node_name()`` are absent from 8.6, ...). It was written from NVIDIA's
documentation and cannot be executed on a machine without a GPU and the TensorRT libraries. PyPI does carry
the real compiled bindings (``tensorrt-cu12-bindings`` 10.x/11.x, ``tensorrt-bindings`` 8.6: a pybind11 module
``tensorrt.so`` plus a small ``__init__.py``, no ``libnvinfer``), and pybind11 registers every class, method,
property and enum member by a C-string literal. So a name kd2trt uses can be looked up in those strings.

The check is ONE-SIDED:

* a name that is not in the strings is certainly absent from that version's API (a registered name is a
  literal in the binary; because linkers merge a string into the tail of a longer one -- in 8.6 ``INT8`` is
  only stored as the end of ``UINT8`` -- a name counts as found if any printable run *ends* with it);
* a name that is found is only probably present: the same word may belong to another class, or be the tail
  of an unrelated string (in 11.x ``FP16`` still ends a line of the ``TensorFormat`` documentation, but
  ``BuilderFlag.FP16`` no longer exists). Matches are graded ``exact`` (a whole string) or ``tail`` (only the
  end of a longer one, weaker still).

``--introspect`` removes the doubt where it can: it imports each wheel's bindings in a child Python of the
matching version, with empty stub libraries (built with the C compiler) standing in for ``libnvinfer`` and
friends, and asks ``hasattr`` on the real classes. That is two-sided and also tells a property from a method.
It never creates a TensorRT object; the child may crash, which is then reported, not fatal.

For each version, the table lists the names kd2trt uses that are absent, and flags ``UNGUARDED`` those the code
accesses without a guard (``hasattr``, ``getattr`` with a default, ``try``) on a path that the version reaches
(e.g. ``BuilderFlag.FP16`` is reached only where ``capabilities.probe`` finds weak typing, so it is not
flagged on 11.x). Exit status: 1 if any name is UNGUARDED (or, with ``--introspect``, used with the wrong kind
or shadowed by a kd2trt subclass attribute), 0 otherwise.

Example (bindings wheels downloaded with ``pip download --no-deps tensorrt-cu12-bindings==VERSION``)::

    python3 scripts/check_trt_api.py --introspect --json bench/results/trt_api_surface.json /tmp/trtb/w311/*.whl

The list of names below was gathered by reading kd2trt/trt/*.py; each access is cited as ``file:function``,
and :func:`stale_sites` (run by the tests on every CI run) fails when a cited function is gone or no longer
mentions the name, so the list cannot silently drift from the code.
:func:`unlisted_names` checks the reverse way: every ``trt.<Name>`` / ``trt.<Class>.<member>`` the code uses
(also through ``getattr``/``hasattr`` with a constant, and the enum members ``kd2trt/trt/wiring.py`` names as
data in ``TRT_NAMES``) must be in the list, else it is never checked against the bindings; ``main`` fails and
lists what is missing. Enum members' integer values are recorded too (``value``), for tests/trt_surface.py.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import ctypes
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------------ the names


@dataclass(frozen=True)
class Site:
    """One place kd2trt's code touches a name."""

    where: str  # file:function in kd2trt/trt/ ("runner.py:TrtRunner.__init__"; "<module>" for module level)
    guard: str  # "none" (plain access) | "hasattr" | "getattr" (with a default) | "try" | "hasattr+error"
    when: str  # a key of CONDITIONS: on which versions the code reaches this access


@dataclass(frozen=True)
class Name:
    name: str
    kind: str  # what kd2trt treats it as: class | enum | member | method | property | function | attribute
    sites: tuple[Site, ...]
    note: str = ""


@dataclass(frozen=True)
class Group:
    label: str  # the object as kd2trt's code names it
    owner: str  # the bindings class that holds the names ("tensorrt" = the module itself)
    names: tuple[Name, ...]


def _n(name: str, kind: str, *sites: tuple[str, str, str], note: str = "") -> Name:
    return Name(name, kind, tuple(Site(*s) for s in sites), note)


GUARDS = {
    "none": "plain access: AttributeError if absent",
    "hasattr": "hasattr() checked first",
    "getattr": "getattr() with a default",
    "try": "inside try/except that tolerates the failure",
    "hasattr+error": "hasattr() checked first, then a Kd2trtError naming what is missing",
}

#: When the code reaches an access, as a predicate over the names the version has (see :func:`_conditions`).
CONDITIONS = {
    "always": "every build or run",
    "weak_typing": "capabilities.probe: BuilderFlag.FP16 and BuilderFlag.INT8 exist -> plan may set FP16/INT8 flags",
    "strong_typing": "no BuilderFlag.FP16/INT8 -> plan_precision takes _plan_strong",
    "calibrator": "weak typing and IInt8EntropyCalibrator2 and IBuilderConfig.int8_calibrator exist -> implicit INT8",
    "minmax_calibrator": "calibrator, and IInt8MinMaxCalibrator exists (calib_method minmax)",
    "explicit_batch": "NetworkDefinitionCreationFlag.EXPLICIT_BATCH exists and major version < 10",
    "strongly_typed_flag": "strong typing and NetworkDefinitionCreationFlag.STRONGLY_TYPED exists",
    "version_compatible": "--version-compatible, accepted where BuilderFlag.VERSION_COMPATIBLE exists",
    "hardware_compatible": "--hardware-compatible, accepted where trt.HardwareCompatibilityLevel exists",
    "dla": "--dla-core on a device with DLA cores (any version)",
    "timing_cache": "a timing-cache directory is configured (any version)",
    "parse_failure": "the ONNX parser rejected the graph (any version)",
    "no_parse_from_file": "OnnxParser.parse_from_file does not exist",
    "layer_precisions": "per-layer precisions given: weak typing, ILayer.precision and a precision-constraints flag "
                        "exist (another issue fills the list; empty today)",
    "precision_constraints_flag": "per-layer precisions given and BuilderFlag.OBEY_PRECISION_CONSTRAINTS is absent "
                                  "(PREFER_PRECISION_CONSTRAINTS is the fallback)",
    "calibration_profile": "calibrator, and IBuilderConfig.set_calibration_profile exists",
    "tf32": "an FP32 engine, and BuilderFlag.TF32 exists (cleared: the FP32 reference stays FP32)",
}

CAP, BLD, CAL, RUN, WIR = "capabilities.py", "builder.py", "calibrator.py", "runner.py", "wiring.py"

NAMES: tuple[Group, ...] = (
    Group("trt (module)", "tensorrt", (
        _n("__version__", "attribute", (f"{CAP}:_version_of", "getattr", "always"),
           (f"{CAL}:make_calibrator", "none", "calibrator")),
        _n("BuilderFlag", "enum", (f"{CAP}:probe", "getattr", "always"),
           (f"{WIR}:apply_build_settings", "none", "always")),
        _n("NetworkDefinitionCreationFlag", "enum", (f"{CAP}:probe", "getattr", "always"),
           (f"{WIR}:network_creation_flags", "none", "explicit_batch"),
           (f"{WIR}:network_creation_flags", "none", "strongly_typed_flag")),
        _n("IBuilderConfig", "class", (f"{CAP}:probe", "getattr", "always")),
        _n("IInt8EntropyCalibrator2", "class", (f"{CAP}:probe", "hasattr", "always"),
           (f"{CAL}:make_calibrator", "getattr", "calibrator")),
        _n("IInt8MinMaxCalibrator", "class", (f"{CAL}:make_calibrator", "getattr", "calibrator")),
        _n("Builder", "class", (f"{CAP}:probe", "hasattr", "always"), (f"{CAP}:probe", "none", "always"),
           (f"{BLD}:build_engine", "none", "always")),
        _n("OnnxParser", "class", (f"{CAP}:probe", "hasattr", "always"), (f"{BLD}:build_engine", "none", "always")),
        _n("Logger", "class", (f"{CAP}:probe", "none", "always")),
        _n("ILogger", "class", (f"{BLD}:_make_logger", "none", "always"), note="subclassed by builder._make_logger"),
        _n("Runtime", "class", (f"{BLD}:_layer_information", "try", "always"),
           (f"{RUN}:TrtRunner.__init__", "none", "always")),
        _n("MemoryPoolType", "enum", (f"{WIR}:apply_build_settings", "none", "always")),
        _n("DeviceType", "enum", (f"{WIR}:apply_build_settings", "none", "dla")),
        _n("HardwareCompatibilityLevel", "enum", (f"{CAP}:probe", "hasattr", "always"),
           (f"{WIR}:apply_build_settings", "none", "hardware_compatible")),
        _n("ProfilingVerbosity", "enum", (f"{WIR}:apply_build_settings", "none", "always")),
        _n("DataType", "enum", (f"{WIR}:apply_build_settings", "none", "layer_precisions")),
        _n("ILayer", "class", (f"{CAP}:probe", "getattr", "always")),
        _n("LayerInformationFormat", "enum", (f"{BLD}:_layer_information", "try", "always")),
        _n("TensorIOMode", "enum", (f"{RUN}:TrtRunner._setup_io", "none", "always")),
        _n("nptype", "function", (f"{RUN}:TrtRunner._numpy_dtype", "try", "always"),
           note="defined in the bindings' __init__.py, not in tensorrt.so; TypeError for BF16/FP8/INT4/FP4"),
    )),
    Group("trt.Logger", "Logger", (
        _n("ERROR", "member", (f"{CAP}:probe", "none", "always"),
           note="11.x sets Logger.<severity> from ILogger.Severity in __init__.py"),
    )),
    Group("trt.ILogger (kd2trt's _Logger overrides)", "ILogger", (
        _n("log", "method", (f"{BLD}:_make_logger._Logger.log", "none", "always")),
    )),
    Group("trt.BuilderFlag", "BuilderFlag", (
        _n("FP16", "member", (f"{CAP}:probe", "hasattr", "always"), (f"{WIR}:plan_build", "none", "weak_typing")),
        _n("INT8", "member", (f"{CAP}:probe", "hasattr", "always"), (f"{WIR}:plan_build", "none", "weak_typing")),
        _n("GPU_FALLBACK", "member", (f"{WIR}:plan_build", "none", "dla")),
        _n("VERSION_COMPATIBLE", "member", (f"{CAP}:probe", "hasattr", "always"),
           (f"{WIR}:plan_build", "none", "version_compatible")),
        _n("OBEY_PRECISION_CONSTRAINTS", "member", (f"{CAP}:probe", "hasattr", "always"),
           (f"{WIR}:<module>", "none", "layer_precisions")),
        _n("PREFER_PRECISION_CONSTRAINTS", "member", (f"{CAP}:probe", "hasattr", "always"),
           (f"{WIR}:<module>", "none", "precision_constraints_flag")),
        _n("TF32", "member", (f"{CAP}:probe", "hasattr", "always"), (f"{WIR}:plan_build", "none", "tf32")),
    )),
    Group("trt.NetworkDefinitionCreationFlag", "NetworkDefinitionCreationFlag", (
        _n("EXPLICIT_BATCH", "member", (f"{CAP}:probe", "hasattr", "always"),
           (f"{WIR}:plan_build", "none", "explicit_batch")),
        _n("STRONGLY_TYPED", "member", (f"{CAP}:probe", "hasattr", "always"),
           (f"{WIR}:plan_build", "none", "strongly_typed_flag")),
    )),
    Group("trt.MemoryPoolType", "MemoryPoolType", (
        _n("WORKSPACE", "member", (f"{WIR}:plan_build", "none", "always")),)),
    Group("trt.DeviceType", "DeviceType", (_n("DLA", "member", (f"{WIR}:plan_build", "none", "dla")),)),
    Group("trt.HardwareCompatibilityLevel", "HardwareCompatibilityLevel", (
        _n("AMPERE_PLUS", "member", (f"{WIR}:plan_build", "none", "hardware_compatible")),
    )),
    Group("trt.ProfilingVerbosity", "ProfilingVerbosity", (
        _n("DETAILED", "member", (f"{WIR}:plan_build", "none", "always")),
    )),
    Group("trt.DataType", "DataType", tuple(
        _n(m, "member", (f"{WIR}:<module>", "none", "layer_precisions")) for m in ("FLOAT", "HALF", "INT8"))),
    Group("trt.LayerInformationFormat", "LayerInformationFormat", (
        _n("JSON", "member", (f"{BLD}:_layer_information", "try", "always")),
    )),
    Group("trt.TensorIOMode", "TensorIOMode", (
        _n("INPUT", "member", (f"{RUN}:TrtRunner._setup_io", "none", "always")),
        _n("OUTPUT", "member", (f"{RUN}:TrtRunner._setup_io", "none", "always")),
    )),
    Group("builder", "Builder", (
        _n("num_DLA_cores", "property", (f"{CAP}:probe", "getattr", "always")),
        _n("platform_has_fast_fp16", "property", (f"{CAP}:probe", "hasattr", "always")),
        _n("platform_has_fast_int8", "property", (f"{CAP}:probe", "hasattr", "always")),
        _n("create_network", "method", (f"{BLD}:build_engine", "none", "always")),
        _n("create_builder_config", "method", (f"{BLD}:build_engine", "none", "always")),
        _n("create_optimization_profile", "method", (f"{WIR}:_profile", "none", "always"),
           (f"{WIR}:_profile", "none", "calibration_profile")),
        _n("build_serialized_network", "method", (f"{BLD}:build_engine", "none", "always")),
    )),
    Group("network", "INetworkDefinition", (
        _n("num_inputs", "property", (f"{BLD}:build_engine", "none", "always")),
        _n("get_input", "method", (f"{BLD}:build_engine", "none", "always")),
        _n("num_layers", "property", (f"{WIR}:apply_build_settings", "none", "layer_precisions")),
        _n("get_layer", "method", (f"{WIR}:apply_build_settings", "none", "layer_precisions")),
    )),
    Group("network layer", "ILayer", (
        _n("name", "property", (f"{WIR}:apply_build_settings", "none", "layer_precisions")),
        _n("precision", "property", (f"{CAP}:probe", "hasattr", "always"),
           (f"{WIR}:apply_build_settings", "none", "layer_precisions")),
    )),
    Group("network input tensor", "ITensor", (
        _n("name", "property", (f"{BLD}:build_engine", "none", "always")),
        _n("shape", "property", (f"{BLD}:build_engine", "none", "always")),
    )),
    Group("parser", "OnnxParser", (
        _n("parse_from_file", "method", (f"{BLD}:build_engine", "hasattr", "always")),
        _n("parse", "method", (f"{BLD}:build_engine", "none", "no_parse_from_file")),
        _n("num_errors", "property", (f"{BLD}:_parser_issues", "none", "parse_failure")),
        _n("get_error", "method", (f"{BLD}:_parser_issues", "none", "parse_failure")),
    )),
    Group("parser error", "ParserError", (
        _n("node", "method", (f"{BLD}:_parser_issues", "hasattr", "parse_failure")),
        _n("node_operator", "method", (f"{BLD}:_parser_issues", "getattr", "parse_failure")),
        _n("node_name", "method", (f"{BLD}:_parser_issues", "getattr", "parse_failure")),
        _n("desc", "method", (f"{BLD}:_parser_issues", "none", "parse_failure")),
    )),
    Group("config", "IBuilderConfig", (
        _n("int8_calibrator", "property", (f"{CAP}:probe", "hasattr", "always"),
           (f"{WIR}:apply_build_settings", "none", "calibrator")),
        _n("set_memory_pool_limit", "method", (f"{WIR}:apply_build_settings", "none", "always")),
        _n("add_optimization_profile", "method", (f"{WIR}:apply_build_settings", "none", "always")),
        _n("set_flag", "method", (f"{WIR}:apply_build_settings", "none", "always")),
        _n("clear_flag", "method", (f"{WIR}:apply_build_settings", "none", "tf32")),
        _n("set_calibration_profile", "method", (f"{CAP}:probe", "hasattr", "always"),
           (f"{WIR}:apply_build_settings", "none", "calibration_profile")),
        _n("default_device_type", "property", (f"{WIR}:apply_build_settings", "none", "dla")),
        _n("DLA_core", "property", (f"{WIR}:apply_build_settings", "none", "dla")),
        _n("hardware_compatibility_level", "property", (f"{WIR}:apply_build_settings", "none",
                                                        "hardware_compatible")),
        _n("profiling_verbosity", "property", (f"{WIR}:apply_build_settings", "none", "always")),
        _n("create_timing_cache", "method", (f"{BLD}:_attach_timing_cache", "try", "timing_cache"),
           (f"{BLD}:_attach_timing_cache", "none", "timing_cache")),
        _n("set_timing_cache", "method", (f"{BLD}:_attach_timing_cache", "try", "timing_cache"),
           (f"{BLD}:_attach_timing_cache", "none", "timing_cache")),
        _n("get_timing_cache", "method", (f"{BLD}:build_engine", "none", "timing_cache")),
    )),
    Group("timing cache", "ITimingCache", (
        _n("serialize", "method", (f"{BLD}:build_engine", "none", "timing_cache")),)),
    Group("optimization profile", "IOptimizationProfile", (
        _n("set_shape", "method", (f"{WIR}:_profile", "none", "always"),
           (f"{WIR}:_profile", "none", "calibration_profile")),
    )),
    Group("runtime", "Runtime", (
        _n("engine_host_code_allowed", "property", (f"{WIR}:apply_runtime_settings", "hasattr",
                                                    "version_compatible")),
        _n("deserialize_cuda_engine", "method", (f"{BLD}:_layer_information", "try", "always"),
           (f"{RUN}:TrtRunner.__init__", "none", "always")),
    )),
    Group("engine", "ICudaEngine", (
        _n("create_engine_inspector", "method", (f"{BLD}:_layer_information", "try", "always")),
        _n("create_execution_context", "method", (f"{RUN}:TrtRunner.__init__", "hasattr+error", "always"),
           note="listed in REQUIRED_ENGINE_API, checked before it is called"),
        _n("num_io_tensors", "property", (f"{RUN}:TrtRunner.__init__", "hasattr+error", "always")),
        _n("get_tensor_name", "method", (f"{RUN}:TrtRunner.__init__", "hasattr+error", "always")),
        _n("get_tensor_mode", "method", (f"{RUN}:TrtRunner.__init__", "hasattr+error", "always")),
        _n("get_tensor_dtype", "method", (f"{RUN}:TrtRunner.__init__", "hasattr+error", "always")),
        _n("get_tensor_profile_shape", "method", (f"{RUN}:TrtRunner.__init__", "hasattr+error", "always")),
    )),
    Group("engine inspector", "EngineInspector", (
        _n("get_engine_information", "method", (f"{BLD}:_layer_information", "try", "always")),
    )),
    Group("execution context", "IExecutionContext", (
        _n("set_input_shape", "method", (f"{RUN}:TrtRunner.__init__", "hasattr+error", "always")),
        _n("get_tensor_shape", "method", (f"{RUN}:TrtRunner.__init__", "hasattr+error", "always")),
        _n("set_tensor_address", "method", (f"{RUN}:TrtRunner.__init__", "hasattr+error", "always")),
        _n("execute_async_v3", "method", (f"{RUN}:TrtRunner.__init__", "hasattr+error", "always")),
    )),
    Group("calibrator base (kd2trt's Kd2trtCalibrator overrides)", "IInt8EntropyCalibrator2", tuple(
        _n(m, "method", (f"{CAL}:make_calibrator", "none", "calibrator")) for m in (
            "get_batch_size", "get_batch", "read_calibration_cache", "write_calibration_cache"))),
    Group("calibrator base, minmax (kd2trt's Kd2trtCalibrator overrides)", "IInt8MinMaxCalibrator", tuple(
        _n(m, "method", (f"{CAL}:make_calibrator", "none", "minmax_calibrator")) for m in (
            "get_batch_size", "get_batch", "read_calibration_cache", "write_calibration_cache"))),
)

#: Attributes kd2trt sets on its own subclasses of bindings classes: a base class attribute of the same name
#: (a read-only property, or a method TensorRT calls) would be shadowed or would refuse the assignment.
#: Checked with --introspect only (the strings cannot say which class a word belongs to).
SUBCLASS_ATTRS: dict[str, tuple[str, ...]] = {
    "ILogger": ("errors", "threshold"),
    "IInt8EntropyCalibrator2": ("algorithm", "state", "cache_path", "input_name", "batch_size", "stream", "error",
                                "cache_written", "free"),
    "IInt8MinMaxCalibrator": ("algorithm", "state", "cache_path", "input_name", "batch_size", "stream", "error",
                              "cache_written", "free"),
}

KIND_ACCEPTS = {
    "class": {"class", "enum"},
    "enum": {"enum"},
    "member": {"member"},
    "method": {"method"},
    "property": {"property"},
    "function": {"function", "method"},
}

# ------------------------------------------------------------------------------------------------ reading


TRT_PACKAGE = Path(__file__).resolve().parents[1] / "kd2trt" / "trt"


def _scope_source(source: str, qualname: str) -> str | None:
    """The source of function ``qualname`` (``Class.method`` or ``function``); the whole module for ``<module>``."""
    if qualname == "<module>":
        return source
    tree = ast.parse(source)
    node: ast.AST = tree
    for part in qualname.split("."):
        node = next((child for child in ast.iter_child_nodes(node)
                     if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                     and child.name == part), None)
        if node is None:
            return None
    return ast.get_source_segment(source, node)


def _module_constants(source: str) -> str:
    """Module-level assignments: names a function reaches through a table (``REQUIRED_ENGINE_API``, ...)."""
    tree = ast.parse(source)
    return "\n".join(ast.get_source_segment(source, node) or "" for node in tree.body
                     if isinstance(node, ast.Assign | ast.AnnAssign))


def stale_sites(package: Path = TRT_PACKAGE) -> list[str]:
    """Sites whose ``file:function`` no longer exists or no longer mentions the name.

    The list of names is data copied from the code; this keeps it honest. ``tests/test_trt_api_list.py`` runs
    it on every CI run, so an edit of kd2trt/trt/ that moves or drops a listed access fails until the list is
    updated.
    """
    problems = []
    sources: dict[str, str] = {}
    for group in NAMES:
        for entry in group.names:
            token = re.compile(rf"\b{re.escape(entry.name.rsplit('.', 1)[-1])}\b")
            for site in entry.sites:
                file, _, scope = site.where.partition(":")
                if file not in sources:
                    sources[file] = (package / file).read_text()
                segment = _scope_source(sources[file], scope)
                if segment is None:
                    problems.append(f"{group.owner}.{entry.name}: {site.where} does not exist")
                elif not token.search(segment) and not token.search(_module_constants(sources[file])):
                    problems.append(f"{group.owner}.{entry.name}: {site.where} does not mention it")
    return problems


_TRT_ROOTS = ("trt", "self._trt")  # how kd2trt/trt/ code names the imported tensorrt module


def _dotted(node: ast.AST) -> str | None:
    """``trt.BuilderFlag.FP16`` -> that text, for chains of attributes on a plain name; None otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _trt_owner(dotted: str | None, aliases: dict[str, str]) -> str | None:
    """The bindings owner an expression stands for: ``trt`` -> "tensorrt", ``trt.BuilderFlag`` -> "BuilderFlag",
    a local bound to ``getattr(trt, "BuilderFlag", None)`` -> "BuilderFlag"; None when it is not tensorrt."""
    if dotted is None:
        return None
    if dotted in _TRT_ROOTS:
        return "tensorrt"
    for root in _TRT_ROOTS:
        if dotted.startswith(root + ".") and "." not in dotted[len(root) + 1:]:
            return dotted[len(root) + 1:]
    return aliases.get(dotted)


def used_trt_names(package: Path = TRT_PACKAGE) -> dict[str, list[str]]:
    """``"Owner.name"`` -> ``["file:line", ...]`` for every tensorrt name kd2trt/trt/ code uses.

    Found in the source: ``trt.<Name>`` and ``trt.<Class>.<member>`` (also through ``self._trt``),
    ``getattr``/``hasattr`` with a constant name on tensorrt, on ``trt.<Class>`` or on a local bound to
    ``getattr(trt, "<Class>", ...)``, and the enum members the wiring names as data (``wiring.TRT_NAMES``:
    applied with ``getattr(trt.<Enum>, name)``). The module's own owner is ``"tensorrt"``.
    """
    found: dict[str, list[str]] = {}

    def add(owner: str, name: str, file: str, line: int) -> None:
        if owner != "tensorrt" and name.startswith("__"):
            return  # trt.ILogger.__init__: Python's, not TensorRT's API
        found.setdefault(f"{owner}.{name}", []).append(f"{file}:{line}")

    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):  # locals bound to a tensorrt class: x = getattr(trt, "X", None) / x = trt.X
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                value = node.value
                owner = None
                if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "getattr" \
                        and len(value.args) >= 2 and isinstance(value.args[1], ast.Constant) \
                        and _trt_owner(_dotted(value.args[0]), {}) == "tensorrt":
                    owner = str(value.args[1].value)
                elif _trt_owner(_dotted(value), {}) not in (None, "tensorrt"):
                    owner = _trt_owner(_dotted(value), {})
                if owner is not None:
                    aliases[node.targets[0].id] = owner
            if isinstance(node, ast.Assign | ast.AnnAssign) and path.name == "wiring.py":
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if isinstance(target, ast.Name) and target.id == "TRT_NAMES" and node.value is not None:
                    for enum, members in ast.literal_eval(node.value).items():
                        add("tensorrt", enum, path.name, node.lineno)
                        for member in members:
                            add(enum, member, path.name, node.lineno)
        inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and id(node) not in inner:  # the whole chain, once
                dotted = _dotted(node)
                if dotted is None:
                    continue
                for root in _TRT_ROOTS:
                    if dotted.startswith(root + "."):
                        parts = dotted[len(root) + 1:].split(".")
                        add("tensorrt", parts[0], path.name, node.lineno)
                        if len(parts) > 1:
                            add(parts[0], parts[1], path.name, node.lineno)
                        break
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2 \
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                owner = _trt_owner(_dotted(node.args[0]), aliases)
                if owner is not None:
                    add(owner, node.args[1].value, path.name, node.lineno)
    for sites in found.values():
        sites[:] = sorted(set(sites), key=lambda s: (s.split(":")[0], int(s.split(":")[1])))
    return found


def unlisted_names(package: Path = TRT_PACKAGE) -> list[str]:
    """The reverse of :func:`stale_sites`: tensorrt names the code uses that the table :data:`NAMES` lacks.

    A name missing from the table is never checked against the bindings, so the code could use an attribute
    some TensorRT line does not have and every check would still pass. Each is listed with where it is used.
    """
    listed = {f"{group.owner}.{entry.name}" for group in NAMES for entry in group.names}
    return [f"{name}: used at {', '.join(sites)}, not in check_trt_api.NAMES"
            for name, sites in sorted(used_trt_names(package).items()) if name not in listed]


@dataclass
class Bindings:
    """The strings of one TensorRT version's bindings."""

    source: str
    version: str
    so_files: list[str]
    sha256: dict[str, str]
    runs: set[bytes]
    reversed_runs: list[bytes]  # every run reversed, sorted: suffix lookups by binary search
    init_py: str  # the package's __init__.py ('' if not found)
    package_dir: str | None = None  # extracted package directory, for --introspect
    so_path: str | None = None  # the (extracted) tensorrt*.so the stub libraries are built for
    cp_tag: str | None = None  # "3.11" from the wheel name
    introspection: dict[str, Any] | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)


_RUN_RE = re.compile(rb"[\x20-\x7e\t]{2,}")
_SO_RE = re.compile(r"(^|/)tensorrt[^/]*\.so$")
_VERSION_RE = re.compile(r"""__version__\s*=\s*["']([^"']+)["']""")
_WHEEL_RE = re.compile(r"^(?P<dist>[^-]+)-(?P<version>[^-]+)-(?P<py>cp\d+|py\d+)")


def _strings(data: bytes) -> set[bytes]:
    """Printable runs of at least 2 bytes, like `strings -n 2` (tab counts as printable, newline does not)."""
    return set(_RUN_RE.findall(data))


def _load(path: Path, extract: bool) -> Bindings:
    so_blobs: dict[str, bytes] = {}
    init_py = ""
    package_dir: str | None = None
    so_path: str | None = None
    cp_tag: str | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    version = ""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        match = _WHEEL_RE.match(path.name)
        if match:
            version = match.group("version")
            py = match.group("py")
            if py.startswith("cp") and len(py) >= 4:
                cp_tag = f"{py[2]}.{py[3:]}"
        with zipfile.ZipFile(path) as wheel:
            members = wheel.namelist()
            sos = [m for m in members if _SO_RE.search(m)]
            for member in sos:
                so_blobs[member] = wheel.read(member)
            if sos:
                init_name = str(Path(sos[0]).parent / "__init__.py")
                if init_name in members:
                    init_py = wheel.read(init_name).decode("utf-8", "replace")
            if extract and sos:
                tmp = tempfile.TemporaryDirectory(prefix="check_trt_api-")
                wheel.extractall(tmp.name)
                package_dir = str(Path(tmp.name) / Path(sos[0]).parent)
                so_path = str(Path(tmp.name) / sos[0])
    else:
        data = path.read_bytes()
        if not data.startswith(b"\x7fELF"):
            raise ValueError(f"{path}: neither a wheel nor an ELF shared object (tensorrt.so)")
        so_blobs[path.name] = data
        sibling = path.with_name("__init__.py")
        if sibling.is_file():
            init_py = sibling.read_text("utf-8", "replace")
            package_dir, so_path = str(path.parent), str(path)
    if not so_blobs:
        raise ValueError(f"{path}: no tensorrt*.so found (give a bindings wheel or a tensorrt.so)")
    found = _VERSION_RE.search(init_py)
    version = found.group(1) if found else version or "unknown"
    runs: set[bytes] = set()
    for blob in so_blobs.values():
        runs |= _strings(blob)
    return Bindings(
        source=str(path), version=version, so_files=sorted(so_blobs),
        sha256={k: hashlib.sha256(v).hexdigest() for k, v in so_blobs.items()},
        runs=runs, reversed_runs=sorted(r[::-1] for r in runs), init_py=init_py,
        package_dir=package_dir, so_path=so_path, cp_tag=cp_tag, tmp=tmp)


def _has_tail(reversed_runs: Sequence[bytes], word: bytes) -> bool:
    """Whether any run ends with ``word``: some reversed run starts with the reversed word."""
    key = word[::-1]
    i = bisect.bisect_left(reversed_runs, key)
    return i < len(reversed_runs) and reversed_runs[i].startswith(key)


def string_evidence(b: Bindings, name: str) -> str:
    """``exact`` | ``tail`` | ``python`` (only in __init__.py) | ``absent`` (certain)."""
    word = name.encode()
    if word in b.runs:
        return "exact"
    if _has_tail(b.reversed_runs, word):
        return "tail"
    if re.search(rf"\b{re.escape(name)}\b", b.init_py):
        return "python"
    return "absent"


# ------------------------------------------------------------------------------------------------ introspection


def _elf_needed_and_undefined(data: bytes) -> tuple[list[str], list[tuple[str, int]]]:
    """DT_NEEDED sonames and undefined STB_GLOBAL dynamic symbols (name, STT type) of an ELF64 LE file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    needed: list[str] = []
    undefined: list[tuple[str, int]] = []

    def text(strtab: int, offset: int) -> str:
        start = sections[strtab][4] + offset
        return data[start:data.index(b"\0", start)].decode("ascii", "replace")

    for _name, kind, _flags, _addr, offset, size, link, _info, _align, _entsize in sections:
        if kind == 6:  # SHT_DYNAMIC
            for i in range(size // 16):
                tag, value = struct.unpack_from("<qQ", data, offset + 16 * i)
                if tag == 1:  # DT_NEEDED
                    needed.append(text(link, value))
        elif kind == 11:  # SHT_DYNSYM
            for i in range(1, size // 24):
                st_name, st_info, _other, st_shndx, _value, _size = struct.unpack_from("<IBBHQQ", data, offset + 24 * i)
                if st_shndx == 0 and st_info >> 4 == 1:  # SHN_UNDEF, STB_GLOBAL
                    undefined.append((text(link, st_name), st_info & 0xF))
    return needed, undefined


def _build_stubs(so_path: Path, out_dir: Path) -> list[str]:
    """Empty stand-ins for the shared libraries ``so_path`` needs but this machine lacks (libnvinfer...)."""
    needed, undefined = _elf_needed_and_undefined(so_path.read_bytes())
    loaded: list[Any] = [ctypes.CDLL(None)]
    missing_libs = []
    for soname in needed:
        try:
            loaded.append(ctypes.CDLL(soname))
        except OSError:
            missing_libs.append(soname)
    if not missing_libs:
        return []
    symbols = [(name, kind) for name, kind in undefined
               if not name.startswith(("Py", "_Py")) and not any(hasattr(lib, name) for lib in loaded)]
    lines = []
    for i, (name, kind) in enumerate(symbols):
        if kind == 1:  # STT_OBJECT
            lines.append(f'char kd2trt_stub_{i}[4096] __asm__("{name}");')
        else:
            lines.append(f'void *kd2trt_stub_{i}(void) __asm__("{name}");\nvoid *kd2trt_stub_{i}(void) {{ return 0; }}')
    source = out_dir / "stubs.c"
    source.write_text("\n".join(lines) + "\nint kd2trt_stub_marker;\n")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc/gcc) to build the stub libraries")
    for soname in missing_libs:
        subprocess.run([compiler, "-shared", "-fPIC", "-o", str(out_dir / soname), f"-Wl,-soname,{soname}",
                        str(source)], check=True, capture_output=True)
    return missing_libs


_CHILD = r"""
import importlib, inspect, json, re, sys, types
request = json.load(sys.stdin)
sys.path.insert(0, request["path"])
trt = importlib.import_module(request["package"])

def kind_of(owner, name):
    try:
        value = inspect.getattr_static(owner, name)
    except AttributeError:
        if not hasattr(owner, name):
            return None
        value = getattr(owner, name)
    if isinstance(value, property):
        return "property"
    if isinstance(value, type):
        return "enum" if hasattr(value, "__members__") else "class"
    if hasattr(type(value), "__members__"):
        return "member"
    if isinstance(value, (staticmethod, classmethod)):
        return "method"
    if callable(value):
        return "function" if isinstance(owner, types.ModuleType) else "method"
    return "attribute"

def signature(owner, name):
    doc = getattr(getattr(owner, name, None), "__doc__", None) or ""
    pattern = re.compile(r"^(?:\d+\. )?" + re.escape(name) + r"\(")
    lines = [line.strip() for line in doc.splitlines() if pattern.match(line.strip())]
    if len(lines) > 1:  # pybind11 overloads: "name(*args, **kwargs)", then "1. name(...)", "2. name(...)"
        lines = [line for line in lines if not line.startswith(name + "(*args")]
    text = " || ".join(lines).replace(request["package"] + ".tensorrt.", "")
    return text or None

result = {"version": str(getattr(trt, "__version__", "")), "names": {}, "owners": {}, "signatures": {},
          "values": {}, "subclass_conflicts": {}}
for owner_name, name in request["names"]:
    owner = trt if owner_name == "tensorrt" else getattr(trt, owner_name, None)
    result["owners"][owner_name] = owner is not None
    kind = None if owner is None else kind_of(owner, name)
    result["names"][owner_name + "." + name] = kind
    if kind == "member":
        try:
            result["values"][owner_name + "." + name] = int(getattr(owner, name))
        except (TypeError, ValueError):
            pass
    if kind in ("method", "function"):
        result["signatures"][owner_name + "." + name] = signature(owner, name)
for owner_name, attrs in request["subclass_attrs"].items():
    owner = getattr(trt, owner_name, None)
    if owner is not None:
        result["subclass_conflicts"][owner_name] = {a: kind_of(owner, a) for a in attrs if hasattr(owner, a)}
print(json.dumps(result))
"""


def _python_version(python: str) -> str | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def introspect(b: Bindings, pythons: Iterable[str]) -> dict[str, Any]:
    """Import the bindings in a child Python (stub libnvinfer) and ask each owner for each name."""
    if b.package_dir is None or b.so_path is None:
        return {"ok": False, "error": "no package directory (a bare tensorrt.so without __init__.py)"}
    package = Path(b.package_dir)
    candidates = []
    for python in dict.fromkeys(p for p in pythons if p):
        found = _python_version(python)
        if found and (b.cp_tag is None or found == b.cp_tag):
            candidates.append((python, found))
    if not candidates:
        return {"ok": False, "error": f"no Python {b.cp_tag or '(any)'} given (--python) or found on PATH"}
    names = [[g.owner, n.name] for g in NAMES for n in g.names]
    with tempfile.TemporaryDirectory(prefix="check_trt_api-stubs-") as stub_dir:
        try:
            stubbed = _build_stubs(Path(b.so_path), Path(stub_dir))
        except (OSError, ValueError, RuntimeError, subprocess.CalledProcessError) as exc:
            return {"ok": False, "error": f"cannot build stub libraries: {exc}"}
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (stub_dir, env.get("LD_LIBRARY_PATH", "")) if p)
        request = json.dumps({"path": str(package.parent), "package": package.name, "names": names,
                              "subclass_attrs": SUBCLASS_ATTRS})
        errors = []
        for python, found in candidates:
            try:
                proc = subprocess.run([python, "-c", _CHILD], input=request, capture_output=True, text=True,
                                      env=env, timeout=120, cwd=stub_dir)
            except subprocess.TimeoutExpired:
                errors.append(f"{python}: timed out")
                continue
            if proc.returncode == 0:
                data = json.loads(proc.stdout)
                data.update(ok=True, python=python, python_version=found, stubbed_libraries=stubbed)
                return data
            errors.append(f"{python}: exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    return {"ok": False, "error": "; ".join(errors)}


# ------------------------------------------------------------------------------------------------ evaluation


def _major(version: str) -> int | None:
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else None


def _conditions(maybe_present: dict[str, bool], maybe_absent: dict[str, bool], version: str) -> dict[str, bool]:
    """Which code paths the version may reach. Conservative where the evidence is one-sided: a condition that
    needs a name counts it if it may be present, one that needs a name missing counts it if it may be absent,
    so that strings-only evidence can only add reached paths (and UNGUARDED flags), never hide one."""

    def has(key: str) -> bool:
        return maybe_present.get(key, False)

    def lacks(key: str) -> bool:
        return maybe_absent.get(key, True)

    weak = has("BuilderFlag.FP16") and has("BuilderFlag.INT8")
    strong = lacks("BuilderFlag.FP16") or lacks("BuilderFlag.INT8")
    calibrator = weak and has("tensorrt.IInt8EntropyCalibrator2") and has("IBuilderConfig.int8_calibrator")
    major = _major(version)
    layer_precisions = weak and has("ILayer.precision") and (
        has("BuilderFlag.OBEY_PRECISION_CONSTRAINTS") or has("BuilderFlag.PREFER_PRECISION_CONSTRAINTS"))
    return {
        "always": True,
        "weak_typing": weak,
        "strong_typing": strong,
        "calibrator": calibrator,
        "minmax_calibrator": calibrator and has("tensorrt.IInt8MinMaxCalibrator"),
        "explicit_batch": has("NetworkDefinitionCreationFlag.EXPLICIT_BATCH") and (major is None or major < 10),
        "strongly_typed_flag": strong and has("NetworkDefinitionCreationFlag.STRONGLY_TYPED"),
        "version_compatible": has("BuilderFlag.VERSION_COMPATIBLE"),
        "hardware_compatible": has("tensorrt.HardwareCompatibilityLevel"),
        "dla": True,
        "timing_cache": True,
        "parse_failure": True,
        "no_parse_from_file": lacks("OnnxParser.parse_from_file"),
        "layer_precisions": layer_precisions,
        "precision_constraints_flag": layer_precisions and lacks("BuilderFlag.OBEY_PRECISION_CONSTRAINTS"),
        "calibration_profile": calibrator and has("IBuilderConfig.set_calibration_profile"),
        "tf32": has("BuilderFlag.TF32"),
    }


def evaluate(b: Bindings) -> dict[str, Any]:
    """Per-name evidence, presence, kind and status for one version."""
    intro = b.introspection if b.introspection and b.introspection.get("ok") else None
    rows = []
    present: dict[str, bool] = {}
    for group in NAMES:
        for n in group.names:
            key = f"{group.owner}.{n.name}"
            evidence = string_evidence(b, n.name)
            if group.owner != "tensorrt" and string_evidence(b, group.owner) == "absent":
                evidence = "absent"  # no owner class, no member
            actual_kind = intro["names"].get(key) if intro else None
            sig = intro.get("signatures", {}).get(key) if intro else None
            value = intro.get("values", {}).get(key) if intro else None
            is_present = actual_kind is not None if intro else evidence != "absent"
            present[key] = is_present
            rows.append({"group": group.label, "owner": group.owner, "name": n.name, "kind": n.kind,
                         "note": n.note, "evidence": evidence, "present": is_present, "actual_kind": actual_kind,
                         "signature": sig, "value": value,
                         "sites": [{"where": s.where, "guard": s.guard, "when": s.when} for s in n.sites]})
    # Strings prove absence only: anything they find may still be absent. Introspection is exact.
    maybe_absent = {k: not v for k, v in present.items()} if intro else dict.fromkeys(present, True)
    conditions = _conditions(present, maybe_absent, b.version)
    unguarded = kind_mismatches = contradictions = 0
    for row in rows:
        reached = [s for s in row["sites"] if conditions[s["when"]]]
        row["reached"] = bool(reached)
        if row["present"]:
            exact = intro or row["evidence"] == "exact"
            row["status"] = "present" if exact else f"probably present ({row['evidence']})"
            accepts = KIND_ACCEPTS.get(row["kind"])
            if intro and accepts and row["actual_kind"] not in accepts:
                row["status"] = f"KIND MISMATCH: kd2trt uses a {row['kind']}, bindings have a {row['actual_kind']}"
                kind_mismatches += 1
        elif any(s["guard"] == "none" for s in reached):
            row["status"] = "UNGUARDED"
            unguarded += 1
        elif reached:
            row["status"] = "absent, guarded"
        else:
            row["status"] = "absent, not reached"
        if intro and row["present"] and row["evidence"] == "absent":
            row["status"] += " [contradicts the strings check]"
            contradictions += 1
    conflicts = intro.get("subclass_conflicts", {}) if intro else {}
    n_conflicts = sum(len(v) for v in conflicts.values())
    return {
        "source": b.source, "version": b.version, "so_files": b.so_files, "sha256": b.sha256,
        "string_runs": len(b.runs), "init_py": bool(b.init_py),
        "method": "introspection (two-sided)" if intro else "strings (one-sided)",
        "introspection": {k: v for k, v in (b.introspection or {}).items()
                          if k not in ("names", "owners", "signatures", "values")},
        "conditions": conditions, "names": rows,
        "summary": {"checked": len(rows), "absent": sum(not r["present"] for r in rows), "unguarded": unguarded,
                    "kind_mismatches": kind_mismatches, "subclass_conflicts": n_conflicts,
                    "strings_contradicted": contradictions,
                    "tail_only": sum(r["evidence"] == "tail" for r in rows)},
    }


# ------------------------------------------------------------------------------------------------ output


def _sites_text(sites: list[dict[str, str]], conditions: dict[str, bool]) -> str:
    parts = []
    for s in sites:
        mark = "" if conditions[s["when"]] else " unreached"
        parts.append(f"{s['where']}[{s['guard']}{'' if s['when'] == 'always' else ', ' + s['when']}{mark}]")
    return " ".join(parts)


def print_report(result: dict[str, Any]) -> None:
    conditions = result["conditions"]
    print(f"\nTensorRT {result['version']}  ({Path(result['source']).name}; {result['method']})")
    intro = result["introspection"]
    if intro and not intro.get("ok"):
        print(f"  introspection unavailable: {intro.get('error')}")
    elif intro:
        print(f"  introspection: imported with Python {intro['python_version']}, stubbed "
              f"{', '.join(intro.get('stubbed_libraries') or []) or 'nothing'}")
    reached = [k for k, v in conditions.items() if v and k != "always"]
    may = "" if result["method"].startswith("introspection") else " (may reach: strings evidence is one-sided)"
    print(f"  paths this version reaches{may}: {', '.join(reached)}")
    absent = [r for r in result["names"] if not r["present"]]
    odd = [r for r in result["names"] if r["present"] and r["status"].startswith("KIND")]
    if absent:
        width = max(len(f"{r['owner']}.{r['name']}") for r in absent)
        print(f"  {'absent name':<{width}}  {'kind':<9} {'status':<20} used at [guard, when]")
        for r in absent:
            label = f"{r['owner']}.{r['name']}"
            print(f"  {label:<{width}}  {r['kind']:<9} {r['status']:<20} {_sites_text(r['sites'], conditions)}")
    else:
        print("  every name kd2trt uses was found")
    for r in odd:
        print(f"  {r['owner']}.{r['name']}: {r['status']}")
    for owner, attrs in (intro.get("subclass_conflicts") or {}).items() if intro else ():
        for attr, kind in attrs.items():
            print(f"  SUBCLASS CONFLICT: kd2trt sets {attr!r} on its {owner} subclass; the base has a {kind}")
    tails = [f"{r['owner']}.{r['name']}" for r in result["names"] if r["evidence"] == "tail"]
    if tails and result["method"].startswith("strings"):
        print(f"  found only as the tail of a longer string (weakest evidence): {', '.join(tails)}")
    s = result["summary"]
    print(f"  {s['checked']} names, {s['absent']} absent, {s['unguarded']} UNGUARDED"
          + (f", {s['kind_mismatches']} kind mismatches, {s['subclass_conflicts']} subclass conflicts"
             if intro and intro.get("ok") else ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="One-sided: absent from the strings = certainly absent; found = "
                                            "probably present. --introspect makes it two-sided.")
    parser.add_argument("bindings", nargs="+", type=Path, help="bindings wheels (.whl) or tensorrt*.so files")
    parser.add_argument("--json", type=Path, help="write the full result here")
    parser.add_argument("--introspect", action="store_true",
                        help="also import each wheel's bindings in a child Python with stub TensorRT libraries")
    parser.add_argument("--python", action="append", default=[],
                        help="interpreter(s) for --introspect; the one matching the wheel's cpXY tag is used "
                             "(default: this one and pythonX.Y on PATH)")
    args = parser.parse_args(argv)

    stale = stale_sites()
    for problem in stale:
        print(f"stale reference: {problem}")
    unlisted = unlisted_names()
    for problem in unlisted:
        print(f"unlisted name: {problem}")
    results = []
    for path in args.bindings:
        try:
            b = _load(path, extract=args.introspect)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            parser.error(str(exc))
        try:
            if args.introspect:
                pythons = [*args.python, sys.executable]
                tags = [b.cp_tag] if b.cp_tag else [f"3.{minor}" for minor in range(6, 15)]  # bare .so: try all
                pythons += [shutil.which(f"python{tag}") or "" for tag in tags]
                b.introspection = introspect(b, pythons)
            results.append(evaluate(b))
        finally:
            if b.tmp is not None:
                b.tmp.cleanup()
    results.sort(key=lambda r: [int(p) if p.isdigit() else 0 for p in r["version"].split(".")])
    for result in results:
        print_report(result)
    print("\nOne-sided check: a name absent from the strings is certainly absent; a name found is only probably "
          "present (introspected versions are exact).")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "tool": "scripts/check_trt_api.py",
            "argv": list(argv if argv is not None else sys.argv[1:]),
            "one_sided": "strings: absent => certainly absent; found => probably present ('exact' = a whole "
                         "string, 'tail' = only the end of a longer one). Introspection (stub libnvinfer, "
                         "hasattr on the real classes) is exact where it ran.",
            "guards": GUARDS,
            "conditions": CONDITIONS,
            "versions": results,
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.json}")
    bad = sum(r["summary"]["unguarded"] + r["summary"]["kind_mismatches"] + r["summary"]["subclass_conflicts"]
              for r in results)
    return 1 if bad or stale or unlisted else 0


if __name__ == "__main__":
    sys.exit(main())
