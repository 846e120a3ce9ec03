"""`kd2trt distill`: teacher (trained, fine-tuned or loaded) → KD student, and the scratch baseline.

Protocol (the default recipe): the teacher learns from every training label; the student sees the
labels of only `data.labeled_fraction` of the training split, while the distillation terms use
every training image — the teacher labels the rest. The baseline is the same student trained from
scratch on the labeled part alone, with the same number of optimiser steps, so `distill.json`
measures what distillation adds instead of claiming it.

Imbalanced classes (`data.class_weights`, `data.sampler`): each stage counts the labels it may use — the
teacher every training label, the baseline the labeled subset, the KD student its labeled subset for the CE
weights and, for the sampler, those labels plus the teacher's predictions on the unlabeled rest (their true
labels are exactly what the student is not given). With either option on, the best epoch is chosen by validation
balanced accuracy (`train.select_metric: auto`), since top-1 rewards favouring the majority class; the summary
reports balanced accuracy and per-class recall beside top-1.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, Subset

from kd2trt.artifacts import atomic_write_json, atomic_write_text, ensure_directory, remove_stale_temp_files
from kd2trt.config import ModelConfig, RunConfig, TrainConfig, dump_config
from kd2trt.data import DataSplits, ImageDataset, labeled_mask, load_data, split_record
from kd2trt.distill.checkpoint import make_checkpoint
from kd2trt.distill.distributed import DistContext, init_distributed
from kd2trt.distill.loop import FitResult, Resume, SelectMetric, Stage, WallClock, fit, use_channels_last
from kd2trt.distill.losses import DistillationLoss, HintAdapter, hard_label_ce
from kd2trt.distill.sampling import balanced_class_weights, balanced_sample_weights
from kd2trt.errors import Kd2trtError
from kd2trt.evaluation import predict
from kd2trt.layout import RunLayout
from kd2trt.metrics import balanced_accuracy, class_counts, is_imbalanced, per_class_recall, top1
from kd2trt.models import (
    FeatureTap,
    build_model,
    count_parameters,
    load_weights,
    model_spec,
    probe_model,
    tapped,
)
from kd2trt.results import StageResult
from kd2trt.torch_io import atomic_torch_save


@dataclass
class TeacherOutputs:
    """The teacher's logits (and hint features) for every training image, computed once.

    Valid only when the training transform is deterministic: then epoch k's image i is the same
    tensor as epoch 0's and so is the teacher's answer, and a distillation epoch costs about what
    training the student alone costs.
    """

    logits: torch.Tensor
    features: torch.Tensor | None

    @classmethod
    @torch.no_grad()
    def compute(cls, teacher: nn.Module, dataset: ImageDataset, device: torch.device, tap_path: str | None
                ) -> TeacherOutputs:
        teacher.eval()
        logits, features = [], []
        tap = FeatureTap(teacher, tap_path, "teacher") if tap_path else None
        try:
            for images, _, _ in DataLoader(dataset, batch_size=256, shuffle=False):
                logits.append(teacher(images.to(device)).float())
                if tap is not None:
                    features.append(tap.take().float())
        finally:
            if tap is not None:
                tap.remove()
        return cls(torch.cat(logits), torch.cat(features) if tap is not None else None)


class StudentWithAdapter(nn.Module):
    """The student plus the hint adapter, as one module so DDP synchronises the adapter's gradients too."""

    def __init__(self, student: nn.Module, tap_path: str | None, adapter: HintAdapter | None):
        super().__init__()
        self.student = student
        self.adapter = adapter
        self._tap = FeatureTap(student, tap_path, "student") if adapter is not None and tap_path else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.student(images)
        adapted = self.adapter(self._tap.take()) if self._tap is not None and self.adapter is not None else None
        return logits, adapted


@dataclass
class SplitScores:
    """A model's figures on one split: top-1, balanced accuracy and each class's recall (%, None: no image)."""

    top1: float
    balanced_accuracy: float
    per_class_recall: dict[str, float | None]

    @classmethod
    def of(cls, logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> SplitScores:
        recalls = per_class_recall(logits, labels, len(classes))
        return cls(top1(logits, labels), balanced_accuracy(logits, labels), dict(zip(classes, recalls, strict=True)))


@dataclass
class StageReport:
    role: str
    params: int
    val: SplitScores
    test: SplitScores
    trained: bool
    fit: FitResult | None

    @property
    def val_top1(self) -> float:
        return self.val.top1

    @property
    def test_top1(self) -> float:
        return self.test.top1

    def as_dict(self) -> dict[str, Any]:
        """The stage's entry in `distill.json`; `resumed_from_epoch` is :attr:`FitResult.resumed_from`."""
        out: dict[str, Any] = {"params": self.params, "val_top1": self.val.top1, "test_top1": self.test.top1,
                               "val_balanced_accuracy": self.val.balanced_accuracy,
                               "test_balanced_accuracy": self.test.balanced_accuracy,
                               "test_per_class_recall": self.test.per_class_recall, "trained": self.trained}
        if self.fit is not None:
            train_seconds = [h["train_seconds"] for h in self.fit.history]
            out.update(best_epoch=self.fit.best_epoch, select_metric=self.fit.select_metric,
                       epochs=self.fit.epochs_run, seconds=self.fit.seconds,
                       train_seconds_per_epoch=sum(train_seconds) / max(1, len(train_seconds)),
                       resumed_from_epoch=self.fit.resumed_from, warnings=self.fit.warnings,
                       restarts=[{"after_epochs": r["epochs"], "lr": r["lr"]} for r in self.fit.restarts])
        return out


class DistillRun:
    """The stages of one `kd2trt distill` invocation, sharing data, device and run directory."""

    def __init__(self, config: RunConfig, run_dir: Path, resume: Resume, console: Console,
                 clock: WallClock | None = None):
        self.config = config
        self.clock = clock or WallClock()
        self.layout = RunLayout(run_dir)
        self.resume = resume
        self.console = console
        self.ctx: DistContext = init_distributed(config.device)
        self.data: DataSplits = load_data(config.data)
        self.splits = split_record(self.data)
        use_tensorboard = config.tensorboard and self.ctx.is_main
        self.tensorboard = _tensorboard_writer(self.layout.tensorboard_dir) if use_tensorboard else None
        train_labels = self.data.train.labels
        self.labeled = labeled_mask(train_labels, config.data.labeled_fraction, config.seed)

    # ------------------------------------------------------------------------------------------ helpers
    def _new_model(self, model_config: ModelConfig, role: str) -> tuple[nn.Module, dict[str, Any]]:
        spec = model_spec(model_config.arch, self.data.preprocessing.channels, self.data.num_classes,
                          model_config.channels, model_config.blocks, model_config.dropout)
        torch.manual_seed(self.config.seed + {"teacher": 0, "student": 1, "baseline": 1}[role])
        try:
            model = build_model(spec).to(self.ctx.device)
        except Kd2trtError as exc:  # e.g. a dropout on an architecture without one: say which section set it
            section = "student" if role == "baseline" else role
            raise Kd2trtError(f"{section}: {exc}") from None
        probe = probe_model(model, spec["in_channels"], self.data.preprocessing.image_size, role,
                            model_config.arch, fit_head=model_config.head_init == "auto")
        if probe.identity_modules:
            spec["identity_modules"] = probe.identity_modules
        if probe.head_rescale is not None and model_config.weights is None and self.ctx.is_main:
            self.console.print(probe.head_rescale.describe(role, model_config.arch))
        return model, spec

    def _data_record(self) -> dict[str, Any]:
        data = self.config.data
        return {"spec": data.spec, "image_size": data.image_size, "channels": self.data.preprocessing.channels,
                "val_fraction": data.val_fraction, "test_fraction": data.test_fraction,
                "split_seed": data.split_seed, "labeled_fraction": data.labeled_fraction}

    def _checkpoint_fn(self, role: str, spec: dict[str, Any]):
        def make(model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
            return make_checkpoint(role, spec, model.state_dict(), self.data.classes, self._data_record(),
                                   self.data.preprocessing, metrics, self.splits)
        return make

    def _fit(self, stage: Stage) -> FitResult:
        return fit(stage, self.data.val, self.ctx, self.layout, seed=self.config.seed,
                   batch_size=self.config.data.batch_size, num_workers=self.config.data.num_workers,
                   resume=self.resume, console=self.console, tensorboard=self.tensorboard, clock=self.clock)

    def _finish(self, role: str, model: nn.Module, spec: dict[str, Any], result: FitResult | None) -> StageReport:
        """Score the selected weights on val and test and write the final `<role>.pt`."""
        val = SplitScores.of(*predict(model, self.data.val, self.ctx.device), self.data.classes)
        test = SplitScores.of(*predict(model, self.data.test, self.ctx.device), self.data.classes)
        report = StageReport(role, count_parameters(model), val, test, result is not None, result)
        if self.ctx.is_main:
            metrics = {k: v for k, v in report.as_dict().items() if k != "params"}
            atomic_torch_save(self._checkpoint_fn(role, spec)(model, metrics), self.layout.checkpoint(role))
        self.ctx.barrier()
        return report

    def _ce_step(self, label_smoothing: float, class_weights: torch.Tensor | None):
        def step(module: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
            images, labels, _ = batch
            loss = hard_label_ce(module(images), labels, label_smoothing=label_smoothing,
                                 class_weights=class_weights)
            return loss, {"ce": float(loss.detach())}
        return step

    def _class_weights(self, ce_labels: torch.Tensor) -> torch.Tensor | None:
        """The CE term's class weights (data.class_weights), from the labels that stage's CE sees."""
        if self.config.data.class_weights == "none":
            return None
        return balanced_class_weights(ce_labels, self.data.num_classes).to(self.ctx.device)

    def _sample_weights(self, stage_labels: torch.Tensor) -> torch.Tensor | None:
        """Per-item weights of the balanced sampler (data.sampler), from the labels the stage may use."""
        if self.config.data.sampler == "random":
            return None
        return balanced_sample_weights(stage_labels)

    def _select_metric(self, train: TrainConfig) -> SelectMetric:
        """train.select_metric, with auto = balanced accuracy when an imbalance option is on."""
        if train.select_metric != "auto":
            return train.select_metric
        data = self.config.data
        return "balanced_accuracy" if "balanced" in (data.class_weights, data.sampler) else "top1"

    def _stage(self, role: str, train: TrainConfig, trainable: nn.Module, model: nn.Module, train_set: Any,
               step: Any, spec: dict[str, Any], sections: tuple[str, ...], stage_labels: torch.Tensor) -> Stage:
        """A Stage with the options every role shares: sampler weights, selection metric, memory format."""
        return Stage(role, train, trainable, model, train_set, step, self._checkpoint_fn(role, spec),
                     self.config.section_hash(*sections), sample_weights=self._sample_weights(stage_labels),
                     select_metric=self._select_metric(train),
                     channels_last=use_channels_last(train.channels_last, self.ctx.device))

    def _teacher_predictions(self, teacher: nn.Module, outputs: TeacherOutputs | None) -> torch.Tensor:
        """The teacher's class for every training image (deterministic transform), for the balanced sampler."""
        if outputs is not None:
            return outputs.logits.argmax(1).cpu()
        deterministic = self.data.train.with_transform(self.data.preprocessing.to_tensor)
        return predict(teacher, deterministic, self.ctx.device)[0].argmax(1)

    # ------------------------------------------------------------------------------------------- stages
    def teacher(self) -> tuple[nn.Module, StageReport]:
        cfg = self.config.teacher
        model, spec = self._new_model(cfg, "teacher")
        if cfg.feature_tap and self.config.distill.beta > 0:
            FeatureTap(model, cfg.feature_tap, "teacher").remove()  # fail now, not after training
        if cfg.weights is not None:
            fresh = load_weights(model, cfg.weights, finetune=cfg.finetune, role="teacher")
            if fresh and self.ctx.is_main:
                self.console.print(f"teacher: {cfg.weights}: re-initialised {', '.join(fresh)} for "
                                   f"{self.data.num_classes} classes")
            if not cfg.finetune:
                return model, self._finish("teacher", model, spec, None)
        labels = self.data.train.labels
        step = self._ce_step(cfg.train.label_smoothing, self._class_weights(labels))
        stage = self._stage("teacher", cfg.train, model, model, self.data.train, step, spec,
                            ("seed", "data", "teacher"), labels)
        result = self._fit(stage)
        return model, self._finish("teacher", model, spec, result)

    def student(self, teacher: nn.Module) -> tuple[nn.Module, StageReport]:
        cfg, kd = self.config.student, self.config.distill
        student, spec = self._new_model(cfg, "student")
        teacher.eval().requires_grad_(False)
        adapter = None
        use_hint = kd.beta > 0
        if use_hint:
            if not (cfg.feature_tap and self.config.teacher.feature_tap):
                raise Kd2trtError("distill.beta > 0 needs student.feature_tap and teacher.feature_tap "
                                  "(module paths such as stages.2 or layer3)")
            adapter = self._make_adapter(student, teacher).to(self.ctx.device)
        outputs = self._teacher_outputs(teacher) if self._use_cache() else None
        wrapped = StudentWithAdapter(student, cfg.feature_tap if use_hint else None, adapter)
        train_labels = self.data.train.labels
        loss_fn = DistillationLoss(kd.temperature, kd.alpha, kd.beta, cfg.train.label_smoothing,
                                   self._class_weights(train_labels[self.labeled]))
        labeled = self.labeled.to(self.ctx.device)
        stage_labels = train_labels
        if self.config.data.sampler == "balanced":  # the teacher labels what the student has no label for
            stage_labels = torch.where(self.labeled, train_labels, self._teacher_predictions(teacher, outputs))
        teacher_tap = self.config.teacher.feature_tap if use_hint else None

        def step(module: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
            images, labels, index = batch
            if outputs is not None:
                t_logits = outputs.logits[index]
                t_features = outputs.features[index] if outputs.features is not None else None
            else:
                with torch.no_grad():
                    if teacher_tap:
                        with tapped(teacher, teacher_tap, "teacher") as tap:
                            t_logits, t_features = teacher(images), tap.take()
                    else:
                        t_logits, t_features = teacher(images), None
            s_logits, adapted = module(images)
            return loss_fn(s_logits, t_logits, labels, labeled[index], adapted, t_features)

        stage = self._stage("student", cfg.train, wrapped, student, self.data.train, step, spec,
                            ("seed", "data", "teacher", "student", "distill"), stage_labels)
        result = self._fit(stage)
        return student, self._finish("student", student, spec, result)

    def baseline(self) -> tuple[nn.Module, StageReport]:
        """The same student, from scratch, on the labeled images only, with the KD stage's step count."""
        cfg = self.config.student
        student, spec = self._new_model(cfg, "baseline")
        labeled_index = torch.nonzero(self.labeled).flatten()
        generator = torch.Generator().manual_seed(self.config.seed)
        repeats = math.ceil(len(self.data.train) / len(labeled_index))
        order = torch.cat([labeled_index[torch.randperm(len(labeled_index), generator=generator)]
                           for _ in range(repeats)])[: len(self.data.train)]
        train_labels = self.data.train.labels
        step = self._ce_step(cfg.train.label_smoothing, self._class_weights(train_labels[self.labeled]))
        stage = self._stage("baseline", cfg.train, student, student, Subset(self.data.train, order.tolist()), step,
                            spec, ("seed", "data", "student"), train_labels[order])
        result = self._fit(stage)
        return student, self._finish("baseline", student, spec, result)

    def _make_adapter(self, student: nn.Module, teacher: nn.Module) -> HintAdapter:
        """Size the adapter from one probe batch through both models' taps."""
        probe = torch.stack([self.data.val[i][0] for i in range(min(2, len(self.data.val)))]).to(self.ctx.device)
        was_training = student.training
        student.eval()
        with torch.no_grad(), tapped(student, self.config.student.feature_tap, "student") as s_tap, \
                tapped(teacher, self.config.teacher.feature_tap, "teacher") as t_tap:
            student(probe)
            teacher(probe)
            s_shape, t_shape = s_tap.take().shape, t_tap.take().shape
        student.train(was_training)
        try:
            return HintAdapter(s_shape, t_shape)
        except ValueError as exc:
            raise Kd2trtError(f"feature taps {self.config.student.feature_tap!r} / "
                              f"{self.config.teacher.feature_tap!r}: {exc}") from None

    def _use_cache(self) -> bool:
        mode = self.config.distill.teacher_cache
        if mode == "off":
            return False
        if not self.data.deterministic_train:
            if mode == "on":
                raise Kd2trtError("distill.teacher_cache: on needs a deterministic training transform; "
                                  "set data.augment: false or teacher_cache: auto")
            return False
        if mode == "on":
            return True
        n = len(self.data.train)
        per_item = self.data.num_classes
        if self.config.distill.beta > 0:
            size = self.data.preprocessing.image_size
            per_item += size * size * 64  # estimate: a 64-channel map at input resolution per image
        return n * per_item * 4 <= self.config.distill.cache_max_mb * 2**20

    def _teacher_outputs(self, teacher: nn.Module) -> TeacherOutputs:
        started = time.perf_counter()
        tap = self.config.teacher.feature_tap if self.config.distill.beta > 0 else None
        outputs = TeacherOutputs.compute(teacher, self.data.train, self.ctx.device, tap)
        if self.ctx.is_main:
            self.console.print(f"teacher outputs cached for {len(outputs.logits)} training images in "
                               f"{time.perf_counter() - started:.2f}s")
        return outputs


def distill_stage(config: RunConfig, layout: RunLayout, console: Console, resume: bool) -> StageResult:
    """The distill stage of `kd2trt run`: resume only a state written for this recipe, else start afresh."""
    summary = run_distill(config, layout.root, resume="matching" if resume else False, console=console)
    roles = ["teacher", "student"] + (["baseline"] if config.distill.baseline else [])
    text = f"student {summary['student']['test_top1']:.2f}% (teacher {summary['teacher']['test_top1']:.2f}%)"
    return StageResult([layout.checkpoint(r) for r in roles] + [layout.distill_summary], text, report=summary)


def run_distill(config: RunConfig, run_dir: Path | None = None, *, resume: Resume = False,
                console: Console | None = None) -> dict[str, Any]:
    """Run teacher → student (→ baseline); write checkpoints, metrics and `distill.json`; return the summary.

    `resume`: True continues each stage from its resume state and refuses one written for another recipe;
    "matching" continues only from a state written for this recipe and starts afresh otherwise.
    `wall_seconds` in the summary is the time of every call that produced the run (see :class:`WallClock`).
    Temporary files that a killed earlier run left in `run_dir` are removed first.
    """
    console = console or Console()
    run_dir = Path(run_dir or config.run_dir)
    clock = WallClock()
    run = DistillRun(config, run_dir, resume, console, clock)
    if run.ctx.is_main:
        ensure_directory(run_dir)
        remove_stale_temp_files(run_dir)
        atomic_write_text(run.layout.config_file, dump_config(config))
    run.ctx.barrier()
    teacher, teacher_report = run.teacher()
    reports = [teacher_report, run.student(teacher)[1]]
    if config.distill.baseline:
        reports.append(run.baseline()[1])
    summary = _summary(config, run, reports, clock.total())
    if run.ctx.is_main:
        atomic_write_json(run.layout.distill_summary, summary)
        imbalanced = summary["test_imbalanced"] or "balanced" in (config.data.class_weights, config.data.sampler)
        console.print(_summary_table(reports, imbalanced))
        recalls = _recall_table(reports, run.data.classes) if imbalanced else None
        if recalls is not None:
            console.print(recalls)
        console.print(f"checkpoints, metrics and distill.json in {run_dir}")
    if run.tensorboard is not None:
        run.tensorboard.close()
    return summary


def _summary(config: RunConfig, run: DistillRun, reports: list[StageReport], seconds: float) -> dict[str, Any]:
    by_role = {r.role: r for r in reports}
    test_labels = run.data.test.labels
    summary: dict[str, Any] = {
        "run": config.name, "seed": config.seed, "device": str(run.ctx.device), "world_size": run.ctx.world_size,
        "labeled_fraction": config.data.labeled_fraction,
        "labeled_images": int(run.labeled.sum()), "train_images": len(run.data.train),
        "test_images": len(run.data.test), "num_classes": run.data.num_classes,
        "test_class_counts": dict(zip(run.data.classes, class_counts(test_labels, run.data.num_classes), strict=True)),
        "test_imbalanced": is_imbalanced(test_labels, run.data.num_classes),
        "class_weights": config.data.class_weights, "sampler": config.data.sampler,
        "teacher_cache": run._use_cache(),
        **{role: report.as_dict() for role, report in by_role.items()},
        "wall_seconds": seconds,
        "warnings": [w for r in reports if r.fit is not None for w in r.fit.warnings],
    }
    teacher, student = by_role["teacher"], by_role["student"]
    summary["compression"] = teacher.params / student.params
    summary["teacher_gap_points"] = teacher.test_top1 - student.test_top1
    if "baseline" in by_role:
        baseline = by_role["baseline"]
        summary["kd_gain_points"] = student.test_top1 - baseline.test_top1
        summary["kd_gain_balanced_accuracy_points"] = student.test.balanced_accuracy - baseline.test.balanced_accuracy
    return summary


#: the console lists each class's recall up to this many classes (distill.json always has them)
RECALL_TABLE_MAX_CLASSES = 10


def _summary_table(reports: list[StageReport], imbalanced: bool) -> Table:
    """The console summary. With an imbalanced test split (or an imbalance option on) it adds balanced accuracy:
    top-1 alone hides a model that favours the majority class."""
    table = Table(title="kd2trt distill — test split")
    columns = ["model", "params", "test top-1"] + (["test bal. acc"] if imbalanced else []) \
        + ["val top-1", "best epoch", "s/epoch"]
    for column in columns:
        table.add_column(column, justify="right" if column != "model" else "left")
    for report in reports:
        d = report.as_dict()
        extra = [f"{report.test.balanced_accuracy:.2f}%"] if imbalanced else []
        table.add_row(_display_name(report.role), f"{report.params:,}", f"{report.test_top1:.2f}%", *extra,
                      f"{report.val_top1:.2f}%", str(d.get("best_epoch", "—")),
                      f"{d['train_seconds_per_epoch']:.2f}" if report.fit else "—")
    return table


def _recall_table(reports: list[StageReport], classes: list[str]) -> Table | None:
    """Each model's test recall per class, beside the summary when classes are imbalanced (and few)."""
    if len(classes) > RECALL_TABLE_MAX_CLASSES:
        return None
    table = Table(title="test recall per class")
    table.add_column("model")
    for name in classes:
        table.add_column(name, justify="right")
    for report in reports:
        table.add_row(_display_name(report.role), *(_percent(report.test.per_class_recall[c]) for c in classes))
    return table


def _display_name(role: str) -> str:
    return {"student": "student (KD)", "baseline": "student (scratch)"}.get(role, role)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}%"


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise Kd2trtError("tensorboard: true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(log_dir=str(log_dir))
