"""Benchmark of `kd2trt export` on the default recipe; writes JSON.

Parity (PyTorch vs ONNX Runtime), FP16 parity, INT8 accuracy preview vs FP32 (target: drop ≤ 0.5
points), calibration and export times, and the round trip of the three real TensorRT calibration
caches in ../shared/fixtures (byte-exact). Run from the repository root:

    .venv/bin/python bench/export.py                   # distills runs/bench-export/ first if needed
    .venv/bin/python bench/export.py --checkpoint runs/digits/student.pt   # exports into --work, not runs/digits/
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console

from kd2trt.artifacts import atomic_write_json
from kd2trt.config import load_config
from kd2trt.distill.train import run_distill
from kd2trt.onnx.calib_cache import parse_cache
from kd2trt.onnx.stage import ExportRequest, run_export

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "trt-calibration-caches"


def fixture_round_trips() -> dict[str, object]:
    if not FIXTURES.is_dir():
        return {"skipped": f"{FIXTURES} not found"}
    results = {}
    for path in sorted(FIXTURES.glob("*.cache")):
        text = path.read_text()
        cache = parse_cache(text, str(path))
        results[path.name] = {"header": cache.header, "entries": len(cache.scales),
                              "byte_exact_round_trip": cache.to_text() == text}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("pipeline/digits.yaml"))
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-export"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/export.json"))
    args = parser.parse_args()
    console = Console()
    config = load_config(args.recipe, {"export.trt_versions": ["8.5", "8.6", "10.3", "11.0"]})
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = args.work / "student.pt"
        if not checkpoint.is_file():
            run_distill(config, args.work, console=Console(file=open(os.devnull, "w")))  # noqa: SIM115
    summary = run_export(ExportRequest(checkpoint, out_dir=args.work), config.export, console)
    preview = summary["preview"]
    result = {
        "recipe": str(args.recipe), "checkpoint": str(checkpoint),
        "onnx": {k: summary["onnx"][k] for k in ("opset", "nodes", "nodes_before_simplify", "parity")
                 if k in summary["onnx"]},
        "fp16_parity_vs_fp32": summary["fp16"]["parity_vs_fp32"],
        "int8": {"calibration": summary["int8"]["calibration"], "caches": summary["int8"]["caches"],
                 "tensors": summary["int8"]["tensors"], "vs_fp32": preview["int8_vs_fp32"],
                 "drop_points": preview["int8_drop_points"],
                 "target_drop_at_most_0_5_points": preview["int8_drop_points"] <= 0.5},
        "test_top1": preview["top1"], "test_images": preview["test_images"],
        "timings_seconds": summary["timings"], "preflight": summary["preflight"],
        "trt_fixture_caches": fixture_round_trips(), "tools": summary["tools"],
    }
    atomic_write_json(args.out, result)
    console.print_json(data={k: result[k] for k in ("onnx", "fp16_parity_vs_fp32", "int8", "test_top1",
                                                    "timings_seconds", "trt_fixture_caches")})
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
