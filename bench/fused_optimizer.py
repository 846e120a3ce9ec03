"""torch's fused AdamW / SGD kernels vs the default per-tensor loop, on the CPU: the optimiser step and a whole step.

Why: kd2trt's training stages use the fused kernel wherever this torch has one for the parameters' device
(`kd2trt.distill.optim`). This measures what that buys on the zoo's students as the zoo trains them: 32 px,
batch 32, channels_last (the CPU default), AdamW with weight decay on weights only, gradient clip 4.0, one torch
thread (what each of `bench/zoo.py --jobs 2`'s processes gets on 2 cores). The kernels are timed interleaved
(default, fused, default, …) so that other load hits both alike; medians are reported. Run from the repository
root:

    .venv/bin/python bench/fused_optimizer.py                    # writes bench/results/fused_optimizer.json
    .venv/bin/python bench/fused_optimizer.py --models resnet18 --optimizer sgd --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from channels_last import _cpu, _spec, time_interleaved

from kd2trt.artifacts import atomic_write_json
from kd2trt.config import TrainConfig
from kd2trt.distill import optim
from kd2trt.models import build_model

MODELS = ["mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_1",
          "efficientnet_b0", "resnet18", "regnet_x_400mf", "cnn"]
KERNELS = ("default", "fused")


def measure(arch: str, config: TrainConfig, size: int, batch: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Median seconds of `optimizer.step()` alone and of a whole training step, for each kernel."""
    torch.manual_seed(0)
    base = build_model(_spec(arch, 10)).to(memory_format=torch.channels_last)
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))
    fns: dict[str, dict[str, Callable[[], None]]] = {}
    for kernel in KERNELS:
        model = copy.deepcopy(base).train()
        params = list(model.parameters())
        optimizer = optim.build_optimizer(params, config, fused=None if kernel == "fused" else False)

        def whole_step(model: nn.Module = model, optimizer: torch.optim.Optimizer = optimizer,
                       params: list[nn.Parameter] = params) -> None:
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 4.0)
            optimizer.step()
        whole_step()  # gradients exist from here on, so `optimizer_step` alone has something to apply
        fns[kernel] = {"optimizer_step": optimizer.step, "train_step": whole_step,
                       "fused": all(group["fused"] for group in optimizer.param_groups)}
    out: dict[str, Any] = {"model": arch, "params": sum(p.numel() for p in base.parameters()),
                           "fused_kernel_used": fns["fused"]["fused"]}
    for mode in ("optimizer_step", "train_step"):
        times = time_interleaved({kernel: fns[kernel][mode] for kernel in KERNELS}, repeats, warmup)
        medians = {kernel: statistics.median(t) for kernel, t in times.items()}
        out[mode] = {f"{kernel}_median_s": medians[kernel] for kernel in KERNELS}
        out[mode]["speedup"] = medians["default"] / medians["fused"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fused_optimizer.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig(optimizer=args.optimizer, lr=1e-2, weight_decay=5e-4, momentum=0.9)
    load_before = os.getloadavg()
    rows = []
    for arch in args.models.split(","):
        row = measure(arch, config, args.size, args.batch, args.repeats, args.warmup)
        rows.append(row)
        opt, step = row["optimizer_step"], row["train_step"]
        print(f"{arch:20s} optimizer step {opt['default_median_s'] * 1e3:6.1f} → {opt['fused_median_s'] * 1e3:5.1f} ms"
              f"  whole step {step['default_median_s'] * 1e3:6.1f} → {step['fused_median_s'] * 1e3:6.1f} ms"
              f" (×{step['speedup']:.2f})", flush=True)
    atomic_write_json(args.out, {
        "what": "median seconds; speedup = default / fused (> 1: the fused kernel is faster)",
        "environment": {"cpu": _cpu(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "torch": torch.__version__, "load_average_before": load_before,
                        "load_average_after": os.getloadavg()},
        "optimizer": args.optimizer, "image_size": args.size, "batch": args.batch, "repeats": args.repeats,
        "warmup": args.warmup, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
