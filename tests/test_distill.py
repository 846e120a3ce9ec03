"""End-to-end distillation on the embedded digits with a tiny recipe: real training, seconds each."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

import kd2trt.distill.loop as loop
from kd2trt.config import load_config
from kd2trt.distill.checkpoint import model_from_checkpoint, read_checkpoint
from kd2trt.distill.train import run_distill
from kd2trt.errors import Kd2trtError
from tests.conftest import REPO, child_pythonpath, interrupt_after_writing, tiny_overrides

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115


def _cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kd2trt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": child_pythonpath()})


def _set_flags(overrides: dict[str, object]) -> list[str]:
    flags = []
    for key, value in overrides.items():
        flags += ["--set", f"{key}={json.dumps(value)}"]
    return flags


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_distill_writes_checkpoints_metrics_and_summary(tmp_path: Path) -> None:
    config = load_config(None, tiny_overrides(**{"distill.beta": 0.5}))
    # what kill -9 of an earlier run leaves (its pid is gone), and a concurrent writer's file (alive: kept)
    stale = tmp_path / f".teacher.last.pt.{_dead_pid()}.x1y2z3w4.tmp"
    concurrent = tmp_path / f".student.metrics.json.{os.getpid()}.x1y2z3w4.tmp"
    for path in (stale, concurrent):
        path.write_bytes(b"torn")
    summary = run_distill(config, tmp_path, console=QUIET)
    assert not stale.exists() and concurrent.exists()
    concurrent.unlink()
    for role in ("teacher", "student", "baseline"):
        checkpoint = read_checkpoint(tmp_path / f"{role}.pt")
        assert checkpoint["preprocessing"]["image_size"] == 8
        assert checkpoint["classes"] == [str(d) for d in range(10)]
        model = model_from_checkpoint(checkpoint)
        assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
        history = json.loads((tmp_path / f"{role}.metrics.json").read_text())
        assert [h["epoch"] for h in history] == [1, 2]
        assert summary[role]["test_top1"] == checkpoint["metrics"]["test_top1"]
    assert "loss_hint" in json.loads((tmp_path / "student.metrics.json").read_text())[0]
    assert summary["labeled_images"] < 0.15 * summary["train_images"]
    assert summary["teacher_cache"] is True
    assert (tmp_path / "config.yaml").is_file()
    assert not list(tmp_path.glob(".*.tmp"))


def test_teacher_cache_does_not_change_the_result(tmp_path: Path) -> None:
    """The soft-label cache is an optimisation: with and without it the student is the same."""
    results = {}
    for mode in ("on", "off"):
        config = load_config(None, tiny_overrides(**{"distill.teacher_cache": mode, "distill.baseline": False}))
        run_distill(config, tmp_path / mode, console=QUIET)
        results[mode] = read_checkpoint(tmp_path / mode / "student.pt")["state_dict"]
    for key, value in results["on"].items():
        assert torch.allclose(value.float(), results["off"][key].float(), atol=1e-5), key


def test_resume_after_interruption_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = tiny_overrides(**{"distill.baseline": False, "student.train.epochs": 3})
    run_distill(load_config(None, overrides), tmp_path / "straight", console=QUIET)

    real_write = interrupt_after_writing(monkeypatch, loop, "student.metrics.json")  # after the first epoch
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_distill(load_config(None, overrides), tmp_path / "resumed", console=QUIET)
    first_call = time.perf_counter() - started
    monkeypatch.setattr(loop, "atomic_write_json", real_write)
    started = time.perf_counter()
    summary = run_distill(load_config(None, overrides), tmp_path / "resumed", resume=True, console=QUIET)
    second_call = time.perf_counter() - started

    assert summary["student"]["resumed_from_epoch"] == 1
    assert summary["teacher"]["resumed_from_epoch"] is None  # trained in one go, then found finished
    # the interrupted call's time counts too (up to its last saved epoch: a fraction of a second before it stopped)
    assert first_call + second_call - 1.0 < summary["wall_seconds"] <= first_call + second_call
    straight = read_checkpoint(tmp_path / "straight" / "student.pt")["state_dict"]
    resumed = read_checkpoint(tmp_path / "resumed" / "student.pt")["state_dict"]
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key

    # a later --resume finds every stage finished: the record still says where the student was resumed
    started = time.perf_counter()
    again = run_distill(load_config(None, overrides), tmp_path / "resumed", resume=True, console=QUIET)
    third_call = time.perf_counter() - started
    assert again["student"]["resumed_from_epoch"] == 1
    assert again["teacher"]["resumed_from_epoch"] is None
    assert summary["wall_seconds"] < again["wall_seconds"] <= first_call + second_call + third_call


def test_resume_refuses_another_config(tmp_path: Path) -> None:
    run_distill(load_config(None, tiny_overrides(**{"distill.baseline": False})), tmp_path, console=QUIET)
    changed = load_config(None, tiny_overrides(**{"distill.baseline": False, "seed": 5}))
    with pytest.raises(Kd2trtError, match=r"teacher\.last\.pt: was written by a run with another config"):
        run_distill(changed, tmp_path, resume=True, console=QUIET)


def test_loaded_teacher_is_not_retrained_and_bad_weights_fail(tmp_path: Path) -> None:
    run_distill(load_config(None, tiny_overrides(**{"distill.baseline": False})), tmp_path / "a", console=QUIET)
    weights = tmp_path / "a" / "teacher.pt"
    summary = run_distill(load_config(None, tiny_overrides(**{"distill.baseline": False,
                                                              "teacher.weights": str(weights)})),
                          tmp_path / "b", console=QUIET)
    assert summary["teacher"]["trained"] is False
    assert summary["teacher"]["test_top1"] == pytest.approx(
        read_checkpoint(weights)["metrics"]["test_top1"])
    wrong = load_config(None, tiny_overrides(**{"teacher.weights": str(weights), "teacher.channels": [8, 32]}))
    with pytest.raises(Kd2trtError, match="weights are for another architecture"):
        run_distill(wrong, tmp_path / "c", console=QUIET)


def test_missing_feature_tap_fails_before_training(tmp_path: Path) -> None:
    config = load_config(None, tiny_overrides(**{"distill.beta": 1.0, "teacher.feature_tap": "layer3"}))
    with pytest.raises(Kd2trtError, match="teacher feature_tap 'layer3' is not a module"):
        run_distill(config, tmp_path, console=QUIET)
    assert not list(tmp_path.glob("*.pt"))


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "imagefolder:/nonexistent/x"], r"/nonexistent/x: data set path does not exist"),
    (["--teacher-weights", "{tmp}/corrupt.pt"], r"corrupt\.pt: not a readable PyTorch checkpoint"),
    (["--set", "distill.temprature=3"], r"distill\.temprature: unknown key"),
    (["{tmp}/missing.yaml"], r"missing\.yaml: recipe not found"),
    (["--set", "teacher.arch=resnet18", "--set", "teacher.channels=null", "--set", "teacher.dropout=0.1"],
     r"teacher: model 'resnet18' has no classifier dropout to set .*leave dropout unset \(null\)"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from kd2trt.cli import app

    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 definitely not a zip")
    result = CliRunner().invoke(app, ["distill", *[a.format(tmp=tmp_path) for a in args],
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.pt"))


def test_cli_error_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    result = _cli("distill", "--data", "cifar10:" + str(tmp_path), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and "cifar-10-batches-py" in result.stderr


def test_kill_9_then_resume_completes(tmp_path: Path) -> None:
    """A real SIGKILL mid-training: the rerun with --resume continues and leaves no torn file."""
    flags = _set_flags(tiny_overrides(**{"student.train.epochs": 30, "distill.baseline": False}))
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "kd2trt", "distill", "--out", str(run_dir), *flags],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": child_pythonpath()})
    deadline = time.time() + 120
    metrics = run_dir / "student.metrics.json"
    while time.time() < deadline and not (metrics.is_file() and len(json.loads(metrics.read_text())) >= 2):
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert metrics.is_file(), "the student never started"
    done = len(json.loads(metrics.read_text()))
    assert done < 30
    result = _cli("distill", "--out", str(run_dir), "--resume", *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "distill.json").read_text())
    assert summary["student"]["resumed_from_epoch"] >= done - 1 >= 1
    assert len(json.loads(metrics.read_text())) == 30
    assert not list(run_dir.glob(".*.tmp"))


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    """DDP over gloo: 2 processes, rank 0 writes; the result is a working student."""
    flags = _set_flags(tiny_overrides(**{"distill.baseline": False, "teacher.train.epochs": 4,
                                         "student.train.epochs": 12}))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "kd2trt", "distill", "--out", str(tmp_path), *flags],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": child_pythonpath(), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "distill.json").read_text())
    assert summary["world_size"] == 2
    # data.batch_size is the global batch: 2 processes take the steps 1 process takes (chance is 10 %)
    assert summary["teacher"]["test_top1"] > 60.0
    assert summary["student"]["test_top1"] > 40.0


def test_resume_under_torchrun_is_bit_identical(tmp_path: Path) -> None:
    """kill -9 of a 2-process torchrun mid-distillation, then --resume: the same student as a run that never
    stopped, tensor for tensor (as single-process resume is)."""
    flags = _set_flags(tiny_overrides(**{"distill.baseline": False, "student.train.epochs": 20,
                                         "student.train.ema": 0.2}))  # the weight average resumes too
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "OMP_NUM_THREADS": "1"}

    def torchrun(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                "kd2trt", "distill", "--out", str(out), *flags, *extra]

    straight = subprocess.run(torchrun(tmp_path / "straight"), cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env=env)
    assert straight.returncode == 0, straight.stderr[-2000:]
    run_dir = tmp_path / "killed"
    process = subprocess.Popen(torchrun(run_dir), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)
    metrics, deadline = run_dir / "student.metrics.json", time.time() + 180
    while time.time() < deadline and not (metrics.is_file() and len(json.loads(metrics.read_text())) >= 2):
        time.sleep(0.1)
    # the launcher and both ranks (torchrun's workers leave its process group): everything naming this run
    subprocess.run(["pkill", "-9", "-f", str(run_dir)], check=False)
    process.wait()
    done = len(json.loads(metrics.read_text()))
    assert 2 <= done < 20
    resumed = subprocess.run(torchrun(run_dir, "--resume"), cwd=tmp_path, capture_output=True, text=True,
                             timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run_dir / "distill.json").read_text())["student"]["resumed_from_epoch"] >= done - 1
    a, b = (torch.load(d / "student.pt", weights_only=True)["state_dict"] for d in (tmp_path / "straight", run_dir))
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_ddp_ranks_end_every_stage_with_the_same_model(tmp_path: Path) -> None:
    """BatchNorm statistics and the best-epoch choice used to differ between ranks (12 of 38 teacher entries)."""
    # the teacher validates a weight average, whose BatchNorm statistics rank 0 recomputes and broadcasts too
    overrides = tiny_overrides(**{"teacher.train.epochs": 3, "student.train.epochs": 3, "teacher.train.ema": 0.3})
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(REPO / "tests" / "ddp_ranks.py"), str(tmp_path), json.dumps(overrides)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": child_pythonpath(), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["best_epochs"] == rank1["best_epochs"]
    for role, state in rank0["state"].items():
        different = [key for key, tensor in state.items() if not torch.equal(tensor, rank1["state"][role][key])]
        assert not different, f"{role}: {len(different)} entries differ between ranks, e.g. {different[:3]}"


def test_the_global_batch_must_divide_among_the_processes() -> None:
    from kd2trt.distill.distributed import DistContext
    from kd2trt.distill.loop import _rank_batch

    assert _rank_batch(64, DistContext(0, 2, 0, torch.device("cpu"))) == 32
    with pytest.raises(Kd2trtError, match="must divide among the 3 processes"):
        _rank_batch(64, DistContext(0, 3, 0, torch.device("cpu")))


_DATA = {"spec": "digits", "image_size": 8, "channels": 1, "val_fraction": 0.2, "test_fraction": 0.2,
         "split_seed": 0, "labeled_fraction": 0.1}


def _fake_checkpoint() -> dict:
    from kd2trt.data import Preprocessing
    from kd2trt.distill.checkpoint import make_checkpoint
    from kd2trt.models import build_model, model_spec

    spec = model_spec("cnn", 1, 10, [8, 16])
    prep = Preprocessing(image_size=8, channels=1, mean=(0.5,), std=(0.25,))
    return make_checkpoint("student", spec, build_model(spec).state_dict(), [str(d) for d in range(10)], _DATA,
                           prep, {})


@pytest.mark.parametrize(("key", "value", "message"), [
    ("data", {"spec": "digits"}, r"malformed 'data' record \(lacks image_size, val_fraction"),
    ("data", {**_DATA, "image_size": 4}, r"malformed 'data' record \(image_size: Input should be greater"),
    ("data", ["digits"], r"malformed 'data' record \(a list, not a mapping\)"),
    ("preprocessing", {"image_size": 8, "channels": 1, "mean": [0.5]}, r"malformed 'preprocessing' record \(std"),
    ("preprocessing", {"image_size": 8, "channels": 3, "mean": [0.5], "std": [0.25]},
     r"malformed 'preprocessing' record \(mean and std need 3 values"),
    ("model", {"arch": "cnn", "in_channels": 1}, r"malformed 'model' record \(num_classes"),
    ("model", {"arch": "cnn", "in_channels": 1, "num_classes": 10}, r"malformed 'model' record \(arch 'cnn' needs"),
    ("model", {"arch": "cnn", "in_channels": "1", "num_classes": 10, "channels": [8]},
     r"malformed 'model' record \(in_channels"),
    ("classes", "0123456789", r"malformed 'classes' record"),
    ("state_dict", {"w": [1.0]}, r"malformed 'state_dict' record"),
])
def test_malformed_checkpoint_records_fail_on_read(tmp_path: Path, key: str, value: object, message: str) -> None:
    """Checked where the file is known, not as a KeyError in export, bench or build_model later."""
    from kd2trt.distill.checkpoint import data_config_of, preprocessing_of

    good = _fake_checkpoint()
    torch.save(good, tmp_path / "good.pt")
    checkpoint = read_checkpoint(tmp_path / "good.pt")
    assert data_config_of(checkpoint).image_size == 8 and preprocessing_of(checkpoint).std == (0.25,)
    model_from_checkpoint(checkpoint)
    torch.save({**good, key: value}, tmp_path / "student.pt")
    with pytest.raises(Kd2trtError, match=rf"student\.pt: {message}.*re-run `kd2trt distill`") as caught:
        read_checkpoint(tmp_path / "student.pt")
    assert "\n" not in str(caught.value)


def test_unreadable_resume_state_is_one_line(tmp_path: Path) -> None:
    """weights_only refusals are multi-line in torch; every checkpoint reader reports their first sentence."""
    import datetime

    path = tmp_path / "student.last.pt"
    torch.save({"when": datetime.datetime(2020, 1, 1)}, path)  # not loadable with weights_only=True
    with pytest.raises(Kd2trtError, match=r"student\.last\.pt: not a readable PyTorch checkpoint \(.*\); "
                                          r"this resume state cannot be used: delete it") as caught:
        loop._read_resume_state(path, "hash", True)
    assert "\n" not in str(caught.value)
    with pytest.raises(Kd2trtError, match=r"student\.last\.pt: not a readable PyTorch checkpoint \(.*\); "
                                          r"re-run `kd2trt distill`") as caught:
        read_checkpoint(path)
    assert "\n" not in str(caught.value)
