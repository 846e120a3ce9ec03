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
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from kd2trt import __version__
from kd2trt.artifacts import atomic_write_json
from kd2trt.config import ExportConfig, load_config, parse_override
from kd2trt.distill.train import run_distill
from kd2trt.metrics import top1
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
            "method": int8["calibration"]["method"], "fp32_test_top1": fp32, "int8_test_top1": qdq,
            "test_drop_points": fp32 - qdq,
            "int8_default_ort_level_top1": _default_level_top1(Path(int8["qdq_onnx"]["path"]), images, labels),
            "high_precision_layers": int8["high_precision_layers"], "seconds": time.perf_counter() - started,
            **({"budget": int8["budget"]} if "budget" in int8 else {}),
            **({"qat": {k: v for k, v in int8["qat"].items() if k not in ("history", "ranges_trained")}}
               if "qat" in int8 else {}),
        }
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("pipeline/digits.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runs", type=Path, nargs="*", help="existing run directories instead of distilling")
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
    if not runs:
        for seed in range(args.seeds):
            run_dir = args.work / f"seed{seed}"
            if not (run_dir / "student.pt").is_file():
                run_distill(load_config(args.recipe, {**overrides, "seed": seed, "distill.baseline": False}),
                            run_dir, console=QUIET)
            runs.append(run_dir)
    per_run = {}
    for run_dir in runs:
        per_run[str(run_dir)] = measure(run_dir / "student.pt", args.work / "exports" / run_dir.name, args.budget,
                                        args.calib_images, args.qat_epochs, args.qat_lr)
        row = per_run[str(run_dir)]
        console.print(f"{run_dir}: " + "  ".join(f"{k} {v['test_drop_points']:+.2f}" for k, v in row.items())
                      + f"  (kept {len(row['budget']['high_precision_layers'])} layers)")
    names = [*METHODS, "budget", *(["qat"] if args.qat_epochs > 0 else [])]
    summary = {
        name: {"test_drop_points": mean_sd([r[name]["test_drop_points"] for r in per_run.values()]),
               "int8_test_top1": mean_sd([r[name]["int8_test_top1"] for r in per_run.values()]),
               "default_level_minus_basic": mean_sd([r[name]["int8_default_ort_level_top1"]
                                                     - r[name]["int8_test_top1"] for r in per_run.values()]),
               "layers_kept": mean_sd([float(len(r[name]["high_precision_layers"])) for r in per_run.values()]),
               "methods_chosen": sorted({r[name]["method"] for r in per_run.values()}),
               **({"qat": {key: mean_sd([r[name]["qat"][key] for r in per_run.values()])
                           for key in ("val_ptq_drop_points", "val_qat_drop_points", "test_ptq_drop_points",
                                       "test_qat_drop_points", "best_epoch", "seconds")}}
                  if name == "qat" else {})}
        for name in names}
    result = {"recipe": None if args.runs else str(args.recipe), "overrides": overrides, "runs": per_run,
              "summary": summary, "budget_points": args.budget, "qat_epochs": args.qat_epochs,
              "qat_lr": args.qat_lr, "kd2trt": __version__,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "fp32_test_top1": mean_sd([r["entropy"]["fp32_test_top1"] for r in per_run.values()])}
    atomic_write_json(args.out, result)
    console.print("| variant | method(s) | INT8 test top-1 | drop vs FP32 (points) | layers kept | default ORT level − "
                  "fake-quant |")
    console.print("|---|---|---:|---:|---:|---:|")
    for name in names:
        s = summary[name]
        console.print(f"| {name} | {', '.join(s['methods_chosen'])} | {s['int8_test_top1']['mean']:.2f} ± "
                      f"{s['int8_test_top1']['sd']:.2f} % | {s['test_drop_points']['mean']:+.2f} ± "
                      f"{s['test_drop_points']['sd']:.2f} | {s['layers_kept']['mean']:.1f} | "
                      f"{s['default_level_minus_basic']['mean']:+.2f} |")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
