"""channels_last vs contiguous (NCHW) memory format on the CPU: a training step and an eval forward pass.

Why: an earlier measurement claimed 1.1–1.6× faster CPU training steps with channels_last for torchvision
models; `train.channels_last` defaults to what this script measures, not to that claim. Each (model, image
size) pair is timed in both formats with the repetitions interleaved (contiguous, channels_last, contiguous, …)
so that load from other processes on a shared machine hits both alike; min and median are reported, and the
speed-up is the ratio of medians (contiguous / channels_last: > 1 means channels_last is faster). Run from the
repository root:

    .venv/bin/python bench/channels_last.py                      # writes bench/results/channels_last.json
    .venv/bin/python bench/channels_last.py --models cnn,resnet18 --sizes 32 --repeats 5
    .venv/bin/python bench/channels_last.py --models digits-student,digits-teacher --sizes 16 --append
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd2trt.artifacts import atomic_write_json
from kd2trt.models import build_model, model_spec

MODELS = ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "efficientnet_b0", "cnn"]
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _spec(arch: str, classes: int) -> dict[str, Any]:
    """The zoo's students (torchvision names as they are, the built-in cnn at the zoo's size, 3 channels), and
    the default digits recipe's 1-channel student and teacher (`digits-student`, `digits-teacher`)."""
    if arch == "cnn":
        return model_spec("cnn", 3, classes, [16, 32, 64, 128], blocks=2)
    if arch == "digits-student":
        return model_spec("cnn", 1, classes, [8, 16, 32], blocks=1)
    if arch == "digits-teacher":
        return model_spec("cnn", 1, classes, [32, 64, 128], blocks=2)
    return model_spec(arch, 3, classes)


def _train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One optimiser step as the distill loop takes it: forward, CE, backward, AdamW step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def _eval_forward(model: nn.Module, images: torch.Tensor) -> Callable[[], None]:
    """A validation forward pass (what `predict` and, without the grad, BN recalibration do)."""
    def forward() -> None:
        model.eval()
        with torch.inference_mode():
            model(images)
    return forward


def _time(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def time_interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each of `fns` per repetition, run in turn (a, b, a, b, …) so other load hits them alike;
    the first `warmup` rounds are dropped."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(warmup + repeats):
        for name, fn in fns.items():
            seconds = _time(fn)
            if rep >= warmup:
                times[name].append(seconds)
    return times


def measure_pair(arch: str, size: int, batch: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Train-step and eval-forward seconds of one model at one size, in both formats, interleaved."""
    torch.manual_seed(0)
    spec = _spec(arch, 10)
    base = build_model(spec)
    images = torch.randn(batch, spec["in_channels"], size, size)
    labels = torch.randint(0, 10, (batch,))
    fns: dict[str, dict[str, Callable[[], None]]] = {}
    logits = {}
    for name, fmt in FORMATS.items():
        model = build_model(_spec(arch, 10))
        model.load_state_dict(base.state_dict())
        model = model.to(memory_format=fmt)
        x = images.contiguous(memory_format=fmt)
        with torch.inference_mode():
            logits[name] = model.eval()(x)
        fns[name] = {"train_step": _train_step(model, x, labels), "eval_forward": _eval_forward(model, x)}
    out: dict[str, Any] = {"model": arch, "image_size": size, "batch": batch,
                           "eval_max_abs_diff": float((logits["contiguous"] - logits["channels_last"]).abs().max())}
    for mode in ("train_step", "eval_forward"):
        times = time_interleaved({name: fns[name][mode] for name in FORMATS}, repeats, warmup)
        stats = {name: {"min_s": min(t), "median_s": statistics.median(t)} for name, t in times.items()}
        out[mode] = {**stats, "speedup_median": stats["contiguous"]["median_s"] / stats["channels_last"]["median_s"],
                     "speedup_min": stats["contiguous"]["min_s"] / stats["channels_last"]["min_s"]}
    return out


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sizes", default="32,64")
    parser.add_argument("--batch", type=int, default=64, help="data.batch_size's default")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own); 1 is steadier on a shared machine")
    parser.add_argument("--out", type=Path, default=Path("bench/results/channels_last.json"))
    parser.add_argument("--append", action="store_true", help="add the rows to those already in --out")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    earlier = json.loads(args.out.read_text()) if args.append and args.out.is_file() else None
    rows = list(earlier["rows"]) if earlier else []
    for arch in args.models.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            row = {**measure_pair(arch, size, args.batch, args.repeats, args.warmup),
                   "threads": torch.get_num_threads()}
            rows.append(row)
            print(f"{arch:20s} {size:3d}px  train ×{row['train_step']['speedup_median']:.2f} "
                  f"(contiguous {row['train_step']['contiguous']['median_s'] * 1e3:7.1f} ms)  "
                  f"eval ×{row['eval_forward']['speedup_median']:.2f} "
                  f"(contiguous {row['eval_forward']['contiguous']['median_s'] * 1e3:7.1f} ms)", flush=True)
    if earlier:
        earlier["rows"] = rows
        earlier.setdefault("appended", []).append({"models": args.models, "sizes": args.sizes, "batch": args.batch,
                                                   "threads": torch.get_num_threads(),
                                                   "load_average_before": load_before})
    result = earlier or {
        "what": "speed-up = contiguous median / channels_last median (> 1: channels_last faster)",
        "environment": {"cpu": _cpu(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "torch": torch.__version__, "load_average_before": load_before,
                        "load_average_after": os.getloadavg()},
        "repeats": args.repeats, "warmup": args.warmup, "rows": rows,
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
