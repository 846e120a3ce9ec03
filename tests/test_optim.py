"""The training stages' optimiser and schedule: warm-up, weight-decay groups, torch's fused kernels."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kd2trt.config import TrainConfig
from kd2trt.distill.optim import build_optimizer, build_scheduler, fused_kernel_available, lr_factor

TORCH_VERSION = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


def test_learning_rate_warms_up_then_follows_the_schedule() -> None:
    factor = lr_factor("cosine", 0.1, 100)
    assert [round(factor(s), 4) for s in range(3)] == [round(1 / 11, 4), round(2 / 11, 4), round(3 / 11, 4)]
    assert factor(9) == pytest.approx(10 / 11) and factor(10) == 1.0
    assert factor(55) == pytest.approx(0.5) and factor(100) == pytest.approx(0.0)
    assert lr_factor("constant", 0.1, 100)(50) == 1.0
    assert lr_factor("cosine", 0.0, 100)(0) == 1.0  # warm-up off: the old schedule
    params = [nn.Parameter(torch.zeros(2, 2))]
    config = TrainConfig(lr=0.01, warmup=0.05)
    optimizer = build_optimizer(params, config)
    build_scheduler(optimizer, config, total_steps=200)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 / 11)  # the first step is not a full-size one


@pytest.mark.skipif(TORCH_VERSION < (2, 4), reason="torch's fused CPU kernels for AdamW and SGD arrived in 2.4")
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_cpu_training_uses_the_fused_kernel(name: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer = build_optimizer(list(model.parameters()), TrainConfig(optimizer=name, lr=0.01))
    assert all(group["fused"] for group in optimizer.param_groups)
    assert fused_kernel_available("AdamW", "cpu") and fused_kernel_available("SGD", "cpu")


def test_no_fused_kernel_means_the_default_loop() -> None:
    assert not fused_kernel_available("AdamW", "cpu", torch.int64)  # integer parameters: no kernel, no crash
    assert not fused_kernel_available("Adadelta", "cpu")  # an optimiser without the keyword
    mixed = [nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2, dtype=torch.float64))]
    optimizer = build_optimizer(mixed, TrainConfig(lr=0.01))  # two dtypes: not what the probe checked
    assert not any(group["fused"] for group in optimizer.param_groups)


@pytest.mark.parametrize(("name", "momentum"), [("adamw", 0.9), ("sgd", 0.9), ("sgd", 0.0)])
def test_fused_and_default_updates_agree(name: str, momentum: float) -> None:
    """Same rule, same groups (decay on weights only): a few steps end within float rounding of each other."""
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(8, 6), nn.LayerNorm(6), nn.Linear(6, 3))
    config = TrainConfig(optimizer=name, lr=0.05, momentum=momentum, weight_decay=0.1)
    trained = []
    for fused in (None, False):
        model = copy.deepcopy(reference)
        optimizer = build_optimizer(list(model.parameters()), config, fused=fused)
        if fused is False:
            assert not any(group["fused"] for group in optimizer.param_groups)
        elif TORCH_VERSION >= (2, 4):
            assert all(group["fused"] for group in optimizer.param_groups)
        data = torch.Generator().manual_seed(1)
        for _ in range(5):
            optimizer.zero_grad()
            model(torch.randn(16, 8, generator=data)).square().mean().backward()
            optimizer.step()
        trained.append(model.state_dict())
    start = reference.state_dict()
    for key, value in trained[1].items():
        assert not torch.equal(value, start[key]), key  # every tensor moved, so the comparison means something
        torch.testing.assert_close(trained[0][key], value, rtol=1e-5, atol=1e-6)
