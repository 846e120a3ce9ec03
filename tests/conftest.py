"""Shared fixtures: a tiny, fast recipe on the embedded digits data, and image folders built from it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def interrupt_after_writing(monkeypatch: pytest.MonkeyPatch, module: Any, filename: str) -> Callable[..., Path]:
    """Make `module.atomic_write_json` raise KeyboardInterrupt right after it wrote a file named `filename` (a
    kill between two epochs, the state of the finished one on disk); return the real writer, to restore."""
    real_write = module.atomic_write_json

    def write_then_interrupt(path: Path, obj: object) -> Path:
        written = real_write(path, obj)
        if Path(path).name == filename:
            raise KeyboardInterrupt
        return written
    monkeypatch.setattr(module, "atomic_write_json", write_then_interrupt)
    return real_write


def child_pythonpath() -> str:
    """PYTHONPATH for a kd2trt subprocess: the repository first, then whatever the caller already had."""
    import os

    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def tiny_overrides(**extra: object) -> dict[str, object]:
    """A recipe that trains in seconds: small teacher, 2 epochs each."""
    overrides: dict[str, object] = {
        "teacher.channels": [16, 32], "teacher.blocks": 1, "teacher.feature_tap": "stages.1",
        "teacher.train.epochs": 2, "teacher.train.lr": 0.01, "student.channels": [8, 16],
        "student.feature_tap": "stages.1",
        "student.train.epochs": 2, "data.image_size": 8, "device": "cpu",
    }
    overrides.update(extra)
    return overrides


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder (ROOT/CLASS/*.png) of 30 digits per class, written from the embedded data set."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits_folder")
    digits = load_digits()
    for cls in range(10):
        folder = root / f"class_{cls}"
        folder.mkdir()
        for i, image in enumerate(digits.images[digits.target == cls][:30]):
            Image.fromarray(np.uint8(image * 255 / 16)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny distillation (teacher.pt, student.pt) shared by the export and bench tests."""
    import os

    from rich.console import Console

    from kd2trt.config import load_config
    from kd2trt.distill.train import run_distill

    run_dir = tmp_path_factory.mktemp("tiny_run")
    config = load_config(None, tiny_overrides(**{"distill.baseline": False, "teacher.train.epochs": 4,
                                                 "student.train.epochs": 6}))
    run_distill(config, run_dir, console=Console(file=open(os.devnull, "w")))  # noqa: SIM115
    return run_dir
