from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kd2trt.config import DataConfig
from kd2trt.data import Preprocessing, labeled_mask, load_data
from kd2trt.errors import Kd2trtError


def test_digits_split_is_stratified_seeded_and_disjoint() -> None:
    a = load_data(DataConfig())
    b = load_data(DataConfig())
    assert (len(a.train), len(a.val), len(a.test)) == (1077, 360, 360)
    assert torch.equal(a.train.labels, b.train.labels)
    assert a.num_classes == 10 and a.preprocessing.channels == 1
    # each split holds every class, in roughly the data set's proportions
    for split in (a.train, a.val, a.test):
        counts = torch.bincount(split.labels, minlength=10).float()
        assert counts.min() / counts.max() > 0.8
    ids = lambda ds: {s.array.tobytes() + bytes([s.label]) for s in ds.samples}  # noqa: E731
    assert not ids(a.train) & ids(a.test)


def test_preprocessing_is_measured_and_applied() -> None:
    data = load_data(DataConfig(image_size=12))
    image, label, index = data.train[3]
    assert image.shape == (1, 12, 12) and index == 3 and isinstance(label, int)
    stack = torch.stack([data.train[i][0] for i in range(len(data.train))])
    assert stack.mean().item() == pytest.approx(0.0, abs=0.05)
    assert stack.std().item() == pytest.approx(1.0, abs=0.05)


def test_stored_preprocessing_is_reused_exactly() -> None:
    fixed = Preprocessing(image_size=16, channels=1, mean=(0.5,), std=(0.25,))
    data = load_data(DataConfig(), fixed)
    assert data.preprocessing == fixed
    assert torch.equal(data.test[0][0], fixed.to_tensor(data.test.samples[0].load()))


def test_labeled_mask_fraction_and_classes() -> None:
    labels = torch.arange(10).repeat(50)
    mask = labeled_mask(labels, 0.1, seed=3)
    assert mask.sum() == 50
    assert torch.bincount(labels[mask], minlength=10).min() == 5
    assert torch.equal(mask, labeled_mask(labels, 0.1, seed=3))
    assert not torch.equal(mask, labeled_mask(labels, 0.1, seed=4))
    assert labeled_mask(labels, 1.0, 0).all()


def test_imagefolder_single_root_is_split(digits_folder: Path) -> None:
    data = load_data(DataConfig(spec=f"imagefolder:{digits_folder}", image_size=8))
    assert data.classes == [f"class_{i}" for i in range(10)]
    assert len(data.train) + len(data.val) + len(data.test) == 300
    assert data.train[0][0].shape == (1, 8, 8)


def test_imagefolder_with_split_folders(tmp_path: Path, digits_folder: Path) -> None:
    for split in ("train", "val", "test"):
        for cls in ("class_0", "class_1"):
            (tmp_path / split / cls).mkdir(parents=True)
            for png in sorted((digits_folder / cls).glob("*.png"))[:5]:
                (tmp_path / split / cls / png.name).write_bytes(png.read_bytes())
    data = load_data(DataConfig(spec=f"imagefolder:{tmp_path}", image_size=8, channels=3))
    assert (len(data.train), len(data.val), len(data.test)) == (10, 10, 10)
    assert data.train[0][0].shape == (3, 8, 8)


@pytest.mark.parametrize(("spec", "message"), [
    ("imagefolder:/does/not/exist", "data set path does not exist"),
    ("cifar10:{tmp}", r"cifar10 files not found .*cifar-10-batches-py.*never downloads"),
    ("mnist:{tmp}", r"mnist files not found .*MNIST/raw"),
    ("imagefolder", "needs a path"),
    ("svhn:/x", "is not known"),
    ("imagefolder:{tmp}", "no class folders"),
])
def test_bad_specs_are_one_line_errors(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(Kd2trtError, match=message) as info:
        load_data(DataConfig(spec=spec.format(tmp=tmp_path)))
    assert "\n" not in str(info.value)


def test_empty_class_folder_and_undecodable_image(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(Kd2trtError, match="no images found"):
        load_data(DataConfig(spec=f"imagefolder:{tmp_path}"))
    for cls in ("a", "b"):
        for i in range(6):
            (tmp_path / cls / f"{i}.png").write_bytes(b"not a png")
    with pytest.raises(Kd2trtError, match=r"[ab]/\d\.png: cannot decode this image .* remove or replace"):
        load_data(DataConfig(spec=f"imagefolder:{tmp_path}"))


def test_preprocessing_record_must_be_consistent() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="mean and std need 3 values"):
        Preprocessing(image_size=8, channels=3, mean=(0.5,), std=(0.25,))
    with pytest.raises(ValidationError, match="must be > 0"):
        Preprocessing(image_size=8, channels=1, mean=(0.5,), std=(0.0,))
    with pytest.raises(Kd2trtError, match=r"data\.std \[0\.0\]: every value must be > 0"):
        load_data(DataConfig(mean=[0.5], std=[0.0]))
