"""The epoch loop shared by every training stage: optimiser, schedule, AMP, DDP, resume, selection.

Reproducibility is by construction: the sampler's shuffle and the global RNG are re-seeded from
(seed, epoch) at the start of every epoch, so a run resumed from epoch k's state is bit-identical
on the CPU to one that never stopped. That is also what makes `--resume` after kill -9 trustworthy.

Under torchrun every rank ends every epoch with the same model: DDP keeps the parameters equal, and the
buffers (BatchNorm running statistics, which each rank updates from its own batches) are broadcast from
rank 0 before validation, so the ranks score the same model, pick the same best epoch (rank 0's decision is
broadcast too) and a teacher on rank 1 gives the targets the saved teacher gives. `data.batch_size` is the
global batch: each of N processes takes batch_size / N images per step, so N processes take the steps one
process takes, at the recipe's learning rate (no learning-rate scaling rule is needed, and none is applied).

What makes real architectures train with one recipe, none special-cased:
- precise BatchNorm statistics: before every validation the running statistics are recomputed as exact
  averages (momentum None) over `train.bn_recalibration_images` training images, in eval mode except for the
  BatchNorm layers. torchvision's MobileNetV3 uses BN momentum 0.01: after a few hundred optimiser steps its
  running statistics are still near their initial values, and the eval-mode network scores chance while the
  training loss is near zero. Rank 0 computes them and broadcasts them with the other buffers.
- a linear learning-rate warm-up (`train.warmup`, a share of the steps): AdamW's first steps move every weight
  by about the full learning rate whatever its gradient.
- logits that are not rectified: a ReLU after the last weighted layer (SqueezeNet's head) is removed when the
  model is built (`kd2trt.models.probe_model`), since it kills the network in the first epochs at any rate.
- a head initialised at its fan-in's scale: an init scaled by the class count (EfficientNet's U(±1/√classes),
  10× its ImageNet scale at 10 classes) is scaled down when the model is built (`kd2trt.models.fit_head_scale`).
- `train.channels_last` (auto: on for the CPU, measured by bench/channels_last.py): the trained modules'
  parameters and each batch's images in the channels_last memory format. Validation and BatchNorm recalibration
  run on those weights (a convolution follows its weight's layout); at the end of the stage the modules are
  back in NCHW, and every saved state dict is contiguous, so checkpoints, export and bench see no difference.
- `train.ema` (off by default): an exponential moving average of the weights (`kd2trt.distill.ema`) is what is
  validated, selected, checkpointed and handed on, its BatchNorm statistics recomputed like the raw weights'; it is
  part of the resume state, and a stalled start's restart begins a new one.
- no silent failure: when validation top-1 stayed at chance through the stage while the training loss fell, or
  the loss did not move, the loop prints a warning at the end of the stage naming the likely cause and records
  it in the stage's result (a start that stalls is restarted earlier: `stalled`, `train.stall_restarts`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torch.utils.data.distributed import DistributedSampler

from kd2trt.artifacts import atomic_write_json
from kd2trt.config import TrainConfig
from kd2trt.distill.distributed import DistContext
from kd2trt.distill.ema import WeightAverage
from kd2trt.distill.optim import build_optimizer, build_scheduler
from kd2trt.distill.sampling import BalancedSampler
from kd2trt.errors import Kd2trtError
from kd2trt.evaluation import predict
from kd2trt.layout import RunLayout
from kd2trt.metrics import balanced_accuracy, cross_entropy, top1
from kd2trt.torch_io import atomic_torch_save, load_torch

#: True: continue from the resume state, refusing one of another recipe; "matching": continue only from a state of
#: this recipe, else start afresh (what `kd2trt run` does after a recipe change); False: start afresh.
Resume = bool | Literal["matching"]
SelectMetric = Literal["top1", "balanced_accuracy"]
StepFn = Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
CheckpointFn = Callable[[nn.Module, dict[str, Any]], dict[str, Any]]


@dataclass
class Stage:
    """One training stage: what is optimised, how a batch becomes a loss, and what is selected on."""

    role: str
    train: TrainConfig
    trainable: nn.Module          # everything optimised (the model, plus a hint adapter when distilling)
    model: nn.Module              # the model evaluated on the validation split and checkpointed
    train_set: Dataset
    step: StepFn
    make_checkpoint: CheckpointFn  # (model, metrics) -> checkpoint dict for <role>.pt
    config_hash: str
    sample_weights: torch.Tensor | None = None  # one per train_set item: draw batches by them (data.sampler)
    select_metric: SelectMetric = "top1"        # the validation figure the best epoch is chosen by
    channels_last: bool = False                 # train and recompute BatchNorm statistics in channels_last


@dataclass
class FitResult:
    """What `fit` did. `resumed_from`: the last finished epoch (1-based) whose resume state the stage's
    training continued from, in the most recent call that did continue it; None when the stage was trained
    without a break. A later `--resume` that finds the stage finished keeps that value, since it trains
    nothing: a stage trained in one go and merely found finished stays None."""

    best_epoch: int
    best_val_top1: float          # validation top-1 of the best epoch (chosen by `select_metric`)
    epochs_run: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    warnings: list[str] = field(default_factory=list)
    select_metric: SelectMetric = "top1"
    restarts: list[dict[str, Any]] = field(default_factory=list)  # stalled starts abandoned (train.stall_restarts)

    def best_score(self) -> float:
        """The selection figure of the best epoch so far; -inf before the first."""
        if self.best_epoch < 1:
            return -math.inf
        return float(self.history[self.best_epoch - 1][f"val_{self.select_metric}"])

    def improved_by(self, record: dict[str, Any]) -> bool:
        """Whether the epoch of `record` is better than the best so far: a higher selection figure, or the same
        one at a lower validation loss (cross-entropy, class-balanced when selecting by balanced accuracy).

        Why the tie-break: a small validation split moves in coarse steps (47 images: 2.1 points of top-1), and
        a teacher that reaches 100 % at epoch 4 of 10 used to be kept at epoch 4, the least trained of the tied
        epochs (the chest-X-ray stand-in's seed-4 teacher: training loss 0.39 there, 0.06 at epoch 10). The
        loss separates the tied epochs by how confidently they are right. A record without a loss (a resume
        state from before it was recorded) never wins a tie."""
        score, best = float(record[f"val_{self.select_metric}"]), self.best_score()
        if score != best:
            return score > best
        previous = self.history[self.best_epoch - 1].get("val_loss", math.inf)
        return float(record.get("val_loss", math.inf)) < float(previous)


@dataclass
class WallClock:
    """Wall seconds of every call that produced a run: earlier calls' total, as the resume states recorded it
    (up to their last saved epoch), plus this call's."""

    started: float = field(default_factory=time.perf_counter)
    earlier: float = 0.0

    def total(self) -> float:
        return self.earlier + time.perf_counter() - self.started

    def carry(self, recorded: float | None) -> None:
        """Take over the total recorded in a resume state read by this call (the latest one counts)."""
        if recorded is not None:
            self.earlier = max(self.earlier, float(recorded))


#: what `train.channels_last: auto` means per device type, from bench/channels_last.py (bench/results/
#: channels_last*.json, 2 passes, 1 torch thread on the shared 2-core CI machine): on the CPU a training step was
#: 1.1–1.45× faster for 10 of the 12 model × size pairs (ResNet-18 0.83–1.08×: neutral within the noise) and an
#: eval forward pass 1.07–2.25× faster for all. CUDA has not been measured here, so auto keeps NCHW there.
CHANNELS_LAST_AUTO = {"cpu": True, "cuda": False}


def use_channels_last(setting: str, device: torch.device) -> bool:
    """Resolve train.channels_last (auto | on | off) for `device`."""
    if setting == "auto":
        return CHANNELS_LAST_AUTO.get(device.type, False)
    return setting == "on"


@dataclass
class ClipStats:
    """What `train.grad_clip` did in one epoch: the mean gradient norm before clipping and the share of steps it
    cut, so that a user can tell a clip that shapes every step from one that only catches spikes (a KD term
    scaled by T² and a CE term have gradients of different sizes, so one clip does not suit both alike)."""

    norm_sum: float = 0.0
    steps: int = 0
    clipped: int = 0

    def add(self, norm: float, clip: float) -> None:
        if math.isfinite(norm):  # a non-finite norm is a step the AMP scaler skips
            self.norm_sum += norm
            self.steps += 1
            self.clipped += norm > clip

    def record(self) -> dict[str, float]:
        if not self.steps:
            return {}
        return {"grad_norm": self.norm_sum / self.steps, "clipped_fraction": self.clipped / self.steps}


#: a start is judged stalled only after this many optimiser steps (and twice the warm-up): a loss that has not
#: moved after a handful of steps, e.g. 4 steps an epoch on 10 % labels, says nothing yet
STALL_MIN_STEPS = 100
#: the learning rate of a restarted stage is the previous one divided by this
STALL_LR_FACTOR = 3.0


def stalled(history: list[dict[str, Any]], chance: float) -> bool:
    """A start that is not learning: the epoch-mean training loss fell by less than a quarter since the first
    epoch, and validation top-1 never rose a quarter of the way from chance to 100 %.

    Measured on the zoo's first 3 epochs (10 students × 3 seeds, KD and scratch, 102 steps): every run that went
    on to train had its loss at ≤ 0.55 of the first epoch's and validation ≥ 37 %; SqueezeNet's stalled starts
    at AdamW 3e-3 sat at 0.86–0.92 and 20–21 % (chance 10 %), so both bounds have a wide margin on either side.
    The bound on validation keeps a model that is already good (fine-tuning, a low starting loss) from being
    restarted.
    """
    if len(history) < 2:
        return False
    first, last = history[0]["train_loss"], history[-1]["train_loss"]
    best = max(h["val_top1"] for h in history)
    return last > 0.75 * first and best < chance + 0.25 * (100.0 - chance)


def stall_check_epoch(steps_per_epoch: int, config: TrainConfig) -> int | None:
    """The 0-based epoch after which a stalled start is detected and restarted (`train.stall_restarts`); None when
    the stage is too short for a restart to leave it time to train.

    Measured on the zoo (SqueezeNet 1.1, no normalisation layer, AdamW 3e-3, 34 steps an epoch): the loss stays
    flat and validation at chance through epoch 4, while at 1e-3 the same network reaches 73 % in 6 epochs and
    ShuffleNetV2 does better at 3e-3 than at 1e-3; one learning rate suits neither, a restart at a third does.
    """
    total = config.epochs * steps_per_epoch
    needed = max(STALL_MIN_STEPS, 2 * round(config.warmup * total))
    epoch = max(1, math.ceil(needed / steps_per_epoch) - 1)
    return epoch if epoch < config.epochs // 2 else None


def _optimisation(params: list[nn.Parameter], config: TrainConfig, total_steps: int, use_amp: bool
                  ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, torch.amp.GradScaler]:
    """A fresh optimiser, schedule and gradient scaler for `params` at `config.lr`."""
    optimizer = build_optimizer(params, config)
    return optimizer, build_scheduler(optimizer, config, total_steps), torch.amp.GradScaler("cuda", enabled=use_amp)


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer that keeps running statistics (timm's BatchNormAct2d included: a subclass)."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, dataset: Dataset, device: torch.device, images: int, batch_size: int,
                        seed: int) -> int:
    """Replace BatchNorm running statistics by exact averages over `images` training images; return the count.

    The rest of the model is in eval mode (no dropout, no stochastic depth), as it is when evaluated; the
    BatchNorm layers are in training mode with momentum None, i.e. a cumulative average of the batch statistics.
    The images are a seeded sample of `dataset`; the global RNG is not touched.
    """
    norms = batchnorm_layers(model)
    count = min(images, len(dataset))  # type: ignore[arg-type]
    if not norms or count < 2:
        return 0
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]  # type: ignore[arg-type]
    loader = DataLoader(Subset(dataset, chosen.tolist()), batch_size=max(2, batch_size), shuffle=False,
                        generator=torch.Generator().manual_seed(seed))  # not the global RNG
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    seen = 0
    try:
        for batch in loader:
            images_batch = batch[0]
            if len(images_batch) < 2:  # one image has no batch variance
                continue
            model(images_batch.to(device, non_blocking=True))
            seen += len(images_batch)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return seen


def chance_top1(labels: torch.Tensor) -> float:
    """Top-1 (%) of always answering the most frequent class: what a model that learned nothing scores."""
    if len(labels) == 0:
        return 0.0
    return 100.0 * float(torch.bincount(labels).max()) / len(labels)


def diagnose(role: str, history: list[dict[str, Any]], chance: float, config: TrainConfig) -> list[tuple[str, str]]:
    """(kind, message) for each training failure visible in `history`: validation at chance while the loss fell
    (the eval-mode model is not the trained one), or a loss that does not move (a dead network)."""
    if len(history) < 2:
        return []
    best = max(h["val_top1"] for h in history)
    if best > chance + max(2.0, 0.05 * (100.0 - chance)):
        return []
    first, last = history[0]["train_loss"], history[-1]["train_loss"]
    at_chance = f"validation top-1 stays at chance ({best:.1f}%, chance {chance:.1f}%)"
    if last < 0.5 * first:
        bn = ("BatchNorm running statistics that do not describe the trained network (too few steps for its BN "
              f"momentum; keep {role}.train.bn_recalibration_images > 0"
              + (", it is 0 now)" if config.bn_recalibration_images == 0 else ")"))
        return [("eval_mismatch", f"{role}: {at_chance} while the training loss fell from {first:.4f} to "
                 f"{last:.4f}: the model in eval mode is not the one being trained. Likely cause: {bn}, or a "
                 f"learning rate too high to train stably ({role}.train.lr {config.lr:g}: lower it)")]
    if last > 0.95 * first:
        return [("stuck", f"{role}: {at_chance} and the training loss does not fall ({first:.4f} → {last:.4f}): "
                 "the network's output does not depend on its input (e.g. dead ReLUs before the head). Likely "
                 f"cause: a learning rate too high in the first steps ({role}.train.lr {config.lr:g}, warm-up "
                 f"{config.warmup:g} of the steps): lower the rate or lengthen {role}.train.warmup")]
    return []


def _sampler(stage: Stage, ctx: DistContext, seed: int) -> DistributedSampler | BalancedSampler:
    """Each rank's share of the epoch: a seeded shuffle (DistributedSampler), or a balanced draw split alike."""
    if stage.sample_weights is not None:
        return BalancedSampler(stage.sample_weights, num_replicas=ctx.world_size, rank=ctx.rank, seed=seed)
    return DistributedSampler(stage.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                              seed=seed, drop_last=False)


def _loader(dataset: Dataset, batch_size: int, num_workers: int, sampler: Sampler[int]) -> DataLoader:
    # A final batch of one sample breaks BatchNorm in training mode; drop it only in that case.
    drop_last = len(sampler) % batch_size == 1
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, persistent_workers=num_workers > 0)


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                    console=console, transient=True, disable=not enabled)


#: seconds between two plain progress lines within an epoch when the output is not a terminal (CI logs, pipes)
PLAIN_PROGRESS_SECONDS = 20.0


def format_duration(seconds: float) -> str:
    """`1h02m`, `1m20s`, `42s`: short enough for a progress line."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class PlainProgress:
    """In-epoch progress for a log rather than a terminal: one line every `interval` seconds, none before.

    A rich bar redraws itself in place, which a CI log or a pipe cannot show, so there the loop printed nothing
    until the epoch ended. This prints e.g. `teacher 3/10  batch 120/400  loss 0.4321  eta 1m20s` once the
    epoch has run `interval` seconds and every `interval` after, so an epoch shorter than that stays one line.
    It only reads the clock and prints: the training numbers and the RNG are untouched. `clock` is injectable
    so that tests need not wait.
    """

    def __init__(self, console: Console, label: str, total: int, enabled: bool,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.console, self.label, self.total, self.enabled = console, label, total, enabled
        self.interval = PLAIN_PROGRESS_SECONDS if interval is None else interval
        self.clock = clock
        self.started = self.last = clock()

    def update(self, done: int, loss: float) -> None:
        """After batch `done` of `total`, with the running mean loss; prints when `interval` has passed."""
        if not self.enabled:
            return
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        eta = (now - self.started) / max(done, 1) * (self.total - done)
        self.console.print(f"{self.label}  batch {done}/{self.total}  loss {loss:.4f}  eta {format_duration(eta)}",
                           highlight=False, markup=False)


def fit(stage: Stage, val_set: Dataset, ctx: DistContext, layout: RunLayout, *, seed: int, batch_size: int,
        num_workers: int, resume: Resume, console: Console, tensorboard: Any = None,
        clock: WallClock | None = None) -> FitResult:
    """Train `stage` for its epochs, keeping the best-on-validation weights in `stage.model`.

    `clock` is the run's wall clock: each resume state records its total, and a resumed call carries it on.
    """
    config = stage.train
    clock = clock or WallClock()
    last_path = layout.resume_state(stage.role)
    metrics_path = layout.metrics(stage.role)
    batch_size = _rank_batch(batch_size, ctx)
    sampler = _sampler(stage, ctx, seed)
    loader = _loader(stage.train_set, batch_size, num_workers, sampler)
    layout_format = torch.channels_last if stage.channels_last else torch.contiguous_format
    stage.trainable.to(memory_format=layout_format)  # in place, before the optimiser sees the parameters
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise Kd2trtError(f"{stage.role}: the training split has no batch; lower data.batch_size")
    params = [p for p in stage.trainable.parameters() if p.requires_grad]
    use_amp = config.amp and ctx.device.type == "cuda"
    optimizer, scheduler, scaler = _optimisation(params, config, config.epochs * steps_per_epoch, use_amp)
    check_epoch = stall_check_epoch(steps_per_epoch, config)
    average = _weight_average(stage.model, config, steps_per_epoch)
    evaluated = average.module if average is not None else stage.model  # what is validated, selected and saved
    module: nn.Module = stage.trainable
    if ctx.distributed:
        device_ids = [ctx.device] if ctx.device.type == "cuda" else None
        module = DistributedDataParallel(stage.trainable, device_ids=device_ids)

    result = FitResult(best_epoch=-1, best_val_top1=-math.inf, epochs_run=0, seconds=0.0,
                       select_metric=stage.select_metric)
    chance: float | None = None  # top-1 of always answering the validation split's majority class
    best_state = _state_copy(stage.model)
    initial = _state_copy(stage.trainable) if config.stall_restarts else None  # what a stalled start restarts from
    start_epoch = 0
    state = _read_resume_state(last_path, stage.config_hash, resume) if resume and last_path.is_file() else None
    if state is not None:
        stage.trainable.load_state_dict(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if average is not None:
            average.load_state_dict(state["ema"])
        best_state = state["best_state"]
        start_epoch = state["epoch"] + 1
        # continuing now: from this state's epoch; finished already: whatever the call that trained it recorded
        resumed_from = start_epoch if start_epoch < config.epochs else state.get("resumed_from")
        result = FitResult(best_epoch=state["best_epoch"], best_val_top1=state["best_val_top1"],
                           epochs_run=start_epoch, seconds=state["seconds"], history=state["history"],
                           resumed_from=resumed_from, select_metric=stage.select_metric,
                           restarts=state.get("restarts", []), warnings=state.get("warnings", []))
        chance = state.get("chance_top1")
        config = config.model_copy(update={"lr": state.get("lr", config.lr)})
        clock.carry(state.get("wall_seconds"))
        if ctx.is_main and start_epoch < config.epochs:
            console.print(f"[cyan]{stage.role}[/]: resuming at epoch {start_epoch + 1} from {last_path}")

    with _progress(console, ctx.is_main and console.is_terminal) as progress:
        epoch = start_epoch
        while epoch < config.epochs:
            sampler.set_epoch(epoch)
            torch.manual_seed(seed * 100_003 + epoch)
            label = f"{stage.role} {epoch + 1}/{config.epochs}"
            task = progress.add_task(label, total=steps_per_epoch, loss=0.0)
            plain = PlainProgress(console, label, steps_per_epoch, ctx.is_main and not console.is_terminal)
            started = time.perf_counter()
            module.train()
            total_loss, terms_sum, batches = 0.0, {}, 0
            clip_stats = ClipStats()
            for batch in loader:
                batch = _to_device(batch, ctx.device, layout_format)
                with torch.autocast(ctx.device.type, dtype=torch.float16, enabled=use_amp):
                    loss, terms = stage.step(module, batch)
                if not torch.isfinite(loss):
                    raise Kd2trtError(f"{stage.role}: loss became {loss.item()} at epoch {epoch + 1}; "
                                      f"lower {stage.role}.train.lr (now {config.lr})")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    clip_stats.add(float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip)), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if average is not None:
                    average.update(stage.model)
                total_loss += loss.item()
                batches += 1
                for key, value in terms.items():
                    terms_sum[key] = terms_sum.get(key, 0.0) + value
                progress.update(task, advance=1, loss=total_loss / batches)
                plain.update(batches, total_loss / batches)
            train_seconds = time.perf_counter() - started
            progress.remove_task(task)
            bn_started = time.perf_counter()
            if ctx.is_main and config.bn_recalibration_images > 0:
                recompute_batchnorm(evaluated, stage.train_set, ctx.device, config.bn_recalibration_images,
                                    batch_size, seed * 100_003 + epoch)
            bn_seconds = time.perf_counter() - bn_started
            _synchronise_buffers(stage.trainable, ctx)
            if average is not None:
                _synchronise_buffers(evaluated, ctx)
            val_logits, val_labels = predict(evaluated, val_set, ctx.device)
            val_top1 = _from_rank0(top1(val_logits, val_labels), ctx)
            val_balanced = _from_rank0(balanced_accuracy(val_logits, val_labels), ctx)
            val_loss = _from_rank0(cross_entropy(val_logits, val_labels,
                                                 balanced=stage.select_metric == "balanced_accuracy"), ctx)
            seconds = time.perf_counter() - started
            record = {"epoch": epoch + 1, "train_loss": total_loss / batches,
                      **{f"loss_{k}": v / batches for k, v in terms_sum.items()},
                      "val_top1": val_top1, "val_balanced_accuracy": val_balanced, "val_loss": val_loss,
                      "lr": optimizer.param_groups[0]["lr"], **clip_stats.record(),
                      "train_seconds": train_seconds, "bn_seconds": bn_seconds, "seconds": seconds}
            result.history.append(record)
            result.seconds += seconds
            result.epochs_run = epoch + 1
            chance = chance_top1(val_labels)
            if (epoch == check_epoch and initial is not None and len(result.restarts) < config.stall_restarts
                    and _from_rank0(float(stalled(result.history, chance)), ctx)):
                first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
                best = max(h["val_top1"] for h in result.history)
                message = (f"{stage.role}: the training loss changed by {100 * (last / first - 1):+.1f} % in "
                           f"{epoch + 1} epochs ({first:.4f} → {last:.4f}) and validation top-1 is at most "
                           f"{best:.1f}% (chance {chance:.1f}%): restarting from the initial weights "
                           f"at lr {config.lr / STALL_LR_FACTOR:.3g} instead of {config.lr:.3g} (attempt "
                           f"{len(result.restarts) + 2}; {stage.role}.train.stall_restarts)")
                result.restarts.append({"epochs": epoch + 1, "lr": config.lr, "warning": message,
                                        "history": result.history})
                result.warnings = [r["warning"] for r in result.restarts]
                if ctx.is_main:
                    console.print(f"[yellow]warning[/]: {escape(message)}")
                config = config.model_copy(update={"lr": config.lr / STALL_LR_FACTOR})
                stage.trainable.load_state_dict(initial)
                optimizer, scheduler, scaler = _optimisation(params, config, config.epochs * steps_per_epoch, use_amp)
                average = _weight_average(stage.model, config, steps_per_epoch)
                evaluated = average.module if average is not None else stage.model
                best_state, epoch = _state_copy(stage.model), 0
                result.best_epoch, result.best_val_top1, result.history = -1, -math.inf, []
                ctx.barrier()
                continue
            improved = result.improved_by(record)
            if improved:
                result.best_val_top1, result.best_epoch = val_top1, epoch + 1
                best_state = _state_copy(evaluated)
            if ctx.is_main:
                if improved:
                    atomic_torch_save(stage.make_checkpoint(evaluated, _best_metrics(result)),
                                      layout.checkpoint(stage.role))
                atomic_torch_save(_resume_state(stage, optimizer, scheduler, scaler, average, best_state, result,
                                                epoch, clock.total(), config.lr, chance), last_path)
                atomic_write_json(metrics_path, result.history)
                if tensorboard is not None:
                    for key, value in record.items():
                        if key != "epoch":
                            tensorboard.add_scalar(f"{stage.role}/{key}", value, epoch + 1)
                balanced = f"  bal. acc {val_balanced:6.2f}%" if stage.select_metric == "balanced_accuracy" else ""
                console.print(f"[cyan]{stage.role:8s}[/] epoch {epoch + 1:3d}/{config.epochs}  "
                              f"loss {record['train_loss']:.4f}  val top-1 {val_top1:6.2f}%{balanced}"
                              f"{' *' if improved else '  '}  {seconds:5.2f}s")
            ctx.barrier()
            epoch += 1
    # The verdict on the whole history, once: judged epoch by epoch, a stage that is slow to leave chance (two
    # imbalanced classes, a teacher at 74.5 % = the majority for 3 epochs, then 98 %) was reported as broken.
    verdict = diagnose(stage.role, result.history, chance, config) if chance is not None else []
    for message in (m for _, m in verdict if m not in result.warnings):
        result.warnings.append(message)
        if ctx.is_main:
            console.print(f"[yellow]warning[/]: {escape(message)}")
    stage.model.load_state_dict(best_state)
    stage.trainable.to(memory_format=torch.contiguous_format)  # what export, bench and a later stage expect
    return result


def _weight_average(model: nn.Module, config: TrainConfig, steps_per_epoch: int) -> WeightAverage | None:
    """The average of `model`'s weights a stage validates and saves (train.ema), from its current weights."""
    if config.ema is None:
        return None
    return WeightAverage(model, config.ema, config.epochs * steps_per_epoch)


def _to_device(batch: tuple[torch.Tensor, ...], device: torch.device, layout: torch.memory_format
               ) -> tuple[torch.Tensor, ...]:
    """The batch on the device, its image tensor (N×C×H×W) in the training memory format."""
    moved = [t.to(device, non_blocking=True) for t in batch]
    if moved and moved[0].ndim == 4:
        moved[0] = moved[0].contiguous(memory_format=layout)
    return tuple(moved)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the state dict in the contiguous layout, whatever layout training uses."""
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


def _rank_batch(batch_size: int, ctx: DistContext) -> int:
    """Each process's share of the global `data.batch_size`."""
    if batch_size % ctx.world_size:
        raise Kd2trtError(f"data.batch_size {batch_size} is the global batch and must divide among the "
                          f"{ctx.world_size} processes; use a multiple of {ctx.world_size}")
    return batch_size // ctx.world_size


def _synchronise_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank updated them from its own data."""
    if ctx.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def _from_rank0(value: float, ctx: DistContext) -> float:
    """Rank 0's value on every rank, so that every rank takes the same decision."""
    if not ctx.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return float(holder[0])


def _best_metrics(result: FitResult) -> dict[str, Any]:
    return {"best_epoch": result.best_epoch, "val_top1": result.best_val_top1, "select_metric": result.select_metric,
            "val_balanced_accuracy": result.history[result.best_epoch - 1]["val_balanced_accuracy"],
            "epochs_run": result.epochs_run}


def _resume_state(stage: Stage, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
                  average: WeightAverage | None, best_state: dict[str, torch.Tensor], result: FitResult, epoch: int,
                  wall_seconds: float, lr: float, chance: float | None) -> dict[str, Any]:
    return {
        "kd2trt": {"format": 1, "role": f"{stage.role}-resume"},
        "config_hash": stage.config_hash,
        "epoch": epoch,
        "trainable": stage.trainable.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "ema": average.state_dict() if average is not None else None,
        "best_state": best_state,
        "best_epoch": result.best_epoch,
        "best_val_top1": result.best_val_top1,
        "seconds": result.seconds,
        "history": result.history,
        "resumed_from": result.resumed_from,
        "wall_seconds": wall_seconds,  # the run's, all calls so far: `distill.json` adds the next call's to it
        "lr": lr,  # the recipe's, or lower after a stalled start
        "restarts": result.restarts,
        "warnings": result.warnings,
        "chance_top1": chance,
    }


def _read_resume_state(path: Path, config_hash: str, resume: Resume) -> dict[str, Any] | None:
    """The resume state at `path`; with resume="matching", None (start afresh) when it is for another recipe."""
    state = load_torch(path, "this resume state cannot be used: delete it to start the stage afresh")
    if not isinstance(state, dict) or "config_hash" not in state or "trainable" not in state:
        raise Kd2trtError(f"{path}: not a kd2trt resume state; delete it to start the stage afresh")
    if state["config_hash"] != config_hash:
        if resume == "matching":
            return None
        raise Kd2trtError(f"{path}: was written by a run with another config; delete it, or run without "
                          "--resume to start afresh")
    return state
