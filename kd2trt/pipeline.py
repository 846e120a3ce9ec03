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

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from kd2trt import __version__
from kd2trt.artifacts import atomic_write_json, sha256_file
from kd2trt.config import RunConfig
from kd2trt.errors import Kd2trtError

STAGES = ("distill", "export", "engines", "bench")


@dataclass
class StageOutcome:
    """What a stage produced: its output files, and a one-line summary (or why it was skipped)."""

    outputs: list[Path]
    summary: str
    skipped_reason: str | None = None
    result: Any = None
    record: dict[str, Any] | None = None  # kept in the stage manifest, returned again while up to date


@dataclass(frozen=True)
class StageSpec:
    name: str
    sections: tuple[str, ...]                      # recipe sections whose change reruns the stage
    inputs: Callable[[RunConfig, Path], list[Path]]
    run: Callable[[RunConfig, Path, Console], StageOutcome]
    record_ok: Callable[[Any], bool] | None = None  # the manifest's `record` must pass this to be up to date


def default_engines_dir(run_dir: Path) -> Path:
    """Where a run's engines live by default: `engines/<run name>/`, relative to the working directory.

    The one definition used by the engines stage (which builds there), `kd2trt bench` (which looks there) and
    the pipeline's bookkeeping. The name is slugged as engine file names are; `.` or `..` use the directory's
    real name.
    """
    from kd2trt.trt.manifest import _slug

    name = run_dir.name
    if name in ("", ".", ".."):
        name = Path(os.path.abspath(run_dir)).name
    return Path("engines") / _slug(name)


def _key(path: Path, run_dir: Path) -> str:
    """How a manifest names a file: relative to the run directory when inside it, else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(os.path.abspath(run_dir)).as_posix()
    except ValueError:
        return str(absolute)


def _located(key: str, run_dir: Path) -> Path:
    """The file a manifest key names (the inverse of `_key`)."""
    path = Path(key)
    return path if path.is_absolute() else run_dir / path


def _hash_files(paths: list[Path], run_dir: Path) -> dict[str, str]:
    return {_key(path, run_dir): sha256_file(path) for path in paths}


def _hash_or_fail(paths: list[Path], run_dir: Path, stage: str, what: str) -> dict[str, str]:
    """`_hash_files`, with a file that cannot be read (gone meanwhile) reported as one line."""
    hashes = {}
    for path in paths:
        try:
            hashes[_key(path, run_dir)] = sha256_file(path)
        except OSError as exc:
            raise Kd2trtError(f"{path}: {what} of the {stage} stage cannot be read ({exc.strerror or exc}); "
                              f"restore it (or fix the recipe) and run again") from None
    return hashes


def _teacher_weights(config: RunConfig, _: Path) -> list[Path]:
    return [config.teacher.weights] if config.teacher.weights else []


def _checkpoints(_: RunConfig, run_dir: Path) -> list[Path]:
    return [p for p in (run_dir / "student.pt", run_dir / "teacher.pt") if p.is_file()]


def _models(_: RunConfig, run_dir: Path) -> list[Path]:
    return sorted(p for pattern in ("*.pt", "*.onnx", "*.cache")
                  for p in run_dir.glob(pattern) if not p.name.endswith(".last.pt"))


def _models_and_engines(config: RunConfig, run_dir: Path) -> list[Path]:
    """The bench's inputs: the run's models and the engines (with their manifests) it benches."""
    engines = default_engines_dir(run_dir)
    found = sorted(p for pattern in ("*.engine", "*.engine.json") for p in engines.glob(pattern) if p.is_file())
    return _models(config, run_dir) + found


def _run_distill(config: RunConfig, run_dir: Path, console: Console) -> StageOutcome:
    from kd2trt.distill.train import run_distill

    # resume is always safe here: a resume state written for another config is refused by its hash
    summary = run_distill(config, run_dir, resume=True, console=console)
    roles = ["teacher", "student"] + (["baseline"] if config.distill.baseline else [])
    text = f"student {summary['student']['test_top1']:.2f}% (teacher {summary['teacher']['test_top1']:.2f}%)"
    return StageOutcome([run_dir / f"{r}.pt" for r in roles] + [run_dir / "distill.json"], text, result=summary)


def _run_export(config: RunConfig, run_dir: Path, console: Console) -> StageOutcome:
    from kd2trt.onnx.stage import ExportRequest, run_export

    summary = run_export(ExportRequest(run_dir / "student.pt"), config.export, console)
    outputs = [Path(summary["onnx"]["path"]), run_dir / "student.export.json"]
    outputs += [Path(summary[key]["path"]) for key in ("teacher_onnx", "fp16") if key in summary]
    if "int8" in summary:
        outputs += [Path(summary["int8"]["qdq_onnx"]["path"])] + [Path(c["path"]) for c in summary["int8"]["caches"]]
    text = ", ".join(f"{k} {v:.2f}%" for k, v in summary["preview"]["top1"].items() if "ONNX" in k)
    return StageOutcome(outputs, text, result=summary)


def _run_engines(config: RunConfig, run_dir: Path, console: Console) -> StageOutcome:
    from kd2trt.trt.stage import build_engines

    return build_engines(config, run_dir, console, onnx_path=run_dir / "student.onnx", model="student",
                         checkpoint=run_dir / "student.pt", engines_dir=default_engines_dir(run_dir))


def _run_bench(config: RunConfig, run_dir: Path, console: Console) -> StageOutcome:
    from kd2trt.bench.stage import BenchRequest, run_bench

    result = run_bench(BenchRequest(run_dir, engines_dir=default_engines_dir(run_dir)), config.bench, console)
    failed = sum(not g["passed"] for g in result["gates"])
    text = f"{len(result['rows'])} rows" + (f", {failed} gate(s) failed" if failed else "")
    return StageOutcome([Path(p) for p in result["files"].values()], text, result=result,
                        record={"gates": result["gates"], "files": result["files"]})


def _bench_record_ok(record: Any) -> bool:
    """A bench manifest must carry its gates' outcome (and report files) to be up to date."""
    if not isinstance(record, dict):
        return False
    gates, files = record.get("gates"), record.get("files")
    return (isinstance(gates, list) and isinstance(files, dict)
            and all(isinstance(v, str) for v in files.values())
            and all(isinstance(g, dict) and isinstance(g.get("passed"), bool) and isinstance(g.get("message"), str)
                    for g in gates))


PIPELINE = (
    StageSpec("distill", ("seed", "data", "teacher", "student", "distill"), _teacher_weights, _run_distill),
    StageSpec("export", ("export",), _checkpoints, _run_export),
    StageSpec("engines", ("export", "build"), _models, _run_engines),
    StageSpec("bench", ("bench",), _models_and_engines, _run_bench, record_ok=_bench_record_ok),
)


def _manifest_path(run_dir: Path, stage: str) -> Path:
    return run_dir / "stages" / f"{stage}.json"


def _current_manifest(spec: StageSpec, config: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The stage's manifest if it matches the current config, inputs and outputs; else None.

    Anything unexpected — a manifest that is not UTF-8 JSON of an object, hashes of the wrong shape, an input
    or output that is gone — makes the stage out of date rather than an error: it simply runs again.
    """
    path = _manifest_path(run_dir, spec.name)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or unreadable; UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(manifest, dict) or manifest.get("config_hash") != config.section_hash(*spec.sections):
        return None
    inputs, outputs = manifest.get("inputs"), manifest.get("outputs")
    if not isinstance(inputs, dict) or not isinstance(outputs, dict) or not all(
            isinstance(key, str) and isinstance(digest, str) for key, digest in outputs.items()):
        return None
    if spec.record_ok is not None and not spec.record_ok(manifest.get("record")):
        return None
    try:
        if inputs != _hash_files(spec.inputs(config, run_dir), run_dir):
            return None
        if any(sha256_file(_located(key, run_dir)) != digest for key, digest in outputs.items()):
            return None
    except (OSError, ValueError):  # an input or output vanished, cannot be read, or a key is no path: run again
        return None
    return manifest


def up_to_date(spec: StageSpec, config: RunConfig, run_dir: Path) -> bool:
    """True when the stage's manifest matches the current config, inputs and outputs."""
    return _current_manifest(spec, config, run_dir) is not None


def run_pipeline(config: RunConfig, run_dir: Path | None = None, *, start: str | None = None,
                 only: str | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the stages in order; `start` forces that stage and the ones after it, `only` runs one stage."""
    console = console or Console()
    run_dir = Path(run_dir or config.run_dir)
    for name in (start, only):
        if name is not None and name not in STAGES:
            raise Kd2trtError(f"unknown stage {name!r}: use one of {', '.join(STAGES)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    forced = False
    outcomes: dict[str, Any] = {}
    for spec in PIPELINE:
        if only is not None and spec.name != only:
            continue
        forced = forced or spec.name == start or spec.name == only
        inputs = spec.inputs(config, run_dir)  # before the stage runs: they must exist now
        current = None if forced else _current_manifest(spec, config, run_dir)
        if current is not None:
            console.print(f"[green]✓[/] {spec.name:8s} up to date ({_manifest_path(run_dir, spec.name)})")
            outcomes[spec.name] = {"status": "up to date", "record": current.get("record")}
            continue
        console.rule(f"{spec.name}")
        started = time.perf_counter()
        outcome = spec.run(config, run_dir, console)
        seconds = time.perf_counter() - started
        if outcome.skipped_reason:
            console.print(f"[yellow]–[/] {spec.name:8s} skipped: {outcome.skipped_reason}")
            outcomes[spec.name] = {"status": "skipped", "reason": outcome.skipped_reason}
            continue
        manifest = {"stage": spec.name, "config_hash": config.section_hash(*spec.sections),
                    "inputs": _hash_or_fail(inputs, run_dir, spec.name, "input"),
                    "outputs": _hash_or_fail(outcome.outputs, run_dir, spec.name, "output"),
                    "kd2trt": __version__, "seconds": round(seconds, 2), "summary": outcome.summary}
        if outcome.record is not None:
            manifest["record"] = outcome.record
        atomic_write_json(_manifest_path(run_dir, spec.name), manifest)
        console.print(f"[green]✓[/] {spec.name:8s} {outcome.summary} ({seconds:.1f}s)")
        outcomes[spec.name] = {"status": "ran", "seconds": seconds, "summary": outcome.summary,
                               "result": outcome.result, "record": outcome.record}
    return outcomes
