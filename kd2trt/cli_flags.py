"""Command-line flags that set recipe keys, derived from the config models: type and help written once.

A flag is a recipe key and a name (`Flag("student.train.epochs", "--student-epochs")`); its type comes from
the pydantic field's annotation and its help from the field's description plus the recipe default, so a flag
cannot drift from the key it sets. Commands that take the same recipe section share one group of flags, and a
flag name means one key in every command. `with_flags` adds a group's options to a typer command and hands
the command the values given, as `overrides` (dotted key -> value) for `load_config`.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel

from kd2trt.config import RunConfig

__all__ = ["BENCH_FLAGS", "BUILD_FLAGS", "DISTILL_FLAGS", "EXPORT_FLAGS", "PARITY_FLAGS", "Flag", "describe",
           "with_flags"]


@dataclass(frozen=True)
class Flag:
    key: str   # dotted recipe key
    name: str  # --flag-name; booleans also get --no-flag-name

    @property
    def parameter(self) -> str:
        return "cfg__" + self.key.replace(".", "__")


DISTILL_FLAGS = (
    Flag("data.spec", "--data"),
    Flag("seed", "--seed"),
    Flag("data.labeled_fraction", "--labeled-fraction"),
    Flag("data.class_weights", "--class-weights"),
    Flag("data.sampler", "--sampler"),
    Flag("teacher.train.epochs", "--teacher-epochs"),
    Flag("student.train.epochs", "--student-epochs"),
    Flag("teacher.weights", "--teacher-weights"),
    Flag("teacher.finetune", "--teacher-finetune"),
    Flag("distill.baseline", "--baseline"),
    Flag("device", "--device"),
    Flag("tensorboard", "--tensorboard"),
)
# the export's parity tolerances, which bench's parity gates apply to every backend too
PARITY_FLAGS = (
    Flag("export.parity_atol", "--parity-atol"),
    Flag("export.parity_rtol", "--parity-rtol"),
    Flag("export.fp16_atol", "--fp16-atol"),
    Flag("export.fp16_rtol", "--fp16-rtol"),
)
EXPORT_FLAGS = (
    Flag("export.fp16", "--fp16"),
    Flag("export.int8", "--int8"),
    Flag("export.trt_versions", "--trt-version"),
    Flag("export.calib_method", "--calib-method"),
    Flag("export.calib_images", "--calib-images"),
    Flag("export.int8_budget", "--int8-budget"),
    Flag("export.qat_epochs", "--qat-epochs"),
    Flag("export.qat_lr", "--qat-lr"),
    Flag("export.opset", "--opset"),
    Flag("export.simplify", "--simplify"),
    *PARITY_FLAGS,
    Flag("export.teacher", "--teacher"),
)
BUILD_FLAGS = (
    Flag("build.engines", "--engines"),
    Flag("build.int8_path", "--int8-path"),
    Flag("build.max_batch", "--max-batch"),
    Flag("build.workspace_mb", "--workspace-mb"),
    Flag("build.dla_core", "--dla-core"),
)
BENCH_FLAGS = (
    Flag("bench.batch_sizes", "--batch-size"),
    Flag("bench.iterations", "--iterations"),
    Flag("bench.warmup", "--warmup"),
    Flag("bench.duration_s", "--duration"),
    Flag("bench.threads", "--threads"),
    Flag("device", "--device"),
    Flag("bench.max_top1_drop", "--max-top1-drop"),
    Flag("bench.min_agreement", "--min-agreement"),
    Flag("bench.min_speedup", "--min-speedup"),
    *PARITY_FLAGS,
)


def _field(key: str) -> tuple[Any, str, Any]:
    """(annotation, description, recipe default) of a dotted key of RunConfig."""
    model: type[BaseModel] = RunConfig
    default: Any = RunConfig()
    *parents, leaf = key.split(".")
    for part in parents:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
        default = getattr(default, part)
    info = model.model_fields[leaf]
    if not info.description:
        raise TypeError(f"recipe key {key} has no description for its command-line help")
    return info.annotation, info.description, getattr(default, leaf)


def _option_type(annotation: Any) -> Any:
    """The type typer parses: X for X | None, str for a Literal, the base of an Annotated, list[X] for lists."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _option_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _option_type(inner[0])
    if origin is Literal:
        return str
    if origin is list:
        return list[_option_type(typing.get_args(annotation)[0])]
    return annotation


def describe(flag: Flag) -> str:
    """The flag's help: the field's description and, where it has one, the recipe default."""
    annotation, description, default = _field(flag.key)
    if typing.get_origin(annotation) is Literal:
        description += f" ({' | '.join(map(str, typing.get_args(annotation)))})"
    shown = "none" if default is None else default
    return f"{description} (recipe key {flag.key}, default {shown})"


def _parameter(flag: Flag) -> inspect.Parameter:
    kind = _option_type(_field(flag.key)[0])
    declarations = [f"{flag.name}/--no-{flag.name[2:]}"] if kind is bool else [flag.name]
    option = typer.Option(*declarations, help=describe(flag), show_default=False)
    return inspect.Parameter(flag.parameter, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, option])


def _as_override(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    return list(value) if isinstance(value, (list, tuple)) else value


def with_flags(*groups: tuple[Flag, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the groups' flags to a typer command, which receives the values given as ``overrides``."""
    flags = list({flag.key: flag for group in groups for flag in group}.values())

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "overrides"]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {flag.key: kwargs.pop(flag.parameter) for flag in flags}
            overrides = {key: _as_override(value) for key, value in given.items() if value not in (None, [])}
            return command(**kwargs, overrides=overrides)

        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*own, *(_parameter(flag) for flag in flags)])
        return wrapper

    return decorate
