"""Imbalanced classes: balanced accuracy and per-class recall, class-weighted CE, the balanced sampler, selection
by balanced accuracy, and the summaries that show them (distill.json and its table, the bench report)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from typer.testing import CliRunner

import kd2trt.distill.loop as loop
from kd2trt.bench.report import markdown
from kd2trt.cli import app
from kd2trt.config import TrainConfig, load_config
from kd2trt.data import write_digits_folder
from kd2trt.distill.checkpoint import read_checkpoint
from kd2trt.distill.distributed import DistContext
from kd2trt.distill.loop import Stage, fit
from kd2trt.distill.losses import DistillationLoss, hard_label_ce
from kd2trt.distill.sampling import BalancedSampler, balanced_class_weights, balanced_sample_weights
from kd2trt.distill.train import run_distill
from kd2trt.errors import Kd2trtError
from kd2trt.layout import RunLayout
from kd2trt.metrics import balanced_accuracy, class_counts, cross_entropy, is_imbalanced, per_class_recall
from tests.conftest import interrupt_after_writing, tiny_overrides

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


# ------------------------------------------------------------------------------------------------ metrics
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # sklearn's, on purpose here
def test_balanced_accuracy_is_sklearns_and_recall_marks_absent_classes() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=200, p=[0.7, 0.2, 0.1])
    logits = rng.normal(size=(200, 4)) + np.eye(4)[labels] * 1.5  # a fourth class never in the labels
    expected = 100.0 * balanced_accuracy_score(labels, logits.argmax(1))
    assert balanced_accuracy(logits, labels) == pytest.approx(expected)
    assert balanced_accuracy(torch.from_numpy(logits), torch.from_numpy(labels)) == pytest.approx(expected)
    recalls = per_class_recall(logits, labels)
    assert recalls[3] is None and len(recalls) == 4
    assert recalls[0] == pytest.approx(100.0 * (logits.argmax(1)[labels == 0] == 0).mean())
    # the majority-class answer: 75 % top-1, 50 % balanced accuracy
    majority = np.tile([5.0, 0.0], (4, 1))
    assert balanced_accuracy(majority, np.array([0, 0, 0, 1])) == 50.0
    assert class_counts([0, 0, 0, 1], 3) == [3, 1, 0]
    assert is_imbalanced([0, 0, 0, 1], 2) and not is_imbalanced([0, 1, 0, 1, 2, 2], 3)


def test_cross_entropy_is_torchs_and_its_balanced_form_averages_the_classes() -> None:
    rng = np.random.default_rng(1)
    labels = rng.choice(3, size=60, p=[0.7, 0.2, 0.1])
    logits = rng.normal(size=(60, 3)) * 4.0 + 50.0  # large logits: the log-sum-exp must be the stable one
    t_logits, t_labels = torch.from_numpy(logits), torch.from_numpy(labels)
    assert cross_entropy(logits, labels) == pytest.approx(nn.functional.cross_entropy(t_logits, t_labels).item())
    per_class = [nn.functional.cross_entropy(t_logits[t_labels == c], t_labels[t_labels == c]).item()
                 for c in range(3)]
    assert cross_entropy(t_logits, t_labels, balanced=True) == pytest.approx(np.mean(per_class))
    assert cross_entropy(np.zeros((0, 3)), np.zeros(0)) == 0.0


def test_class_weights_are_sklearns_balanced_and_weight_both_terms() -> None:
    labels = torch.tensor([0] * 30 + [1] * 90 + [2] * 15)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels.numpy())
    assert balanced_class_weights(labels, 3).numpy() == pytest.approx(expected)
    assert balanced_class_weights(torch.tensor([0, 0, 2]), 3).tolist() == pytest.approx([0.75, 0.0, 1.5])

    torch.manual_seed(0)
    logits, teacher = torch.randn(12, 3), torch.randn(12, 3)
    target = torch.tensor([0, 1, 1, 1, 2, 1, 1, 0, 1, 1, 1, 2])
    weights = balanced_class_weights(target, 3)
    per_item = nn.functional.cross_entropy(logits, target, reduction="none")
    weighted_mean = (per_item * weights[target]).sum() / weights[target].sum()
    assert hard_label_ce(logits, target, class_weights=weights) == pytest.approx(float(weighted_mean))
    plain = DistillationLoss(alpha=0.5)(logits, teacher, target)[1]
    labeled = torch.tensor([True, False] * 6)
    weighted = DistillationLoss(alpha=0.5, class_weights=weights)(logits, teacher, target, labeled)[1]
    assert weighted["ce"] != pytest.approx(plain["ce"])
    # the KD term: each item's KL weighted by its class (its label where labeled, else the teacher's top class)
    per_item_kl = (teacher.div(4).softmax(1) * (teacher.div(4).log_softmax(1) - logits.div(4).log_softmax(1))).sum(1)
    classes = torch.where(labeled, target, teacher.argmax(1))
    expected_kd = float((per_item_kl * weights[classes]).sum() / weights[classes].sum() * 16)
    assert weighted["kd"] == pytest.approx(expected_kd, rel=1e-5)
    assert plain["kd"] == pytest.approx(float(per_item_kl.mean() * 16), rel=1e-5)
    assert expected_kd != pytest.approx(plain["kd"], rel=1e-3)


# ------------------------------------------------------------------------------------------------ sampler
def test_balanced_sampler_is_seeded_balanced_and_splits_across_ranks() -> None:
    labels = torch.tensor([0] * 250 + [1] * 750)
    weights = balanced_sample_weights(labels)
    one = BalancedSampler(weights, seed=7)
    one.set_epoch(3)
    draw = list(one)
    again = BalancedSampler(weights, seed=7)
    again.set_epoch(3)
    assert list(again) == draw and len(draw) == 1000          # a function of (seed, epoch): a resume redraws it
    again.set_epoch(4)
    assert list(again) != draw
    minority = float((labels[draw] == 0).float().mean())
    assert 0.45 < minority < 0.55                              # 25 % of the items, half of the draws
    # three ranks: each a third (padded), together the one-process draw, interleaved as DistributedSampler does
    ranks = [BalancedSampler(weights, num_replicas=3, rank=r, seed=7) for r in range(3)]
    for sampler in ranks:
        sampler.set_epoch(3)
    parts = [list(sampler) for sampler in ranks]
    assert [len(p) for p in parts] == [334, 334, 334]
    merged = [parts[i % 3][i // 3] for i in range(1000)]
    assert merged == draw


def _fit(tmp_path: Path, model: nn.Module, train_set: list, val_set: list, config: TrainConfig, console: Console,
         step, **stage_options) -> loop.FitResult:
    stage = Stage("student", config, model, model, train_set, step, lambda m, _: {"state": m.state_dict()}, "h",
                  **stage_options)
    return fit(stage, val_set, CPU, RunLayout(tmp_path), seed=0, batch_size=50, num_workers=0, resume=False,
               console=console)


class _Constant(nn.Module):
    """Logits from a parameter only, so that a test's step function decides what the model predicts."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(images), -1) + 0.0 * images.flatten(1).sum(1, keepdim=True)


def test_fit_draws_balanced_batches_with_sample_weights(tmp_path: Path) -> None:
    labels = [0] * 25 + [1] * 75
    data = [(torch.zeros(1, 2, 2), label, i) for i, label in enumerate(labels)]
    seen: dict[str, list[int]] = {"random": [], "balanced": []}
    config = TrainConfig(epochs=4, bn_recalibration_images=0)
    for mode, weights in (("random", None), ("balanced", balanced_sample_weights(torch.tensor(labels)))):
        def step(module, batch, mode=mode):
            seen[mode] += batch[1].tolist()
            return module(batch[0]).sum() * 0.0, {}
        _fit(tmp_path / mode, _Constant(), data, data, config, Console(file=io.StringIO()), step,
             sample_weights=weights)
    assert np.mean(np.array(seen["random"]) == 0) == 0.25    # a shuffle: every item once per epoch
    assert 0.4 < np.mean(np.array(seen["balanced"]) == 0) < 0.6


class _ScriptedByEpoch(nn.Module):
    """Logits scripted per epoch, `logits_of(epoch, item indices)`; one batch per epoch (`_next_epoch`) moves it on.
    The four validation images carry their index as their only pixel."""

    def __init__(self, logits_of) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.epoch = 0
        self.logits_of = logits_of

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_of(self.epoch, images.flatten().long()) + self.weight * 0.0


def _next_epoch(module, batch):
    module.epoch += 1  # one batch per epoch
    return module(batch[0]).sum() * 0.0, {}


SCRIPTED_VAL = [(torch.full((1, 1, 1), float(i)), label, i) for i, label in enumerate([0, 0, 0, 1])]


def test_best_epoch_is_chosen_by_the_selection_metric(tmp_path: Path) -> None:
    """Epoch 1 answers the majority class (75 % top-1, 50 % balanced); epoch 2 finds the minority at a cost
    (50 % top-1, 66.7 % balanced). top1 keeps epoch 1, balanced_accuracy epoch 2."""
    answers = {1: torch.tensor([0, 0, 0, 0]), 2: torch.tensor([0, 1, 1, 1])}

    def logits_of(epoch: int, index: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(answers.get(epoch, answers[1])[index], 2).float() * 5.0

    config = TrainConfig(epochs=2, bn_recalibration_images=0)
    for metric, best in (("top1", 1), ("balanced_accuracy", 2)):
        out = io.StringIO()
        result = _fit(tmp_path / metric, _ScriptedByEpoch(logits_of), SCRIPTED_VAL, SCRIPTED_VAL, config,
                      Console(file=out, width=200), _next_epoch, select_metric=metric)
        assert result.best_epoch == best, metric
        assert [h["val_balanced_accuracy"] for h in result.history] == pytest.approx([50.0, 200 / 3])
        assert ("bal. acc" in out.getvalue()) == (metric == "balanced_accuracy")


def test_a_tie_on_the_selection_metric_goes_to_the_lower_validation_loss(tmp_path: Path) -> None:
    """Three epochs answer every validation image right (the same top-1 and balanced accuracy) at logit scales
    1, 4 and 2: epoch 2 is the most confidently right, the lowest loss, and is kept — not the first of the tied
    epochs (the rule before the tie-break) nor the last."""
    scales = {1: 1.0, 2: 4.0, 3: 2.0}

    def logits_of(epoch: int, index: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.tensor([0, 0, 0, 1])[index], 2).float() * scales[epoch]

    config = TrainConfig(epochs=3, bn_recalibration_images=0)
    for metric in ("top1", "balanced_accuracy"):
        result = _fit(tmp_path / metric, _ScriptedByEpoch(logits_of), SCRIPTED_VAL, SCRIPTED_VAL, config,
                      Console(file=io.StringIO()), _next_epoch, select_metric=metric)
        assert [h[f"val_{metric}"] for h in result.history] == [100.0] * 3
        losses = [h["val_loss"] for h in result.history]
        assert losses[1] < losses[2] < losses[0]
        assert result.best_epoch == 2, metric


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def imbalanced_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two digit classes at 1:3, grey, 8 px: the chest-X-ray case in miniature."""
    return write_digits_folder(tmp_path_factory.mktemp("imbalanced"), image_size=8, channels=1, digits=[0, 1],
                               per_class=[40, 120])


def _imbalanced(folder: Path, **extra: object) -> dict[str, object]:
    return tiny_overrides(**{"data.spec": f"imagefolder:{folder}", "data.labeled_fraction": 0.5,
                             "data.class_weights": "balanced", "data.sampler": "balanced",
                             "data.batch_size": 32, "student.train.epochs": 3, **extra})


def test_distill_with_imbalance_options_reports_and_resumes_bit_identically(
        imbalanced_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = _imbalanced(imbalanced_folder, **{"distill.baseline": False})
    out = io.StringIO()
    summary = run_distill(load_config(None, overrides), tmp_path / "straight", console=Console(file=out, width=200))
    assert summary["test_imbalanced"] is True and summary["test_class_counts"] == {"digit_0": 8, "digit_1": 24}
    for role in ("teacher", "student"):
        assert summary[role]["select_metric"] == "balanced_accuracy"
        assert set(summary[role]["test_per_class_recall"]) == {"digit_0", "digit_1"}
        assert summary[role]["test_balanced_accuracy"] == pytest.approx(
            np.mean(list(summary[role]["test_per_class_recall"].values())))
    assert "test bal. acc" in out.getvalue() and "test recall per class" in out.getvalue()
    on_disk = json.loads((tmp_path / "straight" / "distill.json").read_text())
    assert on_disk["student"]["test_balanced_accuracy"] == summary["student"]["test_balanced_accuracy"]

    real_write = interrupt_after_writing(monkeypatch, loop, "student.metrics.json")  # after the first epoch
    with pytest.raises(KeyboardInterrupt):
        run_distill(load_config(None, overrides), tmp_path / "resumed", console=Console(file=io.StringIO()))
    monkeypatch.setattr(loop, "atomic_write_json", real_write)
    resumed = run_distill(load_config(None, overrides), tmp_path / "resumed", resume=True,
                          console=Console(file=io.StringIO()))
    assert resumed["student"]["resumed_from_epoch"] == 1
    straight = read_checkpoint(tmp_path / "straight" / "student.pt")["state_dict"]
    again = read_checkpoint(tmp_path / "resumed" / "student.pt")["state_dict"]
    for key in straight:
        assert torch.equal(straight[key], again[key]), key


def test_balanced_tables_stay_as_they_were(tmp_path: Path) -> None:
    """Digits (a balanced test split, options off): no balanced-accuracy column in the console table."""
    out = io.StringIO()
    summary = run_distill(load_config(None, tiny_overrides(**{"distill.baseline": False, "student.train.epochs": 1,
                                                               "teacher.train.epochs": 1})),
                          tmp_path, console=Console(file=out, width=200))
    assert summary["test_imbalanced"] is False and summary["student"]["select_metric"] == "top1"
    assert "bal. acc" not in out.getvalue() and "test_balanced_accuracy" in summary["student"]


# ------------------------------------------------------------------------------------------------ bench report
def _report(imbalanced: bool) -> dict:
    row = {"model": "student", "backend": "pytorch", "precision": "fp32", "device": "cpu", "params": 10,
           "file_bytes": None, "delta_top1_vs_teacher": -1.0, "speedup_vs_teacher": 2.0,
           "accuracy": {"top1": 75.0, "balanced_accuracy": 50.0, "agreement_with_teacher": 99.0,
                        "per_class_recall": {"normal": 0.0, "pneumonia": 100.0}},
           "latency": {"1": {"host": {"median_ms": 0.5, "p99_ms": 0.9}, "throughput_ips": 2000.0}}}
    return {"run": "r", "batch_sizes": [1], "test_images": 4, "data_spec": "imagefolder:x", "num_classes": 2,
            "classes": ["normal", "pneumonia"], "class_counts": {"normal": 1, "pneumonia": 3},
            "test_imbalanced": imbalanced, "protocol": "p", "environment": {"machine": "cpu"}, "rows": [row]}


def test_bench_markdown_shows_balanced_accuracy_and_recall_only_when_imbalanced() -> None:
    text = markdown(_report(True))
    assert "Imbalanced classes (normal 1, pneumonia 3)" in text
    assert "| top-1 | bal. acc | Δ vs teacher |" in text and "| 75.00% | 50.00% | -1.00 |" in text
    assert "| student | pytorch | fp32 | 0.0% | 100.0% |" in text
    header, rule, body, *_ = [line for line in text.splitlines() if line.startswith("|")]
    assert header.count("|") == rule.count("|") == body.count("|")
    plain = markdown(_report(False))
    assert "bal. acc" not in plain and "Per-class recall" not in plain


# ------------------------------------------------------------------------------------------------ config, CLI
def test_config_fields_and_flags() -> None:
    config = load_config(None, {"data.class_weights": "balanced", "data.sampler": "balanced",
                                "student.train.select_metric": "top1"})
    assert (config.data.class_weights, config.data.sampler, config.student.train.select_metric) == \
        ("balanced", "balanced", "top1")
    with pytest.raises(Kd2trtError, match=r"data\.sampler: Input should be 'random' or 'balanced'"):
        load_config(None, {"data.sampler": "weighted"})
    text = CliRunner().invoke(app, ["distill", "--help"], env={"COLUMNS": "200"}).output
    assert "--class-weights" in text and "--sampler" in text
