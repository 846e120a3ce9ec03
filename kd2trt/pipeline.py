"""`kd2trt run RECIPE`: distill → export → engines → bench in one run directory, redoing only what changed.

Each finished stage writes `stages/<stage>.json`: the hash of the recipe sections it depends on, the
sha256 of its input files and of its outputs, tool versions and seconds. A stage is up to date when that
manifest exists and every hash still matches — so a re-run after a crash, or after changing only the
bench section, skips straight to the work that is left. Killing `kd2trt run` at any point is safe: every
artifact is written atomically, distillation resumes from its last epoch, and a stage without a manifest
is simply run again.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class StageSpec:
    name: str
    sections: tuple[str, ...]                      # recipe sections whose change reruns the stage
    inputs: Callable[[RunConfig, Path], list[Path]]
    run: Callable[[RunConfig, Path, Console], StageOutcome]


def _hash_files(paths: list[Path]) -> dict[str, str]:
    return {path.name: sha256_file(path) for path in paths}


def _teacher_weights(config: RunConfig, _: Path) -> list[Path]:
    return [config.teacher.weights] if config.teacher.weights else []


def _checkpoints(_: RunConfig, run_dir: Path) -> list[Path]:
    return [p for p in (run_dir / "student.pt", run_dir / "teacher.pt") if p.is_file()]


def _models(_: RunConfig, run_dir: Path) -> list[Path]:
    return sorted(p for pattern in ("*.pt", "*.onnx", "*.cache")
                  for p in run_dir.glob(pattern) if not p.name.endswith(".last.pt"))


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

    return build_engines(config, run_dir, console)


def _run_bench(config: RunConfig, run_dir: Path, console: Console) -> StageOutcome:
    from kd2trt.bench.stage import BenchRequest, run_bench

    result = run_bench(BenchRequest(run_dir, engines_dir=engines_dir(config, run_dir)), config.bench, console)
    failed = sum(not g["passed"] for g in result["gates"])
    text = f"{len(result['rows'])} rows" + (f", {failed} gate(s) failed" if failed else "")
    return StageOutcome([Path(p) for p in result["files"].values()], text, result=result)


def engines_dir(config: RunConfig, run_dir: Path) -> Path:
    """The default home of built engines: `engines/<run name>/` (as `kd2trt bench` assumes too)."""
    return Path("engines") / run_dir.name


PIPELINE = (
    StageSpec("distill", ("seed", "data", "teacher", "student", "distill"), _teacher_weights, _run_distill),
    StageSpec("export", ("export",), _checkpoints, _run_export),
    StageSpec("engines", ("export",), _models, _run_engines),
    StageSpec("bench", ("bench",), _models, _run_bench),
)


def _manifest_path(run_dir: Path, stage: str) -> Path:
    return run_dir / "stages" / f"{stage}.json"


def up_to_date(spec: StageSpec, config: RunConfig, run_dir: Path) -> bool:
    """True when the stage's manifest matches the current config, inputs and outputs."""
    path = _manifest_path(run_dir, spec.name)
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    if manifest.get("config_hash") != config.section_hash(*spec.sections):
        return False
    inputs = spec.inputs(config, run_dir)
    if manifest.get("inputs") != _hash_files(inputs):
        return False
    outputs = [run_dir / name for name in manifest.get("outputs", {})]
    return all(p.is_file() for p in outputs) and _hash_files(outputs) == manifest["outputs"]


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
        if not forced and up_to_date(spec, config, run_dir):
            console.print(f"[green]✓[/] {spec.name:8s} up to date ({_manifest_path(run_dir, spec.name)})")
            outcomes[spec.name] = {"status": "up to date"}
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
                    "inputs": _hash_files(inputs), "outputs": _hash_files(outcome.outputs),
                    "kd2trt": __version__, "seconds": round(seconds, 2), "summary": outcome.summary}
        atomic_write_json(_manifest_path(run_dir, spec.name), manifest)
        console.print(f"[green]✓[/] {spec.name:8s} {outcome.summary} ({seconds:.1f}s)")
        outcomes[spec.name] = {"status": "ran", "seconds": seconds, "summary": outcome.summary,
                               "result": outcome.result}
    return outcomes
