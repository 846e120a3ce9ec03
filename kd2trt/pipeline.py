"""`kd2trt run RECIPE`: distill → export → engines → bench in one run directory, redoing only what changed.

Each finished stage writes `stages/<stage>.json`: the hash of the recipe sections it depends on, the
sha256 of its input files and of its outputs (keyed by their path relative to the run directory, or absolute
for files outside it such as `engines/<run>/`), the kd2trt version and seconds. A stage is up to date when that
manifest exists and every hash still matches — so a re-run after a crash, or after changing only the
bench section, skips straight to the work that is left. A manifest that cannot be read, or an input that
is gone, makes the stage out of date: it runs again (and reports a missing input as an error). The bench
stage also records its gates, so a run whose bench is up to date still fails on a failed gate.

Killing `kd2trt run` at any point is safe: every artifact is written atomically, distillation resumes from
its last epoch, and a stage without a manifest is simply run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from rich.console import Console

from kd2trt import __version__
from kd2trt.artifacts import sha256_file
from kd2trt.bench.stage import bench_stage
from kd2trt.config import RunConfig
from kd2trt.data import data_fingerprint
from kd2trt.distill.train import distill_stage
from kd2trt.errors import Kd2trtError
from kd2trt.layout import STAGES, RunLayout
from kd2trt.manifests import StageManifest, read_manifest, write_manifest
from kd2trt.onnx.stage import export_stage
from kd2trt.results import BenchRecord, StageResult
from kd2trt.trt.stage import engines_stage

__all__ = ["PIPELINE", "STAGES", "StageSpec", "run_pipeline", "up_to_date"]

#: a stage: (config, layout, console, resume) -> result; `resume` is False when the stage is forced to rerun
StageFn = Callable[[RunConfig, RunLayout, Console, bool], StageResult]


@dataclass(frozen=True)
class StageSpec:
    name: str
    sections: tuple[str, ...]                      # recipe sections whose change reruns the stage
    inputs: Callable[[RunConfig, RunLayout], list[Path]]
    run: StageFn
    record: type[BaseModel] | None = None          # the manifest's `record` must validate as this
    fingerprint: Callable[[RunConfig], str] | None = None  # of inputs that are not files (the data set)


def _key(path: Path, layout: RunLayout) -> str:
    """How a manifest names a file: relative to the run directory when inside it, else absolute."""
    absolute = path.absolute()
    try:
        return absolute.relative_to(layout.root.absolute()).as_posix()
    except ValueError:
        return str(absolute)


def _located(key: str, layout: RunLayout) -> Path:
    """The file a manifest key names (the inverse of `_key`)."""
    path = Path(key)
    return path if path.is_absolute() else layout.root / path


def _hash_files(paths: list[Path], layout: RunLayout) -> dict[str, str]:
    return {_key(path, layout): sha256_file(path) for path in paths}


def _hash_or_fail(paths: list[Path], layout: RunLayout, stage: str, what: str) -> dict[str, str]:
    """`_hash_files`, with a file that cannot be read (gone meanwhile) reported as one line."""
    hashes = {}
    for path in paths:
        try:
            hashes[_key(path, layout)] = sha256_file(path)
        except OSError as exc:
            raise Kd2trtError(f"{path}: {what} of the {stage} stage cannot be read ({exc.strerror or exc}); "
                              f"restore it (or fix the recipe) and run again") from None
    return hashes


def _data_fingerprint(config: RunConfig) -> str:
    return data_fingerprint(config.data)


def _teacher_weights(config: RunConfig, _: RunLayout) -> list[Path]:
    return [config.teacher.weights] if config.teacher.weights else []


def _checkpoints(_: RunConfig, layout: RunLayout) -> list[Path]:
    return [p for p in (layout.checkpoint("student"), layout.checkpoint("teacher")) if p.is_file()]


def _models(_: RunConfig, layout: RunLayout) -> list[Path]:
    return layout.exported()


def _models_and_engines(_: RunConfig, layout: RunLayout) -> list[Path]:
    """The bench's inputs: the run's models and the engines (with their manifests) it benches."""
    return layout.exported() + layout.engine_files()


PIPELINE = (
    StageSpec("distill", ("seed", "data", "teacher", "student", "distill"), _teacher_weights, distill_stage,
              fingerprint=_data_fingerprint),
    StageSpec("export", ("export",), _checkpoints, export_stage),
    StageSpec("engines", ("export", "build"), _models, engines_stage),
    StageSpec("bench", ("bench",), _models_and_engines, bench_stage, record=BenchRecord),
)


def _current_manifest(spec: StageSpec, config: RunConfig, layout: RunLayout) -> StageManifest | None:
    """The stage's manifest if it matches the current config, inputs and outputs; else None.

    Anything unexpected -- a manifest that is not a valid stage manifest, an input or output that is gone --
    makes the stage out of date rather than an error: it simply runs again.
    """
    try:
        manifest = read_manifest(layout.stage_manifest(spec.name), StageManifest, "stage manifest", "")
    except Kd2trtError:
        return None
    if manifest.config_hash != config.section_hash(*spec.sections):
        return None
    try:
        if spec.fingerprint is not None and manifest.fingerprint != spec.fingerprint(config):
            return None
    except Kd2trtError:  # the data cannot be listed now: run the stage, which says why
        return None
    if spec.record is not None:
        try:
            spec.record.model_validate(manifest.record)
        except ValidationError:
            return None
    try:
        if manifest.inputs != _hash_files(spec.inputs(config, layout), layout):
            return None
        if any(sha256_file(_located(key, layout)) != digest for key, digest in manifest.outputs.items()):
            return None
    except (OSError, ValueError):  # an input or output vanished, cannot be read, or a key is no path: run again
        return None
    return manifest


def up_to_date(spec: StageSpec, config: RunConfig, run_dir: Path) -> bool:
    """True when the stage's manifest matches the current config, inputs and outputs."""
    return _current_manifest(spec, config, RunLayout(Path(run_dir))) is not None


def run_pipeline(config: RunConfig, run_dir: Path | None = None, *, start: str | None = None,
                 only: str | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the stages in order; `start` forces that stage and the ones after it, `only` runs one stage.

    A forced stage starts from scratch (distillation does not resume its earlier state); an out-of-date one
    resumes where that is safe (a resume state written for the current recipe).
    """
    console = console or Console()
    layout = RunLayout(Path(run_dir or config.run_dir))
    for name in (start, only):
        if name is not None and name not in STAGES:
            raise Kd2trtError(f"unknown stage {name!r}: use one of {', '.join(STAGES)}")
    layout.root.mkdir(parents=True, exist_ok=True)
    forced = False
    outcomes: dict[str, Any] = {}
    for spec in PIPELINE:
        if only is not None and spec.name != only:
            continue
        forced = forced or spec.name == start or spec.name == only
        inputs = spec.inputs(config, layout)  # before the stage runs: they must exist now
        fingerprint = spec.fingerprint(config) if spec.fingerprint is not None else None  # the data as read
        current = None if forced else _current_manifest(spec, config, layout)
        if current is not None:
            console.print(f"[green]✓[/] {spec.name:8s} up to date ({layout.stage_manifest(spec.name)})")
            outcomes[spec.name] = {"status": "up to date", "record": current.record}
            continue
        console.rule(f"{spec.name}")
        started = time.perf_counter()
        outcome = spec.run(config, layout, console, not forced)
        seconds = time.perf_counter() - started
        if outcome.skipped_reason:
            console.print(f"[yellow]–[/] {spec.name:8s} skipped: {outcome.skipped_reason}")
            outcomes[spec.name] = {"status": "skipped", "reason": outcome.skipped_reason}
            continue
        manifest = StageManifest(stage=spec.name, config_hash=config.section_hash(*spec.sections),
                                 inputs=_hash_or_fail(inputs, layout, spec.name, "input"),
                                 outputs=_hash_or_fail(outcome.outputs, layout, spec.name, "output"),
                                 kd2trt=__version__, seconds=round(seconds, 2), summary=outcome.summary,
                                 fingerprint=fingerprint, record=outcome.record)
        write_manifest(layout.stage_manifest(spec.name), manifest)
        console.print(f"[green]✓[/] {spec.name:8s} {outcome.summary} ({seconds:.1f}s)")
        outcomes[spec.name] = {"status": "ran", "seconds": seconds, "summary": outcome.summary,
                               "result": outcome.report, "record": outcome.record}
    return outcomes
