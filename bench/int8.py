"""Benchmark of INT8 post-training quantisation: each calibration method, and the accuracy budget with per-layer
fallback, on distilled students over several seeds; writes JSON and prints a Markdown table.

For each seed the recipe is distilled once (or an existing run directory is reused with --runs), then exported
once per variant -- entropy, minmax and percentile calibration, `--int8-budget`, and with `--qat-epochs N` a QAT
row (distillation-aware QAT from the entropy ranges) -- with kd2trt's own export
(`kd2trt.onnx.stage.run_export`). Reported per variant: INT8 Q/DQ test top-1 against the FP32 graph (fake-quant
in ONNX Runtime at ORT_ENABLE_BASIC: TensorRT's arithmetic), the same graph under ONNX Runtime's default
optimisation level (the Q/DQ placement must not change the answer), and for the budget the method chosen and
the layers kept in higher precision -- chosen on the validation split; the test split only reports. Run from
the repository root:

    .venv/bin/python bench/int8.py                                   # pipeline/digits.yaml, seeds 0-2
    .venv/bin/python bench/int8.py --runs runs/zoo/mobilenet_v3_small-seed0 runs/zoo/resnet18-seed0
    .venv/bin/python bench/int8.py --zoo runs/bench-zoo --qat-epochs 2 --out bench/results/int8_zoo.json

Runs are summarised per student architecture (read from each checkpoint), so a zoo's seeds make one row each.
`--zoo WORK` takes the KD students bench/zoo.py left under WORK (seed*/ARCH/labels<--protocol>/student.pt).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from rich.console import Console

from kd2trt import __version__
from kd2trt.artifacts import atomic_write_json
from kd2trt.config import ExportConfig, load_config, parse_override
from kd2trt.distill.checkpoint import read_checkpoint
from kd2trt.distill.train import run_distill
from kd2trt.errors import Kd2trtError
from kd2trt.metrics import top1
from kd2trt.onnx.qdq import weighted_nodes
from kd2trt.onnx.runtime import OrtRunner
from kd2trt.onnx.stage import ExportRequest, ExportRun, run_export

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
METHODS = ("entropy", "minmax", "percentile")


def mean_sd(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def _default_level_top1(qdq: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """The Q/DQ graph's test top-1 under ONNX Runtime's default optimisation level (its integer kernels)."""
    with OrtRunner(qdq, fake_quant=False) as runner:
        return top1(runner.infer_many(images), labels)


def measure(checkpoint: Path, out: Path, budget: float, calib_images: int, qat_epochs: int = 0,
            qat_lr: float | None = None) -> dict[str, Any]:
    images, labels = ExportRun(ExportRequest(checkpoint), ExportConfig(), QUIET).split_images("test")
    variants: dict[str, Any] = {}
    plan: list[tuple[str, dict[str, Any]]] = [*((m, {"calib_method": m}) for m in METHODS),
                                               ("budget", {"int8_budget": budget})]
    if qat_epochs > 0:  # QAT from the default (entropy) PTQ ranges, every layer INT8
        plan.append(("qat", {"qat_epochs": qat_epochs, **({"qat_lr": qat_lr} if qat_lr else {})}))
    for name, extra in plan:
        started = time.perf_counter()
        config = ExportConfig(teacher=False, fp16=False, calib_images=calib_images, **extra)
        summary = run_export(ExportRequest(checkpoint, out / name), config, QUIET)
        preview, int8 = summary["preview"], summary["int8"]
        fp32 = next(v for k, v in preview["top1"].items() if "FP32" in k)
        qdq = next(v for k, v in preview["top1"].items() if "INT8" in k)
        variants[name] = {
            "quantized_layers": len(weighted_nodes(onnx.load(summary["onnx"]["path"]))),
            "method": int8["calibration"]["method"], "fp32_test_top1": fp32, "int8_test_top1": qdq,
            "test_drop_points": fp32 - qdq,
            "int8_default_ort_level_top1": _default_level_top1(Path(int8["qdq_onnx"]["path"]), images, labels),
            "high_precision_layers": int8["high_precision_layers"], "seconds": time.perf_counter() - started,
            **({"budget": int8["budget"]} if "budget" in int8 else {}),
            **({"qat": {k: v for k, v in int8["qat"].items() if k not in ("history", "ranges_trained")}}
               if "qat" in int8 else {}),
        }
    return variants


def summarise(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Mean ± sd over the runs of one student: each variant's drop, top-1, layers kept and methods chosen."""
    out: dict[str, Any] = {"fp32": mean_sd([r["entropy"]["fp32_test_top1"] for r in rows])}
    for name in names:
        out[name] = {
            "test_drop_points": mean_sd([r[name]["test_drop_points"] for r in rows]),
            "int8_test_top1": mean_sd([r[name]["int8_test_top1"] for r in rows]),
            "default_level_minus_basic": mean_sd([r[name]["int8_default_ort_level_top1"] - r[name]["int8_test_top1"]
                                                  for r in rows]),
            "layers_kept": mean_sd([float(len(r[name]["high_precision_layers"])) for r in rows]),
            "methods_chosen": sorted({r[name]["method"] for r in rows}),
            "seconds": mean_sd([r[name]["seconds"] for r in rows])}
        if name == "budget":
            out[name]["budget_met_on_val"] = sum(bool(r[name]["budget"]["met"]) for r in rows)
            out[name]["quantized_layers"] = mean_sd([float(r[name]["quantized_layers"]) for r in rows])
        if name == "qat":
            out[name]["qat"] = {key: mean_sd([r[name]["qat"][key] for r in rows])
                                for key in ("val_ptq_drop_points", "val_qat_drop_points", "test_ptq_drop_points",
                                            "test_qat_drop_points", "best_epoch", "seconds")}
    return out


def markdown(students: dict[str, Any], names: list[str], budget: float) -> str:
    """One row per student: FP32 top-1, each variant's drop (mean ± sd over seeds), layers the budget kept."""
    head = ["student", "runs", "FP32 top-1", *[f"{n} drop" for n in names], "layers kept (budget)",
            "default ORT level − fake-quant (budget)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for arch, s in students.items():
        cells = [f"`{arch}`", str(s["runs"]), f"{s['fp32']['mean']:.2f} ± {s['fp32']['sd']:.2f} %"]
        cells += [f"{s[n]['test_drop_points']['mean']:+.2f} ± {s[n]['test_drop_points']['sd']:.2f}" for n in names]
        b = s["budget"]
        cells += [f"{b['layers_kept']['mean']:.1f} of {b['quantized_layers']['mean']:.0f}",
                  f"{b['default_level_minus_basic']['mean']:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nDrops in test top-1 points vs the FP32 graph (positive: INT8 worse); budget {budget:g} points "
                 "on validation; fake-quant ONNX Runtime at ORT_ENABLE_BASIC.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("pipeline/digits.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runs", type=Path, nargs="*", help="existing run directories instead of distilling")
    parser.add_argument("--zoo", type=Path, default=None, help="bench/zoo.py's --work: its KD students' runs")
    parser.add_argument("--protocol", default="0.1", help="with --zoo: the labeled fraction of the runs taken")
    parser.add_argument("--students", default=None, help="with --zoo: comma-separated architectures (default all)")
    parser.add_argument("--budget", type=float, default=0.5, help="INT8 budget in top-1 points (validation)")
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument("--qat-epochs", type=int, default=0, help="also a QAT row: this many epochs (0: none)")
    parser.add_argument("--qat-lr", type=float, default=None, help="QAT learning rate (default export.qat_lr)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-int8"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/int8.json"))
    args = parser.parse_args()
    console = Console()
    overrides = dict(parse_override(text) for text in args.overrides)

    runs = list(args.runs or [])
    if args.zoo is not None:
        wanted = {a.strip().replace(":", "_") for a in args.students.split(",")} if args.students else None
        runs += sorted(p.parent for p in args.zoo.glob(f"seed*/*/labels{float(args.protocol)}/student.pt")
                       if wanted is None or p.parent.parent.name in wanted)
        if not runs:
            console.print(f"[red]error[/]: {args.zoo}: no seed*/ARCH/labels{float(args.protocol)}/student.pt; run "
                          f"bench/zoo.py --work {args.zoo} first")
            raise SystemExit(2)
    if not runs:
        for seed in range(args.seeds):
            run_dir = args.work / f"seed{seed}"
            if not (run_dir / "student.pt").is_file():
                run_distill(load_config(args.recipe, {**overrides, "seed": seed, "distill.baseline": False}),
                            run_dir, console=QUIET)
            runs.append(run_dir)
    # A long sweep (the zoo: 30 runs) is resumable: each measured run is kept in WORK/progress.json with the
    # settings it was measured under, and a rerun with the same settings measures only the runs not in it.
    settings = {"budget": args.budget, "calib_images": args.calib_images, "qat_epochs": args.qat_epochs,
                "qat_lr": args.qat_lr}
    progress_path = args.work / "progress.json"
    try:
        progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {}
    except ValueError as exc:
        console.print(f"[red]error[/]: {progress_path}: unreadable ({exc}); delete it to measure every run again")
        raise SystemExit(2) from None
    done = progress.get("runs", {}) if progress.get("settings") == settings else {}
    per_run: dict[str, Any] = {}
    groups: dict[str, list[str]] = {}
    for run_dir in runs:
        try:
            arch = read_checkpoint(run_dir / "student.pt")["model"]["arch"]
        except Kd2trtError as exc:  # a run directory without a readable student.pt: one line, exit 2
            console.print(f"[red]error[/]: {exc}")
            raise SystemExit(2) from None
        export_dir = args.work / "exports" / "-".join(run_dir.parts[-3:])
        if str(run_dir) in done:
            row = {k: v for k, v in done[str(run_dir)].items() if k != "arch"}
        else:
            row = measure(run_dir / "student.pt", export_dir, args.budget, args.calib_images, args.qat_epochs,
                          args.qat_lr)
        per_run[str(run_dir)] = {"arch": arch, **row}
        atomic_write_json(progress_path, {"settings": settings, "runs": {**done, **per_run}})
        groups.setdefault(arch, []).append(str(run_dir))
        console.print(f"{run_dir} ({arch}): " + "  ".join(f"{k} {v['test_drop_points']:+.2f}" for k, v in row.items())
                      + f"  (kept {len(row['budget']['high_precision_layers'])} layers)")
    names = [*METHODS, "budget", *(["qat"] if args.qat_epochs > 0 else [])]
    students = {arch: {"runs": len(members), **summarise([per_run[m] for m in members], names)}
                for arch, members in groups.items()}
    result = {"recipe": None if args.runs or args.zoo else str(args.recipe), "overrides": overrides,
              "zoo": str(args.zoo) if args.zoo else None, "protocol": args.protocol if args.zoo else None,
              "runs": per_run, "students": students, "budget_points": args.budget, "qat_epochs": args.qat_epochs,
              "qat_lr": args.qat_lr, "kd2trt": __version__,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    if len(students) == 1:  # one recipe: its summary at the top level too, as before
        result.update(summary=next(iter(students.values())), fp32_test_top1=next(iter(students.values()))["fp32"])
    result["markdown"] = markdown(students, names, args.budget)
    atomic_write_json(args.out, result)
    console.print(result["markdown"])
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
