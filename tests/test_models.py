from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from kd2trt.errors import Kd2trtError
from kd2trt.models import (
    build_model,
    count_parameters,
    load_weights,
    model_spec,
    read_state_dict,
    resolve_module,
    strip_wrapper_prefixes,
    tapped,
)


def cnn(channels=(8, 16, 32), classes=10, in_channels=1) -> nn.Module:
    return build_model(model_spec("cnn", in_channels, classes, list(channels)))


def test_default_student_is_small_and_quantisable() -> None:
    model = cnn()
    assert count_parameters(model) < 10_000
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models_adapt_to_channels_and_classes(arch: str) -> None:
    model = build_model(model_spec(arch, 1, 7)).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_unknown_arch() -> None:
    with pytest.raises(Kd2trtError, match="not known"):
        build_model(model_spec("resnet_nonexistent", 1, 10))


def test_prefix_stripping() -> None:
    assert strip_wrapper_prefixes("module._orig_mod.layer1.0.weight") == "layer1.0.weight"
    assert strip_wrapper_prefixes("_orig_mod.module.fc.bias") == "fc.bias"


def test_feature_tap_through_wrappers() -> None:
    model = cnn()
    wrapped = nn.Module()
    wrapped.module = model  # what DDP looks like from outside
    assert resolve_module(wrapped, "module.stages.2") is model.stages[2]
    assert resolve_module(model, "_orig_mod.stages.1") is model.stages[1]
    with tapped(wrapped, "stages.2") as tap:
        model(torch.randn(2, 1, 16, 16))
        assert tap.take().shape == (2, 32, 4, 4)


def test_missing_tap_lists_choices() -> None:
    with pytest.raises(Kd2trtError, match=r"'layer3' is not a module of SmallCNN; choose one of: stages"):
        resolve_module(cnn(), "layer3", "teacher")


def test_load_weights_strict_and_finetune(tmp_path: Path) -> None:
    source = build_model(model_spec("resnet18", 3, 1000))
    path = tmp_path / "imagenet_like.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = build_model(model_spec("resnet18", 1, 10))
    with pytest.raises(Kd2trtError, match=r"takes 3-channel images but the data has 1 channel"):
        load_weights(target, path)
    gray = tmp_path / "gray_1000.pt"
    torch.save(build_model(model_spec("resnet18", 1, 1000)).state_dict(), gray)
    with pytest.raises(Kd2trtError, match=r"classifier has 1000 outputs but the data has 10 classes"):
        load_weights(target, gray)
    fresh = load_weights(target, path, finetune=True)
    assert fresh == ["fc.weight", "fc.bias"]
    expected_conv = source.conv1.weight.mean(dim=1, keepdim=True)
    assert torch.allclose(target.conv1.weight, expected_conv)
    assert torch.equal(target.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_load_weights_channel_mismatch_without_finetune(tmp_path: Path) -> None:
    path = tmp_path / "rgb.pt"
    torch.save(cnn(in_channels=3).state_dict(), path)
    with pytest.raises(Kd2trtError, match=r"takes 3-channel images but the data has 1 channel"):
        load_weights(cnn(in_channels=1), path)


def test_foreign_and_corrupt_weight_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(Kd2trtError, match=r"garbage\.pt: not a readable PyTorch checkpoint"):
        read_state_dict(garbage)
    other = tmp_path / "other.pt"
    torch.save({"epoch": 3}, other)
    with pytest.raises(Kd2trtError, match="holds no state dict"):
        read_state_dict(other)
    wrong_arch = tmp_path / "wrong.pt"
    torch.save(cnn(channels=(8, 16)).state_dict(), wrong_arch)
    with pytest.raises(Kd2trtError, match="does not match the teacher architecture"):
        load_weights(cnn(), wrong_arch)


def test_weights_only_refusal_is_one_line(tmp_path: Path) -> None:
    import datetime

    path = tmp_path / "pickled.pt"
    torch.save({"when": datetime.datetime(2020, 1, 1)}, path)  # torch.load(weights_only=True) refuses it
    with pytest.raises(Kd2trtError, match=r"pickled\.pt: not a readable PyTorch checkpoint \(.*\); re-save it with "
                                          r"torch\.save\(model\.state_dict\(\), path\)") as caught:
        read_state_dict(path)
    assert "\n" not in str(caught.value)


def test_probe_removes_the_relu_on_the_logits_and_the_spec_rebuilds_that_network(tmp_path: Path) -> None:
    from kd2trt.data import Preprocessing
    from kd2trt.distill.checkpoint import make_checkpoint, model_from_checkpoint, read_checkpoint
    from kd2trt.models import ProbeResult, probe_model

    torch.manual_seed(0)
    spec = model_spec("squeezenet1_1", 3, 10)
    squeeze = build_model(spec).eval()
    x = torch.randn(4, 3, 32, 32)
    pre_relu = squeeze.classifier[3](squeeze.classifier[1](squeeze.features(x))).flatten(1)
    assert (pre_relu < 0).any()  # what the ReLU would clip to 0
    assert probe_model(squeeze, 3, 32, "student", "squeezenet1_1").identity_modules == ["classifier.2"]
    assert isinstance(squeeze.classifier[2], nn.Identity)
    assert all(isinstance(m, nn.ReLU) for name, m in squeeze.features.named_modules() if "activation" in name)
    assert torch.allclose(squeeze(x), pre_relu, atol=1e-6)  # the logits, unrectified
    torch.save(make_checkpoint(
        "student", {**spec, "identity_modules": ["classifier.2"]}, squeeze.state_dict(), [str(i) for i in range(10)],
        {"spec": "digits", "image_size": 32, "val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0},
        Preprocessing(image_size=32, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3), {}), tmp_path / "student.pt")
    rebuilt = model_from_checkpoint(read_checkpoint(tmp_path / "student.pt"))
    assert torch.equal(rebuilt(x), squeeze(x))
    assert isinstance(build_model(spec).classifier[2], nn.ReLU)  # a spec without the record: torchvision's network
    for arch in ("resnet18", "mobilenet_v3_small", "cnn"):  # heads without a rectifier after the last layer
        model = build_model(model_spec(arch, 3, 10, [8, 16] if arch == "cnn" else None))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        assert probe_model(model, 3, 32, "teacher", arch) == ProbeResult([])
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    with pytest.raises(Kd2trtError, match=r"student 'squeezenet1_1' cannot take 16×16 images \(.*\); raise "
                                          r"data\.image_size") as info:
        probe_model(squeeze, 3, 16, "student", "squeezenet1_1")
    assert "\n" not in str(info.value)
    with pytest.raises(Kd2trtError, match=r"identity_modules names 'classifier\.9'"):
        build_model({**spec, "identity_modules": ["classifier.9"]})
    bad = tmp_path / "bad.pt"
    torch.save({**torch.load(tmp_path / "student.pt", weights_only=True),
                "model": {**spec, "identity_modules": ["classifier.9"]}}, bad)
    with pytest.raises(Kd2trtError, match=r"bad\.pt: model spec: identity_modules names 'classifier\.9'.*re-run") \
            as caught:
        model_from_checkpoint(read_checkpoint(bad), bad)
    assert "\n" not in str(caught.value)


def test_an_init_scaled_by_the_class_count_is_scaled_down_to_the_fan_in_default() -> None:
    from kd2trt.models import HEAD_SCALE_LIMIT, default_weight_std, fit_head_scale, probe_model

    torch.manual_seed(0)
    spec = model_spec("efficientnet_b0", 3, 10)
    model = build_model(spec)
    reference = build_model(spec)
    reference.load_state_dict(model.state_dict())
    head = model.classifier[1]
    drawn = head.weight.detach().clone()
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(16) % 10
    before = nn.functional.cross_entropy(reference.train()(x), labels)
    result = probe_model(model, 3, 32, "student", "efficientnet_b0")
    assert result.identity_modules == [] and result.head_rescale is not None
    assert result.head_rescale.path == "classifier.1"
    assert result.head_rescale.std_before / result.head_rescale.std_after > 10  # U(±1/√10) vs U(±1/√1280)
    assert float(head.weight.std()) == pytest.approx(default_weight_std(head.weight), rel=1e-4)
    torch.testing.assert_close(head.weight, drawn * (head.weight[0, 0] / drawn[0, 0]))  # scaled, not redrawn
    after = nn.functional.cross_entropy(model.train()(x), labels)
    assert before > 4.0 and after < 2.6  # chance: ln 10 = 2.30
    message = result.head_rescale.describe("student", "efficientnet_b0")
    assert "student 'efficientnet_b0': head classifier.1" in message and "student.head_init: architecture" in message
    # head_init: architecture — the probe leaves the architecture's own init
    kept = build_model(spec)
    kept.load_state_dict(reference.state_dict())
    assert probe_model(kept, 3, 32, "student", "efficientnet_b0", fit_head=False).head_rescale is None
    assert torch.equal(kept.classifier[1].weight, reference.classifier[1].weight)
    # the limit: a head below it is left bit-identical, one above it is scaled
    layer = nn.Linear(256, 10)
    with torch.no_grad():
        layer.weight.mul_(0.95 * HEAD_SCALE_LIMIT * default_weight_std(layer.weight) / layer.weight.std())
    near = layer.weight.detach().clone()
    assert fit_head_scale(layer, "fc") is None and torch.equal(layer.weight, near)
    with torch.no_grad():
        layer.weight.mul_(1.1)
    assert fit_head_scale(layer, "fc") is not None


def _dropout_rates(model: nn.Module) -> list[float]:
    return [module.p for module in model.modules() if isinstance(module, nn.Dropout)]


def test_dropout_sets_the_architectures_own_classifier_dropout_and_unset_keeps_it() -> None:
    """`dropout` reaches torchvision's builders (SqueezeNet's 0.5 before its final conv, MobileNetV3's 0.2), and
    unset it is left out of the spec: a checkpoint written before the knob rebuilds the same network."""
    assert _dropout_rates(build_model(model_spec("squeezenet1_1", 3, 10))) == [0.5]
    assert "dropout" not in model_spec("squeezenet1_1", 3, 10)
    assert _dropout_rates(build_model(model_spec("squeezenet1_1", 3, 10, dropout=0.0))) == [0.0]
    assert _dropout_rates(build_model(model_spec("mobilenet_v3_small", 3, 10, dropout=0.1))) == [0.1]
    assert _dropout_rates(build_model(model_spec("cnn", 1, 10, [8], dropout=None))) == [0.0]
    assert _dropout_rates(build_model(model_spec("cnn", 1, 10, [8], dropout=0.3))) == [0.3]


def test_dropout_on_an_architecture_without_one_is_a_one_line_error() -> None:
    with pytest.raises(Kd2trtError, match="'resnet18' has no classifier dropout to set") as caught:
        build_model(model_spec("resnet18", 3, 10, dropout=0.1))
    assert "\n" not in str(caught.value)


def test_dropout_reaches_timm_as_its_drop_rate() -> None:
    pytest.importorskip("timm", reason="timm is an optional extra (pip install -e '.[timm]')")
    assert build_model(model_spec("timm:mobilenetv3_small_050", 3, 10, dropout=0.1)).drop_rate == 0.1
