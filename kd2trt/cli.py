"""The `kd2trt` command line: parse flags, load the recipe, run one stage, say where results went.

Errors caused by input (a missing file, a bad key, weights that do not fit) are `Kd2trtError`s
and end as one red line on stderr with exit code 2 — never a traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kd2trt import __version__
from kd2trt.errors import Kd2trtError

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


@contextlib.contextmanager
def _reported(interrupted: str) -> Iterator[None]:
    """Input errors → one red line and exit 2; Ctrl-C → `interrupted` and exit 130. Never a traceback."""
    try:
        yield
    except Kd2trtError as exc:
        _fail(_one_line(exc))
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


def _overrides(pairs: list[str] | None, **named: Any) -> dict[str, Any]:
    from kd2trt.config import parse_override

    overrides = dict(parse_override(pair) for pair in pairs or [])
    overrides.update({key: value for key, value in named.items() if value is not None})
    return overrides


@app.command()
def distill(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe YAML; default: the built-in digits recipe "
                                                  "(the values of pipeline/digits.yaml).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<name>).")] = None,
    data: Annotated[str | None, typer.Option(help="Data spec: digits, imagefolder:PATH, cifar10:ROOT, …")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of initialisation, shuffling and the labeled subset.")] = None,
    labeled_fraction: Annotated[float | None, typer.Option(
        help="Share of training labels the student sees; the teacher labels the rest.")] = None,
    teacher_epochs: Annotated[int | None, typer.Option(help="Epochs of teacher training.")] = None,
    student_epochs: Annotated[int | None, typer.Option(help="Epochs of the student (KD and baseline).")] = None,
    teacher_weights: Annotated[Path | None, typer.Option(help="Teacher state dict or checkpoint.")] = None,
    teacher_finetune: Annotated[bool | None, typer.Option(
        "--teacher-finetune/--no-teacher-finetune",
        help="Fine-tune --teacher-weights (head replaced if needed).")] = None,
    baseline: Annotated[bool | None, typer.Option(
        "--baseline/--no-baseline", help="Also train the student from scratch with the same budget.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue each stage from its last epoch's state.")] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    tensorboard: Annotated[bool | None, typer.Option("--tensorboard/--no-tensorboard")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override any recipe key: --set distill.alpha=0.7"
                                                   )] = None,
) -> None:
    """Train (or load) the teacher and distill the student; with a scratch baseline to measure the gain."""
    with _reported("interrupted; run the same command with --resume to continue from the last finished epoch"):
        from kd2trt.config import load_config
        from kd2trt.distill.distributed import shutdown_distributed
        from kd2trt.distill.train import run_distill

        config = load_config(recipe, _overrides(
            set_, **{"data.spec": data, "seed": seed, "data.labeled_fraction": labeled_fraction,
                     "teacher.train.epochs": teacher_epochs, "student.train.epochs": student_epochs,
                     "teacher.weights": str(teacher_weights) if teacher_weights else None,
                     "teacher.finetune": teacher_finetune, "distill.baseline": baseline, "device": device,
                     "tensorboard": tensorboard}))
        try:
            run_distill(config, out, resume=resume)
        finally:
            shutdown_distributed()


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `kd2trt distill` (student.pt, …).")],
    recipe: Annotated[Path | None, typer.Option(help="Recipe whose `export:` section to use (default: built-in).")
                      ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: the checkpoint's).")] = None,
    fp16: Annotated[bool | None, typer.Option("--fp16/--no-fp16", help="FP16 graph (and engine with TensorRT).")
                    ] = None,
    int8: Annotated[bool | None, typer.Option("--int8/--no-int8", help="Calibrate: Q/DQ graph, TensorRT cache, "
                                              "accuracy preview (and engine with TensorRT).")] = None,
    trt_version: Annotated[list[str] | None, typer.Option(
        help="Target TensorRT (repeatable): 8.5 (JetPack 5), 8.6 (JetPack 6.0), 10.3 (JetPack 6.1/6.2), or a full "
             "version such as 10.14.1 or 11.0."
    )] = None,
    calib_method: Annotated[str | None, typer.Option(help="entropy, minmax or percentile.")] = None,
    calib_images: Annotated[int | None, typer.Option(help="Calibration images from the train split.")] = None,
    calib_data: Annotated[Path | None, typer.Option(help=".npy/.npz of preprocessed N×C×H×W calibration images."
                                                    )] = None,
    calib_cache: Annotated[Path | None, typer.Option(help="Reuse this calibration cache (no data needed).")] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default 17: parsed by TensorRT 8.5-11.x).")] = None,
    simplify: Annotated[bool | None, typer.Option("--simplify/--no-simplify", help="onnxslim the graph.")] = None,
    teacher: Annotated[bool | None, typer.Option("--teacher/--no-teacher", help="Also export teacher.pt beside it.")
                       ] = None,
    force: Annotated[bool, typer.Option(
        help="Use --calib-cache even if made for another ONNX (or its manifest is unreadable).")] = False,
    engines: Annotated[bool | None, typer.Option("--engines/--no-engines",
                                                 help="Build TensorRT engines when TensorRT and a GPU are present.")
                       ] = None,
    int8_path: Annotated[str | None, typer.Option(help="auto (cache on <=10.x, Q/DQ on 11.x), cache or qdq.")
                         ] = None,
    max_batch: Annotated[int | None, typer.Option(help="Largest batch of the engines' optimisation profile.")
                         ] = None,
    workspace_mb: Annotated[int | None, typer.Option(help="TensorRT workspace (default 512 on Jetson, else 2048).")
                            ] = None,
    dla_core: Annotated[int | None, typer.Option(help="Jetson Orin DLA core (GPU fallback on).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe key: --set export.opset=13")
                    ] = None,
) -> None:
    """Export to ONNX (parity-checked), FP16 and INT8 graphs, TensorRT calibration caches; preview INT8 accuracy."""
    with _reported("interrupted; nothing was left half-written — run the command again"):
        from kd2trt.config import load_config
        from kd2trt.onnx.stage import ExportRequest, run_export

        config = load_config(recipe, _overrides(
            set_, **{"export.fp16": fp16, "export.int8": int8, "export.trt_versions": trt_version,
                     "export.calib_method": calib_method, "export.calib_images": calib_images,
                     "export.opset": opset, "export.simplify": simplify, "export.teacher": teacher,
                     "build.engines": engines, "build.int8_path": int8_path, "build.max_batch": max_batch,
                     "build.workspace_mb": workspace_mb, "build.dla_core": dla_core}))
        request = ExportRequest(checkpoint, out, calib_data, calib_cache, force)
        summary = run_export(request, config.export, _out)
        _print_preview(summary)
        from kd2trt.pipeline import default_engines_dir
        from kd2trt.trt.stage import build_engines

        onnx = Path(summary["onnx"]["path"])
        outcome = build_engines(config, onnx.parent, _out, onnx_path=onnx, model=summary["role"],
                                checkpoint=Path(summary["checkpoint"]), engines_dir=default_engines_dir(onnx.parent))
        if outcome.skipped_reason:
            _out.print(f"[yellow]engines skipped:[/] {outcome.skipped_reason}", highlight=False)
        else:
            _out.print(f"engines: {outcome.summary}: " + ", ".join(str(p) for p in outcome.outputs))


def _print_preview(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"accuracy preview — test split ({summary['preview']['test_images']} images)")
    table.add_column("model")
    table.add_column("top-1", justify="right")
    for name, value in summary["preview"]["top1"].items():
        table.add_row(name, f"{value:.2f}%")
    _out.print(table)
    if "int8_drop_points" in summary["preview"]:
        _out.print(f"INT8 (Q/DQ, fake-quant as TensorRT computes it) vs FP32: "
                   f"{-summary['preview']['int8_drop_points']:+.2f} points")
    _out.print(f"manifest: {Path(summary['onnx']['path']).with_suffix('.export.json')}")


@app.command()
def bench(
    run_dir: Annotated[Path, typer.Argument(help="A run directory of `kd2trt distill` (+ `kd2trt export`).")],
    recipe: Annotated[Path | None, typer.Option(help="Recipe whose `bench:` section to use (default: built-in).")
                      ] = None,
    out: Annotated[Path | None, typer.Option(help="Where report.md/json/png go (default: the run directory).")
                   ] = None,
    engines: Annotated[Path | None, typer.Option(help="Engine directory (default: engines/<run name>).")] = None,
    batch_size: Annotated[list[int] | None, typer.Option(help="Latency batch size (repeatable).")] = None,
    iterations: Annotated[int | None, typer.Option(help="Timed iterations per batch size.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Untimed warm-up iterations.")] = None,
    duration: Annotated[float | None, typer.Option(help="Time each batch size for at least this many seconds.")
                        ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for PyTorch and ONNX Runtime.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda for the PyTorch/ONNX Runtime runners.")
                      ] = None,
    max_top1_drop: Annotated[float | None, typer.Option(help="Gate: max top-1 points below the teacher.")] = None,
    min_agreement: Annotated[float | None, typer.Option(help="Gate: min % agreement with the teacher.")] = None,
    min_speedup: Annotated[float | None, typer.Option(help="Gate: min p50 speed-up over the teacher.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe key: --set bench.warmup=50")
                    ] = None,
) -> None:
    """Accuracy and latency of teacher, student and every exported form; report + gates (exit 1 on failure)."""
    with _reported("interrupted; no report was written"):
        from kd2trt.bench.stage import BenchRequest, run_bench
        from kd2trt.config import load_config

        config = load_config(recipe, _overrides(
            set_, **{"bench.batch_sizes": batch_size, "bench.iterations": iterations, "bench.warmup": warmup,
                     "bench.duration_s": duration, "bench.threads": threads, "bench.device": device,
                     "bench.max_top1_drop": max_top1_drop, "bench.min_agreement": min_agreement,
                     "bench.min_speedup": min_speedup}))
        result = run_bench(BenchRequest(run_dir, out, engines), config.bench, _out)
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
    recipe: Annotated[Path | None, typer.Argument(help="Recipe YAML (default: the built-in digits recipe).")
                      ] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<name>).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Rerun this stage and the ones after it.")] = None,
    only: Annotated[str | None, typer.Option(help="Run only this stage: distill, export, engines or bench.")
                    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override any recipe key: --set seed=3")] = None,
) -> None:
    """The whole pipeline — distill → export → engines → bench — skipping stages that are up to date."""
    with _reported("interrupted; run the same command again to continue where it stopped"):
        from kd2trt.config import load_config
        from kd2trt.distill.distributed import shutdown_distributed
        from kd2trt.pipeline import run_pipeline

        config = load_config(recipe, _overrides(set_))
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
