"""File-system failures are one line naming the file and the cause, exit 2, with nothing half-written; a
killed run's temporary files and directories are removed by the next one.

The disk-full and read-only cases use a real tmpfs (root only: skipped, with the reason, where mount is not
permitted), always unmounted afterwards.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kd2trt.cli import app
from tests.conftest import tiny_overrides


def _set_flags(overrides: dict[str, object]) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def _invoke(*args: str) -> tuple[int, list[str], str]:
    """Exit code, the non-empty stderr lines, and everything printed."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, [line for line in result.stderr.splitlines() if line.strip()], result.output


def _assert_one_line_error(code: int, lines: list[str], pattern: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "Traceback" not in lines[0]
    assert re.search(pattern, lines[0]), lines[0]


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# ---------------------------------------------------------------------------------------------- tmpfs


def _sh(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=False)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """`tmpfs(size="1m", read_only=False)` mounts a fresh tmpfs and returns it; all are unmounted at the end."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mount/umount not found: the tmpfs tests need them (and root)")
    mounted: list[Path] = []

    def mount(size: str = "1m", read_only: bool = False, setup: Callable[[Path], None] | None = None) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        result = _sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point))
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}); "
                        "these tests need root")
        mounted.append(point)
        if setup is not None:
            setup(point)
        if read_only:
            result = _sh("mount", "-o", "remount,ro", str(point))
            if result.returncode != 0:
                pytest.skip(f"cannot remount a tmpfs read-only here ({result.stderr.strip()})")
        return point

    try:
        yield mount
    finally:
        for point in reversed(mounted):
            if _sh("umount", str(point)).returncode != 0:
                _sh("umount", "-l", str(point))


def _fill(point: Path, leave: int) -> None:
    """Fill the file system at `point` until `leave` bytes are free."""
    stats = os.statvfs(point)
    free = stats.f_bavail * stats.f_frsize
    with open(point / "filler", "wb") as handle:
        handle.write(bytes(max(0, free - leave)))


# ------------------------------------------------------------------------------------------- failures


def test_distill_to_a_full_disk_is_one_line_and_leaves_no_temp_file(tmpfs: Callable[..., Path]) -> None:
    """torch.save's "unexpected pos … vs …" RuntimeError becomes the OS's reason, for the checkpoint's path."""
    disk = tmpfs("1m")
    run_dir = disk / "run"
    run_dir.mkdir()
    _fill(disk, leave=8192)  # room for config.yaml, not for the first checkpoint
    code, lines, _ = _invoke("distill", "--out", str(run_dir),
                             *_set_flags(tiny_overrides(**{"distill.baseline": False})))
    _assert_one_line_error(code, lines, re.escape(str(run_dir)) + r"/teacher\.pt: cannot be written "
                           r"\(No space left on device\); free disk space")
    assert not _temp_files(disk)


def test_distill_into_a_read_only_file_system(tmpfs: Callable[..., Path]) -> None:
    disk = tmpfs("1m", read_only=True)
    code, lines, _ = _invoke("distill", "--out", str(disk / "runs" / "x"), *_set_flags(tiny_overrides()))
    _assert_one_line_error(code, lines, re.escape(str(disk / "runs" / "x")) + r": cannot create the directory "
                           r"\(Read-only file system\)")


def test_export_to_a_read_only_directory(tiny_run: Path, tmpfs: Callable[..., Path]) -> None:
    out = tmpfs("1m", read_only=True)
    code, lines, _ = _invoke("export", str(tiny_run / "student.pt"), "--out", str(out), "--no-fp16", "--no-int8",
                             "--no-teacher", "--no-engines")
    _assert_one_line_error(code, lines, re.escape(str(out / "student.onnx")) + r": cannot be written "
                           r"\(Read-only file system\); choose another output directory")
    assert not list(out.iterdir())


def test_bench_out_a_read_only_directory(tiny_run: Path, tmpfs: Callable[..., Path], tmp_path: Path) -> None:
    out = tmpfs("1m", read_only=True)
    code, lines, _ = _invoke("bench", str(tiny_run), "--out", str(out), "--engines-dir", str(tmp_path / "none"),
                             "--device", "cpu", "--iterations", "5", "--warmup", "1", "--batch-size", "1")
    _assert_one_line_error(code, lines, re.escape(str(out / "report.json")) + r": cannot be written "
                           r"\(Read-only file system\)")


def test_stage_manifest_path_that_is_a_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "stages" / "distill.json").mkdir(parents=True)
    code, lines, _ = _invoke("run", "--only", "distill", "--out", str(run_dir),
                             *_set_flags(tiny_overrides(**{"distill.baseline": False})))
    _assert_one_line_error(code, lines, re.escape(str(run_dir / "stages" / "distill.json")) + r": is a directory, "
                           r"so it cannot be written; remove that directory")
    assert not _temp_files(run_dir)


def test_cache_manifest_path_that_is_a_directory(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = out / "student.calib-trt10.3.0.cache.json"
    manifest.mkdir(parents=True)
    code, lines, _ = _invoke("export", str(tiny_run / "student.pt"), "--out", str(out), "--no-fp16", "--no-teacher",
                             "--no-engines", "--calib-images", "50")
    _assert_one_line_error(code, lines, re.escape(str(manifest)) + r": is a directory, so it cannot be written")
    assert not _temp_files(out)
    assert not (out / "student.export.json").exists()


def test_any_other_os_error_is_one_line_with_the_file_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's last line of defence: an OSError no writer converted is not a traceback, and not exit 1."""
    import kd2trt.distill.train as train

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/runs/x/student.pt")

    monkeypatch.setattr(train, "run_distill", denied)
    code, lines, _ = _invoke("distill", "--out", "/srv/runs/x")
    _assert_one_line_error(code, lines, r"^error: /srv/runs/x/student\.pt: Permission denied$")


# ------------------------------------------------------------------------------------------ leftovers


def test_stale_temp_files_of_dead_writers_only_are_removed(tmp_path: Path) -> None:
    from kd2trt.artifacts import atomic_path, remove_stale_temp_files

    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".teacher.last.pt.{dead}.ab_cd123.tmp"
    live = tmp_path / f".student.pt.{alive}.k2j4h5g6.tmp"
    foreign = [tmp_path / ".notes.tmp", tmp_path / f"teacher.pt.{dead}.ab_cd123.tmp", tmp_path / "student.pt"]
    for path in (stale, live, *foreign):
        path.write_bytes(b"x")
    with atomic_path(tmp_path / "student.calib-trt10.3.0.cache") as tmp:
        assert tmp.name.startswith(f".student.calib-trt10.3.0.cache.{alive}.") and tmp.name.endswith(".tmp")
        assert remove_stale_temp_files(tmp_path) == [stale]  # a write in progress is left alone
        assert tmp.exists()
        tmp.write_text("done")
    assert not stale.exists() and live.exists() and all(p.exists() for p in foreign)
    assert (tmp_path / "student.calib-trt10.3.0.cache").read_text() == "done"


def test_stale_temp_dirs_of_dead_writers_only_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kd2trt.artifacts import remove_stale_temp_dirs, temp_directory

    dead = _dead_pid()
    stale = [tmp_path / f"kd2trt-calib-{dead}-a1b2c3d4", tmp_path / f"kd2trt-qdq-{dead}-_x9y8z7w"]
    kept = [tmp_path / f"kd2trt-calib-{os.getpid()}-a1b2c3d4", tmp_path / "kd2trt-calib-e5f6g7h8",
            tmp_path / f"other-{dead}-a1b2c3d4"]
    for path in (*stale, *kept):
        (path / "augmented.onnx").parent.mkdir()
        (path / "augmented.onnx").write_bytes(b"x")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with temp_directory("calib") as mine:
        assert Path(mine).name.startswith(f"kd2trt-calib-{os.getpid()}-")
        assert sorted(remove_stale_temp_dirs()) == sorted(stale)
        assert Path(mine).is_dir()
    assert all(p.is_dir() for p in kept)


def test_calibration_temp_dir_carries_the_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from kd2trt.onnx import calibration

    seen: list[str] = []

    def recording(model: Path, *args: object, augmented_model_path: str, **kwargs: object) -> None:
        seen.append(augmented_model_path)
        raise KeyboardInterrupt

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(calibration, "create_calibrator", recording)
    images = calibration.CalibrationSet(np.zeros((2, 1, 8, 8), np.float32), "zeros")
    with pytest.raises(KeyboardInterrupt):
        calibration.collect_ranges(tmp_path / "m.onnx", images, "minmax")
    assert Path(seen[0]).parent.name.startswith(f"kd2trt-calib-{os.getpid()}-")


def test_export_removes_what_a_killed_export_left(tiny_run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from kd2trt.config import ExportConfig
    from kd2trt.onnx.stage import ExportRequest, ExportRun

    dead = _dead_pid()
    out, temp_root = tmp_path / "out", tmp_path / "temp"
    out.mkdir()
    temp_root.mkdir()
    stale_file = out / f".student.onnx.{dead}.q1w2e3r4.tmp"
    live_file = out / f".student.onnx.{os.getpid()}.q1w2e3r4.tmp"
    stale_dirs = [temp_root / f"kd2trt-calib-{dead}-q1w2e3r4", temp_root / f"kd2trt-qdq-{dead}-q1w2e3r4"]
    for path in (stale_file, live_file):
        path.write_bytes(b"x")
    for path in stale_dirs:
        path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    ExportRun(ExportRequest(tiny_run / "student.pt", out), ExportConfig(), Console(file=open(os.devnull, "w")))  # noqa: SIM115
    assert not stale_file.exists() and live_file.exists()
    assert not any(p.exists() for p in stale_dirs)
