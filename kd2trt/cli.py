"""The `kd2trt` command line: parse flags, load the recipe, run one stage, say where results went.

Errors caused by input (a missing file, a bad key, weights that do not fit) are `Kd2trtError`s
and end as one red line on stderr with exit code 2 — never a traceback. So do file-system errors
(a full disk, a read-only or unwritable directory): exit 1 is reserved for a failed bench gate.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kd2trt import __version__
from kd2trt.cli_flags import BENCH_FLAGS, BUILD_FLAGS, DISTILL_FLAGS, EXPORT_FLAGS, with_flags
from kd2trt.errors import Kd2trtError, Kd2trtWarning

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distill a PyTorch model, export it to ONNX/TensorRT, and prove the result is still good.")
_err = Console(stderr=True)
_out = Console(soft_wrap=True)


def _one_line(exc: BaseException) -> str:
    """The message; for errors re-raised by DataLoader workers, the original message (their last line)."""
    text = str(exc).strip()
    return text.splitlines()[-1].split("Kd2trtError: ", 1)[-1] if "Original Traceback" in text else text


def _fail(message: str, code: int = 2) -> None:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _os_error(exc: OSError) -> str:
    """``<file>: <reason>`` of an OSError no writer turned into a Kd2trtError (both files for a rename)."""
    reason = exc.strerror or str(exc)
    files = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
    return f"{' -> '.join(files)}: {reason}" if files else reason


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None, *, default: Any) -> None:
    if issubclass(category, Kd2trtWarning):
        _err.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    else:
        default(message, category, filename, lineno, file, line)


@contextlib.contextmanager
def _reported(interrupted: str) -> Iterator[None]:
    """Input and file-system errors → one red line and exit 2; Ctrl-C → `interrupted` and exit 130. Never a
    traceback. Kd2trtWarnings meanwhile are printed as one yellow line each."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", Kd2trtWarning)
        warnings.showwarning = functools.partial(_show_warning, default=warnings.showwarning)
        try:
            yield
        except Kd2trtError as exc:
            _fail(_one_line(exc))
        except OSError as exc:
            _fail(_os_error(exc))
        except KeyboardInterrupt:
            _fail(interrupted, 130)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kd2trt {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """kd2trt: knowledge distillation → ONNX → TensorRT, with accuracy and latency checked at every step."""


def _overrides(pairs: list[str] | None, named: dict[str, Any]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs, then the named flags on top (a flag is the more specific request)."""
    from kd2trt.config import parse_override

    return {**dict(parse_override(pair) for pair in pairs or []), **named}


SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override any recipe key, e.g. --set "
                                                     "distill.alpha=0.7 (the value is read as YAML)")]
RecipeArgument = Annotated[Path | None, typer.Argument(help="Recipe YAML; default: the built-in digits recipe "
                                                       "(the values of pipeline/digits.yaml).")]
RecipeOption = Annotated[Path | None, typer.Option(help="Recipe YAML whose sections to use (default: built-in).")]


@app.command()
@with_flags(DISTILL_FLAGS)
def distill(
    recipe: RecipeArgument = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue each stage from its last epoch's state.")] = False,
    set_: SetOption = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Train (or load) the teacher and distill the student; with a scratch baseline to measure the gain."""
    with _reported("interrupted; run the same command with --resume to continue from the last finished epoch"):
        from kd2trt.config import load_config
        from kd2trt.distill.distributed import shutdown_distributed
        from kd2trt.distill.train import run_distill

        config = load_config(recipe, _overrides(set_, overrides or {}))
        try:
            run_distill(config, out, resume=resume)
        finally:
            shutdown_distributed()


@app.command()
@with_flags(EXPORT_FLAGS, BUILD_FLAGS)
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `kd2trt distill` (student.pt, …).")],
    recipe: RecipeOption = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: the checkpoint's).")] = None,
    calib_data: Annotated[Path | None, typer.Option(help=".npy/.npz of preprocessed N×C×H×W calibration images."
                                                    )] = None,
    calib_cache: Annotated[Path | None, typer.Option(help="Reuse this calibration cache (no data needed).")] = None,
    force: Annotated[bool, typer.Option(
        help="Use --calib-cache even if made for another ONNX (or its manifest is unreadable).")] = False,
    set_: SetOption = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Export to ONNX (parity-checked), FP16 and INT8 graphs, TensorRT calibration caches; preview INT8 accuracy."""
    with _reported("interrupted; nothing was left half-written — run the command again"):
        from kd2trt.config import load_config
        from kd2trt.layout import RunLayout
        from kd2trt.onnx.stage import ExportRequest, run_export
        from kd2trt.trt.stage import build_engines

        config = load_config(recipe, _overrides(set_, overrides or {}))
        request = ExportRequest(checkpoint, out, calib_data, calib_cache, force)
        summary = run_export(request, config.export, _out)
        _print_preview(summary)
        onnx = Path(summary["onnx"]["path"])
        outcome = build_engines(config, onnx.parent, _out, onnx_path=onnx, model=summary["role"],
                                checkpoint=Path(summary["checkpoint"]), engines_dir=RunLayout(onnx.parent).engines_dir)
        if outcome.skipped_reason:
            _out.print(f"[yellow]engines skipped:[/] {outcome.skipped_reason}", highlight=False)
        else:
            _out.print(f"engines: {outcome.summary}: " + ", ".join(str(p) for p in outcome.outputs))


def _print_preview(summary: dict[str, Any]) -> None:
    from rich.table import Table

    from kd2trt.layout import ModelFiles

    table = Table(title=f"accuracy preview — test split ({summary['preview']['test_images']} images)")
    table.add_column("model")
    table.add_column("top-1", justify="right")
    for name, value in summary["preview"]["top1"].items():
        table.add_row(name, f"{value:.2f}%")
    _out.print(table)
    if "int8_drop_points" in summary["preview"]:
        _out.print(f"INT8 (Q/DQ, fake-quant as TensorRT computes it) vs FP32: "
                   f"{-summary['preview']['int8_drop_points']:+.2f} points")
    _out.print(f"manifest: {ModelFiles.of_onnx(summary['onnx']['path']).export_summary}")


@app.command()
@with_flags(BENCH_FLAGS)
def bench(
    run_dir: Annotated[Path, typer.Argument(help="A run directory of `kd2trt distill` (+ `kd2trt export`).")],
    recipe: RecipeOption = None,
    out: Annotated[Path | None, typer.Option(help="Where report.md/json/png go (default: the run directory).")
                   ] = None,
    engines_dir: Annotated[Path | None, typer.Option(help="Engine directory (default: engines/<run name>).")] = None,
    set_: SetOption = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Accuracy and latency of teacher, student and every exported form; report + gates (exit 1 on failure)."""
    with _reported("interrupted; no report was written"):
        from kd2trt.bench.stage import BenchRequest, run_bench
        from kd2trt.config import load_config

        config = load_config(recipe, _overrides(set_, overrides or {}))
        from kd2trt.bench.report import ParityTolerances

        bench_config = config.bench_config()
        result = run_bench(BenchRequest(run_dir, out, engines_dir), bench_config, _out,
                           ParityTolerances.of(config.export, bench_config))
    for item in result["skipped"]:
        _out.print(f"[dim]skipped: {item}[/]")
    _report_and_gates(result["files"], result["gates"])


def _report_and_gates(files: dict[str, str], gates: list[dict[str, Any]]) -> None:
    """Where the report went and every gate's verdict; exit 1 if any gate failed (`bench` and `run`)."""
    _out.print("report: " + ", ".join(files.values()))
    for gate in gates:
        _out.print(f"{'[green]PASS' if gate['passed'] else '[red]FAIL'}[/] {gate['message']}", highlight=False)
    if any(not gate["passed"] for gate in gates):
        raise typer.Exit(1)


@app.command("run")
def run_recipe(
    recipe: RecipeArgument = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<name>).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Rerun this stage and the ones after it.")] = None,
    only: Annotated[str | None, typer.Option(help="Run only this stage: distill, export, engines or bench.")
                    ] = None,
    set_: SetOption = None,
) -> None:
    """The whole pipeline — distill → export → engines → bench — skipping stages that are up to date."""
    with _reported("interrupted; run the same command again to continue where it stopped"):
        from kd2trt.config import load_config
        from kd2trt.distill.distributed import shutdown_distributed
        from kd2trt.pipeline import run_pipeline

        config = load_config(recipe, _overrides(set_, {}))
        try:
            outcomes = run_pipeline(config, out, start=from_, only=only, console=_out)
        finally:
            shutdown_distributed()
    # the bench's gates, measured now or recorded by the up-to-date bench stage: a failed one fails the run again
    record = outcomes.get("bench", {}).get("record")
    if record:
        _report_and_gates(record["files"], record["gates"])


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print the environment as JSON.")] = False) -> None:
    """What this machine has (GPU, CUDA, TensorRT, ONNX Runtime, Jetson) and which stages can run here."""
    import json

    from kd2trt.doctor import collect_environment, format_report

    env = collect_environment()
    typer.echo(json.dumps(env, indent=2) if as_json else format_report(env))


def run() -> None:
    """Console-script entry point."""
    app(prog_name="kd2trt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
