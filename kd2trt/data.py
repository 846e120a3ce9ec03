"""Data sets by spec string, and the one preprocessing definition every stage shares.

Why one definition: an INT8 engine calibrated on images normalised differently from the ones it
is later fed with loses accuracy silently. The `Preprocessing` chosen here is stored in every
checkpoint; export, calibration and bench rebuild the data from the checkpoint, never from flags.

Specs: `digits` (scikit-learn's embedded 8×8 digits, no download), `imagefolder:PATH`,
`cifar10:ROOT`, `cifar100:ROOT`, `mnist:ROOT`, `fashionmnist:ROOT` (read from a local root; nothing is
ever downloaded).

Why splits are recorded, not recomputed: a seeded split of a folder is only reproducible while the folder
stays the same. Delete 20 images and the same seed puts training images into the test split, and every
later figure is measured on data the model was trained on. So distillation records each split's members (a
stable key per image: its path under the root, or its index) and a content hash of the validation and test
images in every checkpoint; export and bench rebuild exactly those splits and refuse, in one line, data
that has lost or changed any of them. `data_fingerprint` (file list, sizes and modification times: cheap
for large folders) tells `kd2trt run` that the data changed and distillation must run again.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, model_validator
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision.transforms import v2

from kd2trt.config import DataConfig
from kd2trt.errors import Kd2trtError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
GREY_MODES = ("L", "1", "I", "I;16", "F", "LA")


class DataWarning(UserWarning):
    """Something in a data set that kd2trt works around but the user should know of (one per load)."""


_TORCHVISION_SETS = {
    "cifar10": ("CIFAR10", "ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"),
    "cifar100": ("CIFAR100", "ROOT/cifar-100-python/{train,test,meta}"),
    "mnist": ("MNIST", "ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "fashionmnist": ("FashionMNIST", "ROOT/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
}


class Preprocessing(BaseModel):
    """PIL image → normalised float tensor (C×H×W). Stored in checkpoints as a plain dict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Preprocessing:
        if self.image_size < 1 or self.channels not in (1, 3):
            raise ValueError(f"image_size {self.image_size} and channels {self.channels}: need a positive size "
                             "and 1 or 3 channels")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need {self.channels} values (one per channel), got {len(self.mean)} "
                             f"and {len(self.std)}")
        if min(self.std) <= 0:
            raise ValueError(f"std {list(self.std)} must be > 0")
        return self

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        """The deterministic transform used for evaluation, calibration and benchmarking."""
        return self._base()(image)

    def _base(self) -> v2.Compose:
        return v2.Compose([
            v2.Lambda(self._convert_mode),
            v2.PILToTensor(),
            v2.Resize((self.image_size, self.image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(self.mean), list(self.std)),
        ])

    def augmenting(self) -> Callable[[Image.Image], torch.Tensor]:
        """Training-time variant: the same transform plus a padded random crop and a horizontal flip."""
        pad = max(1, self.image_size // 8)
        return v2.Compose([
            self._base(),
            v2.RandomCrop(self.image_size, padding=pad),
            v2.RandomHorizontalFlip(),
        ])

    def _convert_mode(self, image: Image.Image) -> Image.Image:
        return image.convert("L" if self.channels == 1 else "RGB")


@dataclass(frozen=True)
class Sample:
    """Where one image comes from: a file, or an in-memory array (digits, torchvision sets)."""

    label: int
    path: Path | None = None
    array: np.ndarray | None = None
    key: str = ""  # stable identity: the path under the data set's root, or "<part>#<index>" for arrays

    def digest(self, content: bool) -> bytes:
        """What identifies this image's data: its bytes (content), or for files their size and mtime."""
        if self.array is not None:
            return hashlib.sha256(f"{self.array.shape}{self.array.dtype}".encode() + self.array.tobytes()).digest()
        assert self.path is not None
        if content:
            return hashlib.sha256(self.path.read_bytes()).digest()
        stat = self.path.stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}".encode()

    def load(self) -> Image.Image:
        if self.array is not None:
            return Image.fromarray(self.array)
        assert self.path is not None
        try:
            with Image.open(self.path) as image:
                image.load()
                return image
        except (UnidentifiedImageError, OSError) as exc:
            raise Kd2trtError(
                f"{self.path}: cannot decode this image ({exc.__class__.__name__}); remove or replace the file"
            ) from None


class ImageDataset(Dataset[tuple[torch.Tensor, int, int]]):
    """Items are `(image, label, index)`; the index lets the trainer look up cached teacher outputs."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor]):
        self.samples = list(samples)
        self.transform = transform
        self._tensors: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        sample = self.samples[index]
        if self._tensors is not None:
            return self._tensors[index], sample.label, index
        return self.transform(sample.load()), sample.label, index

    def keep_in_memory(self, max_bytes: int = 512 * 2**20) -> bool:
        """Transform every image once and keep the tensors, if they fit in `max_bytes`.

        Only for deterministic transforms. Decoding and resizing small images costs several times
        the forward/backward pass of a small student, so this is what makes an epoch cheap.
        """
        if self._tensors is not None or not self.samples:
            return self._tensors is not None
        first = self.transform(self.samples[0].load())
        if first.numel() * first.element_size() * len(self.samples) > max_bytes:
            return False
        self._tensors = torch.stack([first] + [self.transform(s.load()) for s in self.samples[1:]])
        return True

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([sample.label for sample in self.samples], dtype=torch.long)

    def with_transform(self, transform: Callable[[Image.Image], torch.Tensor]) -> ImageDataset:
        return ImageDataset(self.samples, transform)


@dataclass
class DataSplits:
    """The three splits of a data set, its class names, and the preprocessing they share."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    classes: list[str]
    preprocessing: Preprocessing
    deterministic_train: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> ImageDataset:
        if name not in ("train", "val", "test"):
            raise Kd2trtError(f"unknown split {name!r}: use train, val or test")
        return getattr(self, name)


def _samples(config: DataConfig, warn: bool = True) -> tuple[Any, list[str], list[Sample] | None]:
    """Every image of `config.spec`: (samples or a (train, val, test) tuple of its own folders, classes, test)."""
    kind, _, argument = config.spec.partition(":")
    if kind == "digits":
        if argument:
            raise Kd2trtError(f"data spec {config.spec!r}: digits takes no path (it ships with scikit-learn)")
        samples, classes, test_samples = _digits_samples(), [str(d) for d in range(10)], None
    elif kind == "imagefolder":
        samples, classes, test_samples = _imagefolder_samples(_require_path(config.spec, argument), config, warn)
    elif kind in _TORCHVISION_SETS:
        samples, classes, test_samples = _torchvision_samples(kind, _require_path(config.spec, argument))
    else:
        raise Kd2trtError(
            f"data spec {config.spec!r} is not known; use digits, imagefolder:PATH, cifar10:ROOT, "
            "cifar100:ROOT, mnist:ROOT or fashionmnist:ROOT"
        )
    return samples, classes, test_samples


def _flat(samples: Any, test_samples: list[Sample] | None) -> list[Sample]:
    return [s for part in samples for s in part] if isinstance(samples, tuple) else samples + (test_samples or [])


def _digest(samples: Iterable[Sample], content: bool) -> str:
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(f"{sample.key}\t{sample.label}\t".encode() + sample.digest(content) + b"\n")
    return digest.hexdigest()


def data_fingerprint(config: DataConfig) -> str:
    """A cheap hash of the whole data set (keys, labels, and file sizes and mtimes or array bytes)."""
    samples, _, test_samples = _samples(config, warn=False)
    return _digest(_flat(samples, test_samples), content=False)


#: splits whose images are hashed by content when recorded and checked (the figures come from them); the
#: training split is checked by membership (its images are not all read by export or bench)
CONTENT_CHECKED = ("val", "test")


def split_record(splits: DataSplits) -> dict[str, Any]:
    """What a checkpoint records of its splits: each split's keys, in order, and the hash of its images."""
    record = {}
    for name in ("train", "val", "test"):
        samples = splits.split(name).samples
        record[name] = {"keys": [s.key for s in samples], "sha256": _digest(samples, content=name in CONTENT_CHECKED)}
    return record


def _recorded_splits(everything: list[Sample], recorded: dict[str, Any], spec: str
                     ) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """The splits a checkpoint recorded, from the data as it is now; lost or changed images are an error."""
    by_key = {sample.key: sample for sample in everything}
    rebuilt = []
    for name in ("train", "val", "test"):
        keys = recorded[name]["keys"]
        missing = [key for key in keys if key not in by_key]
        if missing:
            raise Kd2trtError(f"data {spec!r}: {len(missing)} of the {len(keys)} {name} images the model was "
                              f"distilled with are gone (e.g. {missing[0]}); restore them, or run `kd2trt distill` "
                              "again on the data as it is now")
        samples = [by_key[key] for key in keys]
        if name in CONTENT_CHECKED and _digest(samples, content=True) != recorded[name]["sha256"]:
            raise Kd2trtError(f"data {spec!r}: the {name} images changed since distillation (same files, other "
                              "content or labels); restore them, or run `kd2trt distill` again on the data as it "
                              "is now")
        rebuilt.append(samples)
    return rebuilt[0], rebuilt[1], rebuilt[2]


def load_data(config: DataConfig, preprocessing: Preprocessing | None = None, in_memory: bool = True,
              recorded: dict[str, Any] | None = None) -> DataSplits:
    """Build the splits of `config.spec`. Pass a checkpoint's `preprocessing` and `recorded` splits
    (`split_record`) to reproduce them exactly, or fail naming what is gone or changed.

    With `in_memory`, splits whose transform is deterministic are decoded once and kept as tensors
    when they fit (512 MiB each); larger data sets are decoded per batch.
    """
    samples, classes, test_samples = _samples(config)
    if recorded is not None:
        train, val, test = _recorded_splits(_flat(samples, test_samples), recorded, config.spec)
    elif isinstance(samples, tuple):  # imagefolder with its own train/val/test folders
        train, val, test = samples
    else:
        train, val, test = _split(samples, test_samples, config)
    modes = _file_modes(_flat(samples, test_samples))
    if preprocessing is None:
        preprocessing = _measure_preprocessing(train, config, modes)
    if len(modes) > 1:
        counts = ", ".join(f"{mode} {count}" for mode, count in modes.most_common())
        target = "grey (L)" if preprocessing.channels == 1 else "RGB"
        alpha = " (alpha dropped)" if "RGBA" in modes or "LA" in modes else ""
        warnings.warn(f"{config.spec}: the images have mixed modes ({counts}); all are converted to {target}, "
                      f"{preprocessing.channels} channel(s){alpha}", DataWarning, stacklevel=2)
    base = preprocessing.to_tensor
    train_transform = preprocessing.augmenting() if config.augment else base
    splits = DataSplits(
        train=ImageDataset(train, train_transform),
        val=ImageDataset(val, base),
        test=ImageDataset(test, base),
        classes=classes,
        preprocessing=preprocessing,
        deterministic_train=not config.augment,
    )
    if in_memory:
        for dataset in (splits.train, splits.val, splits.test) if not config.augment else (splits.val, splits.test):
            dataset.keep_in_memory()
    return splits


def labeled_mask(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Mark a stratified `fraction` of `labels` (at least one per class) as labeled, reproducibly."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    if fraction >= 1.0:
        return mask.fill_(True)
    generator = torch.Generator().manual_seed(seed)
    for cls in labels.unique():
        members = torch.nonzero(labels == cls).flatten()
        keep = max(1, round(fraction * len(members)))
        chosen = members[torch.randperm(len(members), generator=generator)[:keep]]
        mask[chosen] = True
    return mask


def _require_path(spec: str, argument: str) -> Path:
    if not argument:
        raise Kd2trtError(f"data spec {spec!r} needs a path, e.g. {spec.split(':')[0]}:/data/{spec.split(':')[0]}")
    path = Path(argument).expanduser()
    if not path.exists():
        raise Kd2trtError(f"{path}: data set path does not exist (from spec {spec!r}); fix the path")
    return path


def _digits_samples() -> list[Sample]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return [Sample(label=int(label), array=image, key=f"digits#{index}")
            for index, (image, label) in enumerate(zip(images, digits.target, strict=True))]


def _class_folders(root: Path) -> list[Path]:
    return sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))


def _folder_samples(root: Path, classes: list[str], top: Path | None = None,
                    skipped: list[Path] | None = None) -> list[Sample]:
    """The images of ROOT/CLASS/…, keyed by their path under `top` (the data set's root).

    Every class folder must hold images, and `root` must have no class folder the training split lacks; files
    that are not images (by suffix) are appended to `skipped`.
    """
    top = top or root
    extra = [folder for folder in _class_folders(root) if folder.name not in classes]
    if extra:
        raise Kd2trtError(f"{extra[0]}: class {extra[0].name!r} is not in the training split "
                          f"({', '.join(classes)}); add it to train/ or remove it")
    samples = []
    for index, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise Kd2trtError(f"{folder}: class folder missing (other splits have class {name!r}); add it")
        files, others = [], []
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                (files if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
        if not files:
            raise Kd2trtError(f"{folder}: no images found in class folder {name!r} (expected *.png|jpg|…); "
                              "add images or remove the folder")
        if skipped is not None:
            skipped.extend(others)
        samples.extend(Sample(label=index, path=path, key=path.relative_to(top).as_posix()) for path in files)
    return samples


def _imagefolder_classes(folder: Path, what: str) -> list[str]:
    classes = [child.name for child in _class_folders(folder)]
    if not classes:
        raise Kd2trtError(f"{folder}: no class folders; imagefolder expects {what}CLASS/image files")
    if len(classes) == 1:
        raise Kd2trtError(f"{folder}: only one class folder ({classes[0]!r}); a classifier needs at least two "
                          f"({what}CLASS_A/…, {what}CLASS_B/…)")
    return classes


def _imagefolder_samples(root: Path, config: DataConfig, warn: bool = True) -> tuple[Any, list[str], None]:
    """Either ROOT/{train,val,test}/CLASS/* (as in the chest-X-ray layout) or ROOT/CLASS/*."""
    if not root.is_dir():
        raise Kd2trtError(f"{root}: not a folder; imagefolder expects ROOT/CLASS/image files")
    skipped: list[Path] = []
    result: tuple[Any, list[str], None]
    if (root / "train").is_dir():
        classes = _imagefolder_classes(root / "train", "train/")
        train = _folder_samples(root / "train", classes, root, skipped)
        test = _folder_samples(root / "test", classes, root, skipped) if (root / "test").is_dir() else None
        if (root / "val").is_dir():
            val = _folder_samples(root / "val", classes, root, skipped)
            if test is None:
                train, test = _stratified(train, config.test_fraction, config.split_seed)
            result = (train, val, test), classes, None
        else:
            result = train, classes, test  # type: ignore[assignment]
    else:
        classes = _imagefolder_classes(root, "ROOT/")
        result = _folder_samples(root, classes, skipped=skipped), classes, None
    if skipped and warn:
        shown = ", ".join(path.relative_to(root).as_posix() for path in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(f"{root}: {len(skipped)} file(s) that are not images were skipped: {shown}{more}",
                      DataWarning, stacklevel=3)
    return result


def _file_modes(samples: Iterable[Sample]) -> Counter[str]:
    """How many file images have each PIL mode (headers only; undecodable files are reported when loaded)."""
    modes: Counter[str] = Counter()
    for sample in samples:
        if sample.path is None:
            continue
        try:
            with Image.open(sample.path) as image:
                modes[image.mode] += 1
        except (UnidentifiedImageError, OSError):
            continue
    return modes


def _torchvision_samples(kind: str, root: Path) -> tuple[list[Sample], list[str], list[Sample]]:
    import torchvision.datasets as tvd

    class_name, expected = _TORCHVISION_SETS[kind]
    factory = getattr(tvd, class_name)
    try:
        train_set = factory(str(root), train=True, download=False)
        test_set = factory(str(root), train=False, download=False)
    except (RuntimeError, FileNotFoundError) as exc:
        raise Kd2trtError(
            f"{root}: {kind} files not found ({exc}); expected {expected} — kd2trt never downloads"
        ) from None

    def samples(dataset: Any, part: str) -> list[Sample]:
        data = dataset.data.numpy() if isinstance(dataset.data, torch.Tensor) else np.asarray(dataset.data)
        return [Sample(label=int(t), array=a, key=f"{part}#{i}")
                for i, (a, t) in enumerate(zip(data, dataset.targets, strict=True))]

    return samples(train_set, "train"), list(train_set.classes), samples(test_set, "test")


def _stratified(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    labels = [sample.label for sample in samples]
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    try:
        keep, held = train_test_split(samples, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise Kd2trtError(f"{len(samples)} images in {len(counts[counts > 0])} classes are too few for a "
                          f"{fraction:.0%} held-out split ({exc}); add images or use train/val/test folders") from None
    return list(keep), list(held)


def _split(samples: list[Sample], test: list[Sample] | None, config: DataConfig):
    """Seeded stratified split; a data set's own test split is kept when it has one."""
    if len(samples) < 10:
        raise Kd2trtError(f"data spec {config.spec!r}: only {len(samples)} images, too few to split")
    if test is None:
        samples, test = _stratified(samples, config.test_fraction, config.split_seed)
        val_share = config.val_fraction / (1.0 - config.test_fraction)
    else:
        val_share = config.val_fraction
    train, val = _stratified(samples, val_share, config.split_seed)
    return train, val, test


def _measure_preprocessing(train: list[Sample], config: DataConfig, modes: Counter[str] | None = None,
                           limit: int = 2000) -> Preprocessing:
    """Channels, mean and std from (up to `limit` images of) the training split, unless configured.

    The default channels: 1 when every image is grey, else 3 (a colour image among grey ones keeps its colour).
    """
    grey = all(mode in GREY_MODES for mode in modes) if modes else train[0].load().mode in GREY_MODES
    channels = config.channels or (1 if grey else 3)
    if config.mean is not None and config.std is not None:
        mean, std = tuple(config.mean), tuple(config.std)
        if len(mean) != channels or len(std) != channels:
            raise Kd2trtError(f"data.mean/std need {channels} values (one per channel)")
        if min(std) <= 0:
            raise Kd2trtError(f"data.std {list(std)}: every value must be > 0 (it divides the pixels)")
    else:
        raw = Preprocessing(image_size=config.image_size, channels=channels,
                            mean=(0.0,) * channels, std=(1.0,) * channels)
        step = max(1, len(train) // limit)
        stack = torch.stack([raw.to_tensor(sample.load()) for sample in train[::step]])
        mean = tuple(round(float(v), 6) for v in stack.mean(dim=(0, 2, 3)))
        std = tuple(round(max(float(v), 1e-6), 6) for v in stack.std(dim=(0, 2, 3)))
    return Preprocessing(image_size=config.image_size, channels=channels, mean=mean, std=std)


def write_digits_folder(root: Path, image_size: int = 64, channels: int = 3, digits: Sequence[int] | None = None,
                        per_class: Sequence[int] | None = None, fractions: tuple[float, float] = (0.2, 0.2),
                        seed: int = 0) -> Path:
    """Write scikit-learn's digits as an ImageFolder, ROOT/{train,val,test}/digit_D/NNNN.png, reproducibly.

    A stand-in for a real folder-per-class data set (the chest-X-ray layout) that needs no download: every
    8×8 digit is upsampled (bicubic) to `image_size`; with 3 `channels` it is drawn in a random bright colour
    on a random dark background (seeded), so that the colour carries no label. `digits` picks classes (all
    ten by default) and `per_class` caps each one's image count (e.g. [60, 180]: a 1:3 imbalance); each class
    is split stratified into val and test `fractions`, the rest is train. The same arguments write the same
    bytes.
    """
    from sklearn.datasets import load_digits

    if channels not in (1, 3):
        raise Kd2trtError(f"write_digits_folder: channels {channels} must be 1 or 3")
    data = load_digits()
    chosen = list(range(10)) if digits is None else [int(d) for d in digits]
    caps = list(per_class) if per_class is not None else [None] * len(chosen)
    if len(caps) != len(chosen):
        raise Kd2trtError(f"write_digits_folder: per_class has {len(caps)} counts for {len(chosen)} digits")
    rng = np.random.default_rng(seed)
    root = Path(root)
    for digit, cap in zip(chosen, caps, strict=True):
        images = data.images[data.target == digit]
        order = rng.permutation(len(images))[: cap if cap is not None else len(images)]
        n_val, n_test = (max(1, round(f * len(order))) for f in fractions)
        parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
        for split, members in parts.items():
            folder = root / split / f"digit_{digit}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in members:
                grey = Image.fromarray(np.uint8(np.clip(images[index] * (255.0 / 16.0), 0, 255)))
                grey = grey.resize((image_size, image_size), Image.Resampling.BICUBIC)
                if channels == 3:
                    alpha = np.asarray(grey, dtype=np.float32)[..., None] / 255.0
                    background, foreground = rng.uniform(0.0, 0.35, 3), rng.uniform(0.65, 1.0, 3)
                    pixels = (background * (1.0 - alpha) + foreground * alpha) * 255.0
                    out = Image.fromarray(np.uint8(np.clip(np.round(pixels), 0, 255)), "RGB")
                else:
                    out = grey
                out.save(folder / f"{int(index):04d}.png")
    return root
