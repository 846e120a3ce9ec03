"""PyTorch → ONNX: dynamic batch, named I/O, one self-contained file, checked.

Exporter choice: the TorchScript exporter (`dynamo=False`). The dynamo exporter cannot go below
opset 18, and TensorRT 8.5/8.6 (JetPack 5 / 6.0) parse at most opset 17 — the default here, so one
ONNX file builds on every TensorRT line from 8.5 to 11.x. For the Conv-BN-ReLU students kd2trt makes,
the TorchScript graph is already minimal (BatchNorm folded, Conv/Relu/GlobalAveragePool/Gemm). Its
deprecation warnings and stdout chatter are captured, not shown.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
from torch import nn

from kd2trt.artifacts import atomic_path
from kd2trt.errors import Kd2trtError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17  # the highest opset TensorRT 8.5 parses (kd2trt.onnx.trt_ops.max_opset_for)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = DEFAULT_OPSET,
                validate: Callable[[Path], None] | None = None) -> Path:
    """Export `model` (eval mode, on the CPU) with a dynamic batch axis; run the full ONNX checker.

    `validate(tmp)` runs on the checked file before it is renamed to `path` (it may also rewrite it, e.g.
    simplify it): when it raises, nothing is left at `path`, so no later stage can pick up a graph that
    failed its checks.
    """
    if not 7 <= opset <= 23:
        raise Kd2trtError(f"--opset {opset}: the TorchScript exporter writes opsets 7-23; "
                          f"use {DEFAULT_OPSET} to cover TensorRT 8.5-11.x")
    model = model.eval().cpu()
    path = Path(path)
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example.cpu(),), str(tmp), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
        check_onnx(tmp, display=path)
        if validate is not None:
            validate(tmp)
    return path


def check_onnx(path: str | Path, display: str | Path | None = None) -> onnx.ModelProto:
    """Load and run `onnx.checker` (full check, shape inference included); errors name the file."""
    name = display or path
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise Kd2trtError(f"{name}: fails the ONNX checker ({str(exc).splitlines()[0][:200]}); "
                          "re-export it or report the model") from None
    except Exception as exc:  # a truncated or foreign file
        raise Kd2trtError(f"{name}: not a readable ONNX model ({type(exc).__name__}); re-export it") from None
    return model


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
