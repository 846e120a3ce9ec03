"""The configuration of a kd2trt run: pydantic models, YAML in, command-line overrides on top.

Why pydantic with `extra="forbid"`: a misspelt key in a recipe (`temprature: 4`) would otherwise
be ignored silently and the run would use the default — the worst kind of wrong result. Every
validation error is turned into one line naming the file and the key.

The defaults of these models *are* the default recipe (digits, label-scarce distillation);
`pipeline/digits.yaml` spells the same values out and a test keeps the two equal.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from kd2trt.errors import Kd2trtError, Kd2trtWarning
from kd2trt.targets import parse_target


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_device(value: str) -> str:
    if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
        raise ValueError(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N")
    return value


#: Where PyTorch (and, for bench, ONNX Runtime) runs; checked here so that a typo fails at load time.
Device = Annotated[str, AfterValidator(_check_device)]


class DataConfig(_Strict):
    """Which data set, how it is split, and how much of the training split carries labels."""

    spec: str = Field("digits", description="digits | imagefolder:PATH | cifar10:ROOT | cifar100:ROOT | "
                      "mnist:ROOT | fashionmnist:ROOT")
    image_size: int = Field(16, ge=8, le=1024, description="square side the images are resized to")
    channels: int | None = Field(None, description="1 or 3; default: what the data set has")
    mean: list[float] | None = Field(None, description="per-channel mean; default: measured on the train split")
    std: list[float] | None = Field(None, description="per-channel std; default: measured on the train split")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share held out for model selection")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share held out for the final figures")
    split_seed: int = Field(0, description="seed of the train/val/test split; fixed across run seeds")
    labeled_fraction: float = Field(
        0.1, gt=0, le=1,
        description="share of the training split whose labels the student sees; the teacher labels the rest")
    augment: bool = Field(False, description="random crop + flip; disables the teacher soft-label cache")
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(0, ge=0)
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="per-class loss weights: balanced = n / (classes · count) per class, counted over "
        "the labels each stage's CE sees (sklearn's 'balanced'); they weight the CE term and the KD term (an "
        "unlabeled image by the teacher's predicted class)")
    sampler: Literal["random", "balanced"] = Field(
        "random", description="how training batches are drawn: random = a shuffle of the training split; "
        "balanced = every class equally often, with replacement (torch's WeightedRandomSampler), by the labels "
        "the stage may use (the KD student: its labels, the teacher's predictions for the unlabeled rest)")

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: int | None) -> int | None:
        if value not in (None, 1, 3):
            raise ValueError("must be 1 or 3")
        return value

    @model_validator(mode="after")
    def _splits(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self


class TrainConfig(_Strict):
    """Optimiser, schedule and budget of one training stage."""

    epochs: int = Field(30, ge=1, description="training epochs")
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    warmup: float = Field(
        0.05, ge=0, lt=1, description="share of the steps over which the learning rate ramps up linearly from "
        "zero (cosine and constant schedules; onecycle has its own): AdamW's first steps move every weight by "
        "about the full rate whatever its gradient")
    stall_restarts: int = Field(
        2, ge=0, description="when after 100 steps (and twice the warm-up) the training loss has not fallen by a "
        "quarter and validation is near chance, restart the stage from its initial weights at a third of the "
        "learning rate, "
        "at most this many times (0: never); each restart is a warning in distill.json")
    grad_clip: float | None = Field(
        None, gt=0, description="clip the gradients' global L2 norm to this value (each epoch's mean norm before "
        "clipping and the share of steps cut: grad_norm, clipped_fraction in *.metrics.json); null: no clipping")
    bn_recalibration_images: int = Field(
        512, ge=0, description="before each validation, BatchNorm running statistics are recomputed as exact "
        "averages over this many training images (0: off), so the evaluated and checkpointed model is the one "
        "trained (MobileNetV3's BN momentum 0.01 leaves them near their init after few steps)")
    ema: float | None = Field(
        None, gt=0, le=1, description="validate, select and save an exponential moving average of the weights "
        "instead of the last step's, spanning this share of the stage's optimiser steps (its time constant: "
        "decay 1 - 1/(ema * steps)); null: off")
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    select_metric: Literal["auto", "top1", "balanced_accuracy"] = Field(
        "auto", description="validation figure the best epoch is chosen by (a tie goes to the lower validation "
        "loss); auto: balanced_accuracy when data.class_weights or data.sampler is balanced, else top1")
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="train (and recompute BatchNorm statistics) in the channels_last memory format; "
        "auto: on where bench/channels_last.py measured it faster. Checkpoints and ONNX are layout-free")


class ModelConfig(_Strict):
    """A model by registry name: `cnn` (built in), a torchvision name, or `timm:NAME`."""

    arch: str = "cnn"
    channels: list[int] | None = Field(None, description="cnn only: output channels of each stage")
    blocks: int = Field(1, ge=1, le=8, description="cnn only: conv blocks per stage")
    dropout: float | None = Field(
        None, ge=0, lt=1, description="dropout before the classifier: unset keeps the architecture's own "
        "(torchvision's and timm's defaults; cnn: none); a value sets it where the architecture has one "
        "(torchvision's dropout=, timm's drop_rate=)")
    head_init: Literal["auto", "architecture"] = Field(
        "auto", description="auto: a fresh head initialised more than 2x PyTorch's default scale for its fan-in "
        "(EfficientNet, MNASNet, timm's MobileNetV3: inits scaled by the class count) is scaled down to it; "
        "architecture: keep the model's own init")
    feature_tap: str | None = Field(None, description="module path whose output feeds the hint loss, e.g. stages.2")
    weights: Path | None = Field(None, description="state dict or checkpoint to start from")
    train: TrainConfig = Field(default_factory=TrainConfig)
    section: ClassVar[str] = "model"  # the recipe section, for the fixes error messages name

    @model_validator(mode="after")
    def _cnn_only(self) -> ModelConfig:
        if self.arch != "cnn" and self.channels is not None:
            # the teacher and student sections default to cnn channels, so `--set teacher.arch=resnet18` alone
            # lands here: say how to drop them
            raise ValueError(f"channels applies to arch 'cnn' only, not {self.arch!r}; set channels: null for "
                             f"torchvision/timm models (--set {self.section}.channels=null)")
        if self.channels is not None and (not self.channels or min(self.channels) < 1):
            raise ValueError("channels must be a non-empty list of positive integers")
        return self


class TeacherConfig(ModelConfig):
    """The teacher: trained here, fine-tuned from `weights`, or loaded from `weights` as is."""

    channels: list[int] | None = Field([32, 64, 128])
    blocks: int = Field(2, ge=1, le=8)
    feature_tap: str | None = "stages.2"
    section: ClassVar[str] = "teacher"
    finetune: bool = Field(False, description="with weights: replace the head if needed and train further")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=15))


class StudentConfig(ModelConfig):
    """The student. Channel counts are multiples of 8 so TensorRT's INT8 quantises every conv."""

    channels: list[int] | None = Field([8, 16, 32])
    feature_tap: str | None = "stages.2"
    section: ClassVar[str] = "student"
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=40, lr=1e-2))


class DistillConfig(_Strict):
    """Weights of the loss terms: (1 - alpha)·CE + alpha·T²·KL + beta·hint MSE."""

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft-label KD term")
    beta: float = Field(0.0, ge=0, description="weight of the feature (hint) MSE term")
    teacher_cache: Literal["auto", "on", "off"] = Field(
        "auto", description="reuse the teacher's outputs every epoch when the transform is deterministic")
    cache_max_mb: int = Field(2048, ge=0, description="largest teacher-output cache kept in memory")
    baseline: bool = Field(True, description="also train the student from scratch with the same budget")


#: Parity defaults, measured on the digits students (3 seeds) and the torchvision/timm zoo students: see
#: kd2trt/onnx/parity.py for the rule and the README's export section for the figures and their headroom.
PARITY_RTOL = 1e-3
FP16_ATOL = 0.01
FP16_RTOL = 0.05


class ExportConfig(_Strict):
    """ONNX export, FP16/INT8 graphs and the TensorRT calibration cache (`kd2trt export`)."""

    opset: int = Field(17, ge=13, le=23, description="17 is the highest TensorRT 8.5 (JetPack 5) parses")
    simplify: bool = Field(True, description="onnxslim, with parity re-checked after it")
    parity_atol: float = Field(1e-4, gt=0, description="FP32 parity (PyTorch vs ONNX Runtime; every FP32 form in "
                               "bench): absolute term of the per-image bound max |Δlogit| ≤ parity_atol + "
                               "parity_rtol × (that image's logit range, max - min)")
    parity_rtol: float = Field(PARITY_RTOL, ge=0, description="FP32 parity: relative term, a share of each image's "
                               "logit range (FP32 rounding grows with the logits' size)")
    fp16: bool = Field(True, description="write <model>.fp16.onnx (FP16 inside, FP32 I/O)")
    fp16_atol: float = Field(FP16_ATOL, gt=0, description="FP16 parity (FP16 vs FP32 graph; every FP16 form in "
                             "bench): absolute term of max |Δlogit| ≤ fp16_atol + fp16_rtol × (logit range)")
    fp16_rtol: float = Field(FP16_RTOL, ge=0, description="FP16 parity: relative term, a share of each image's "
                             "logit range")
    int8: bool = Field(True, description="calibrate; write the Q/DQ ONNX and the TensorRT calibration cache")
    calib_method: Literal["entropy", "minmax", "percentile"] = Field(
        "entropy", description="how activation ranges are chosen from the calibration statistics")
    calib_images: int = Field(512, ge=1, description="drawn stratified from the train split")
    int8_budget: float | None = Field(
        None, ge=0, description="INT8 accuracy budget: top-1 points the INT8 graph may lose against the FP32 graph "
        "on the validation split; searches the calibration method, then keeps the fewest layers in higher "
        "precision (none: calib_method, every layer INT8)")
    qat_epochs: int = Field(
        0, ge=0, description="distillation-aware QAT: epochs of fine-tuning under INT8 fake quantisation on the "
        "teacher's soft labels, from the PTQ ranges; the Q/DQ graph and the calibration caches then come from the "
        "fine-tuned weights and the ranges trained with. With int8_budget: run only when method choice and "
        "per-layer fallback cannot meet the budget (0: never)")
    qat_lr: float = Field(1e-4, gt=0, description="QAT learning rate (AdamW, cosine to zero; about 1% of the "
                          "distillation's)")
    qat_temperature: float = Field(4.0, gt=0, description="temperature of QAT's soft-label KD loss")
    calib_seed: int = 0
    trt_versions: list[str] = Field(
        ["10.3"], description="TensorRT versions to write calibration caches for and to preflight the graph "
        "against: 8.5 (JetPack 5), 8.6 (JetPack 6.0), 10.3 (JetPack 6.1/6.2), or a full TensorRT version "
        "such as 10.14.1 or 11.0")
    teacher: bool = Field(True, description="also export the teacher (for bench)")

    @model_validator(mode="after")
    def _budget_needs_int8(self) -> ExportConfig:
        if self.int8_budget is not None and not self.int8:
            raise ValueError("int8_budget is set but int8 is off: an INT8 budget needs the INT8 export (--int8)")
        if self.qat_epochs > 0 and not self.int8:
            raise ValueError("qat_epochs is set but int8 is off: QAT fine-tunes for the INT8 export (--int8)")
        return self

    @field_validator("trt_versions")
    @classmethod
    def _trt_versions(cls, values: list[str]) -> list[str]:
        """The parser `kd2trt export` uses, run at load time: a bad target fails before distillation."""
        try:
            return [parse_target(value).text for value in values]
        except Kd2trtError as exc:
            raise ValueError(str(exc)) from None


class BuildConfig(_Strict):
    """TensorRT engine builds (where TensorRT and a CUDA device are present): FP32 always, FP16/INT8 per export."""

    engines: bool = Field(True, description="build engines when TensorRT and a GPU are present")
    int8_path: Literal["auto", "cache", "qdq"] = Field(
        "auto", description="auto: implicit INT8 with the cache on <=10.x, Q/DQ on 11.x; cache; qdq")
    min_batch: int = Field(1, ge=1)
    opt_batch: int | None = Field(None, ge=1, description="default: max_batch")
    max_batch: int = Field(32, ge=1, description="largest batch of the engines' optimisation profile")
    workspace_mb: int | None = Field(None, ge=16, description="default: 512 on Jetson, 2048 elsewhere")
    timing_cache_dir: Path | None = Field(Path("engines/timing-cache"), description="one cache per GPU+TensorRT")
    dla_core: int | None = Field(None, ge=0, description="Jetson AGX/NX Orin DLA core (FP16/INT8, static shapes)")
    gpu_fallback: bool = True
    version_compatible: bool = False
    hardware_compatible: bool = False

    @model_validator(mode="after")
    def _batches(self) -> BuildConfig:
        opt = self.opt_batch or self.max_batch
        if not self.min_batch <= opt <= self.max_batch:
            raise ValueError("need min_batch <= opt_batch <= max_batch")
        return self


class BenchConfig(_Strict):
    """Latency protocol and the CI gates of `kd2trt bench`."""

    batch_sizes: list[PositiveInt] = Field([1, 32], min_length=1, description="latency is measured at each")
    warmup: int = Field(20, ge=0, description="untimed iterations first (caches, allocator, clocks)")
    iterations: int = Field(200, ge=5, description="timed iterations per batch size")
    duration_s: float | None = Field(None, gt=0, description="time for at least this long instead")
    threads: int | None = Field(None, ge=1, description="CPU threads for PyTorch and ONNX Runtime")
    device: Device | None = Field(None, description="auto | cpu | cuda | cuda:N: where the PyTorch and ONNX "
                                  "Runtime runners run; default: the run's device")
    cuda_graphs: bool = Field(False, description="TensorRT engines: replay each batch size as a captured CUDA graph")
    max_top1_drop: float | None = Field(None, ge=0, description="gate: student rows' top-1 drop vs teacher")
    min_agreement: float | None = Field(None, ge=0, le=100, description="gate: % agreement with the teacher")
    min_speedup: float | None = Field(None, gt=0, description="gate: p50 speed-up vs the teacher at the first "
                                      "of batch_sizes")
    parity: bool = Field(True, description="gate: every exported form of the student computes what the FP32 "
                         "student does: max |Δlogit| within export.parity_atol + parity_rtol × logit range (FP32) and "
                         "export.fp16_atol + fp16_rtol × logit range (FP16), "
                         "top-1 agreement at least int8_min_agreement (INT8)")
    int8_min_agreement: float = Field(97.0, ge=0, le=100, description="gate: % of test images on which an INT8 "
                                      "form predicts what the FP32 student predicts")


class RunConfig(_Strict):
    """A whole run: data, teacher, student and distillation, then export, engine build and bench."""

    name: str = Field("digits", pattern=r"^[A-Za-z0-9._-]+$")
    seed: int = Field(0, description="seed of initialisation, shuffling and the labeled subset")
    device: Device = Field("auto", description="where PyTorch runs (auto, cpu, cuda or cuda:N); also the bench's "
                           "unless bench.device is set")
    output_root: Path = Path("runs")
    tensorboard: bool = Field(False, description="write TensorBoard logs to <run>/tensorboard")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)

    @model_validator(mode="after")
    def _bench_fits_engines(self) -> RunConfig:
        largest = max(self.bench.batch_sizes)
        if self.build.engines and largest > self.build.max_batch:
            raise ValueError(f"bench.batch_sizes includes {largest} but build.max_batch is {self.build.max_batch}, "
                             "so the engines cannot run it; raise build.max_batch or lower bench.batch_sizes "
                             "(or set build.engines: false)")
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_root / self.name

    def bench_config(self) -> BenchConfig:
        """The bench section with its device resolved: bench.device, else the run's device."""
        return self.bench.model_copy(update={"device": self.bench.device or self.device})

    def section_hash(self, *sections: str) -> str:
        """A short hash of some sections, to tell whether a resume file belongs to this config."""
        dumped = self.model_dump(mode="json")
        payload = json.dumps({key: dumped[key] for key in sections}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _format_validation_error(error: ValidationError, source: str) -> str:
    parts = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling against pipeline/digits.yaml)"
        parts.append(f"{key}: {message}" if key else message)
    return f"{source}: " + "; ".join(parts)


def set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating levels as needed."""
    *parents, leaf = dotted_key.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise Kd2trtError(f"--set {dotted_key}: {part} is not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value` with the value read as YAML (numbers, booleans, lists, null)."""
    if "=" not in text:
        raise Kd2trtError(f"--set {text!r}: expected KEY=VALUE, e.g. --set distill.temperature=4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a recipe (or the defaults when `path` is None), apply dotted-key overrides, validate.

    A recipe file that sets nothing (empty, or only comments) is a :class:`Kd2trtWarning` naming it: every
    value is then the default, which is rarely what the file was meant to say.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        file = Path(path)
        if not file.is_file():
            raise Kd2trtError(f"{file}: recipe not found; see pipeline/ for examples (pipeline/digits.yaml)")
        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise Kd2trtError(f"{file}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if not loaded and isinstance(loaded, dict | None):
            warnings.warn(Kd2trtWarning(f"{file}: the recipe is empty, so every setting is the default "
                                        "(see pipeline/digits.yaml)"), stacklevel=2)
            loaded = {}
        if not isinstance(loaded, dict):
            raise Kd2trtError(f"{file}: a recipe is a mapping of sections (data:, teacher:, …), not a list or value")
        tree = loaded
    for key, value in (overrides or {}).items():
        set_dotted(tree, key, value)
    try:
        config = RunConfig.model_validate(tree)
    except ValidationError as exc:
        if overrides:
            source += " (with command-line overrides)"
        raise Kd2trtError(_format_validation_error(exc, source)) from None
    return config


def dump_config(config: RunConfig) -> str:
    """The fully resolved config as YAML, saved beside the outputs so a run can be repeated."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
