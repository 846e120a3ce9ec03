"""Real folders: empty classes, one class, classes missing from a split, stray files and mixed image modes are
one-line errors or one warning each, never a silent mis-load."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kd2trt.config import DataConfig
from kd2trt.data import DataWarning, data_fingerprint, load_data, write_digits_folder
from kd2trt.errors import Kd2trtError


def _split_folder(tmp_path: Path, per_class: int = 4) -> Path:
    return write_digits_folder(tmp_path / "data", image_size=8, channels=1, digits=[0, 1, 2],
                               per_class=[per_class * 3] * 3, fractions=(1 / 3, 1 / 3))


def _load(root: Path, **kwargs: object):
    return load_data(DataConfig(spec=f"imagefolder:{root}", image_size=8, **kwargs))


def _one_line_error(root: Path, pattern: str) -> None:
    with pytest.raises(Kd2trtError, match=pattern) as info:
        _load(root)
    assert "\n" not in str(info.value)


def test_the_generator_writes_the_split_layout_reproducibly(tmp_path: Path) -> None:
    a = write_digits_folder(tmp_path / "a", image_size=16, digits=[3, 5], per_class=[30, 90])
    b = write_digits_folder(tmp_path / "b", image_size=16, digits=[3, 5], per_class=[30, 90])
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    counts = {(s, c): len(list((a / s / c).glob("*.png"))) for s in ("train", "val", "test")
              for c in ("digit_3", "digit_5")}
    assert counts == {("train", "digit_3"): 18, ("val", "digit_3"): 6, ("test", "digit_3"): 6,
                      ("train", "digit_5"): 54, ("val", "digit_5"): 18, ("test", "digit_5"): 18}
    with Image.open(a / files[0]) as image:
        assert image.mode == "RGB" and image.size == (16, 16)
    data = _load(a)
    assert data.classes == ["digit_3", "digit_5"] and data.preprocessing.channels == 3


def test_an_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = _split_folder(tmp_path)
    for png in (root / "val" / "digit_1").glob("*.png"):
        png.unlink()
    _one_line_error(root, r"val/digit_1: no images found in class folder 'digit_1' .*add images or remove")


def test_a_single_class_data_set_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "one"
    (root / "cats").mkdir(parents=True)
    for i in range(12):
        Image.fromarray(np.full((8, 8), i * 10, np.uint8)).save(root / "cats" / f"{i}.png")
    _one_line_error(root, r"one: only one class folder \('cats'\); a classifier needs at least two")
    split = _split_folder(tmp_path)
    for name in ("digit_1", "digit_2"):
        for part in ("train", "val", "test"):
            for png in (split / part / name).glob("*.png"):
                png.unlink()
            (split / part / name).rmdir()
    _one_line_error(split, r"train: only one class folder \('digit_0'\)")


def test_a_class_missing_from_val_or_test_or_only_there_is_named(tmp_path: Path) -> None:
    root = _split_folder(tmp_path)
    for png in (root / "test" / "digit_2").glob("*.png"):
        png.unlink()
    (root / "test" / "digit_2").rmdir()
    _one_line_error(root, r"test/digit_2: class folder missing \(other splits have class 'digit_2'\)")
    (root / "test" / "digit_2").mkdir()
    for png in (root / "val" / "digit_2").glob("*.png"):
        (root / "test" / "digit_2" / png.name).write_bytes(png.read_bytes())
    (root / "val" / "digit_9").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "val" / "digit_9" / "0.png")
    _one_line_error(root, r"val/digit_9: class 'digit_9' is not in the training split \(digit_0, digit_1, "
                          r"digit_2\); add it to train/ or remove it")


def test_non_image_files_are_listed_in_one_warning(tmp_path: Path) -> None:
    root = _split_folder(tmp_path)
    strays = [root / "train" / "digit_0" / "notes.txt", root / "val" / "digit_1" / "Thumbs.db",
              root / "test" / "digit_2" / "labels.csv"]
    for stray in strays:
        stray.write_text("x")
    with pytest.warns(DataWarning) as record:
        data = _load(root)
    messages = [str(w.message) for w in record if issubclass(w.category, DataWarning)]
    assert len(messages) == 1
    assert "3 file(s) that are not images were skipped" in messages[0]
    assert all(stray.relative_to(root).as_posix() in messages[0] for stray in strays)
    assert len(data.train) + len(data.val) + len(data.test) == 36
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data_fingerprint(DataConfig(spec=f"imagefolder:{root}"))  # the fingerprint does not warn again


def test_mixed_modes_are_converted_with_one_warning(tmp_path: Path) -> None:
    root = _split_folder(tmp_path)
    first, second = sorted((root / "train" / "digit_0").glob("*.png"))[:2]
    Image.open(first).convert("RGBA").save(first)
    Image.open(second).convert("RGB").save(second)
    with pytest.warns(DataWarning) as record:
        data = _load(root)
    messages = [str(w.message) for w in record if issubclass(w.category, DataWarning)]
    assert len(messages) == 1
    assert "mixed modes (L 34, RGBA 1, RGB 1)" in messages[0]
    assert "converted to RGB, 3 channel(s) (alpha dropped)" in messages[0]
    # colour among grey keeps 3 channels; every tensor has the same shape
    assert data.preprocessing.channels == 3
    assert {tuple(data.train[i][0].shape) for i in range(len(data.train))} == {(3, 8, 8)}
    with pytest.warns(DataWarning, match="converted to grey"):
        grey = _load(root, channels=1)
    assert grey.train[0][0].shape == (1, 8, 8)


def test_recorded_splits_still_work_on_folders(tmp_path: Path) -> None:
    from kd2trt.data import split_record

    root = _split_folder(tmp_path)
    data = _load(root)
    again = load_data(DataConfig(spec=f"imagefolder:{root}", image_size=8), data.preprocessing,
                      recorded=split_record(data))
    assert [s.key for s in again.test.samples] == [s.key for s in data.test.samples]
