"""bench/zoo_sweep.py: a setting changes exactly the knob it names, on the zoo's own recipe.

A sweep that silently trained something other than the zoo's recipe (a `train.` key landing at the top level, the
teacher's schedule changed, the baseline left on) would make the rate it picks meaningless for bench/zoo.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import zoo
import zoo_sweep


def test_a_setting_changes_only_the_student_knob_it_names(tmp_path: Path) -> None:
    args = argparse.Namespace(work=tmp_path, arch="shufflenet_v2_x0_5", seed=1, fraction=0.1)
    plain = zoo_sweep.overrides_for(args, {})
    swept = zoo_sweep.overrides_for(args, {"train.lr": 0.02, "train.grad_clip": 0.5, "distill.temperature": 2.0})

    assert plain["student.train"]["lr"] == zoo.LR and plain["student.train"]["grad_clip"] == zoo.GRAD_CLIP
    assert swept["student.train"] == {**plain["student.train"], "lr": 0.02, "grad_clip": 0.5}
    assert swept["distill.temperature"] == 2.0 and "train.lr" not in swept
    assert swept["teacher.train"] == plain["teacher.train"]  # the teacher is the finished zoo teacher's recipe
    assert swept["teacher.weights"] == str(tmp_path / "seed1" / "teacher" / "teacher.pt")
    assert swept["distill.baseline"] is False and swept["data.labeled_fraction"] == 0.1
    assert swept["seed"] == 1 and swept["student.arch"] == "shufflenet_v2_x0_5"


@pytest.mark.parametrize(("grid", "work", "says"), [
    ("nope", "runs", "--grid is not JSON"),
    ('{"train.lr": 0.01}', "runs", "--grid must be a JSON list of objects"),
    ('[{"train.lr": 0.01}]', "missing-work", "teacher.pt is missing; run bench/zoo.py --work"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, grid: str, work: str, says: str) -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "zoo_sweep.py"), "--work", str(tmp_path / work),
                             "--arch", "cnn", "--grid", grid, "--out", str(tmp_path / "sweep.jsonl")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "sweep.jsonl").exists()


def test_the_torchvision_recipe_is_the_zoos_recipe() -> None:
    """pipeline/torchvision.yaml quotes the zoo's figures as its own: it must be bench/zoo.py's recipe for its
    student, label-scarce protocol, every section but the run's name, data folder and device."""
    from kd2trt.config import load_config

    shipped = load_config(REPO / "pipeline" / "torchvision.yaml").model_dump()
    recipe_args = zoo.build_parser().parse_args([])
    overrides = {**zoo.recipe(recipe_args, Path("data/zoo"), seed=0), **zoo.student_overrides("mobilenet_v3_small"),
                 "data.labeled_fraction": 0.1}
    measured = load_config(None, overrides).model_dump()
    for dumped in (shipped, measured):
        for key in ("name", "device"):
            dumped.pop(key)
        dumped["data"].pop("spec")
        dumped.pop("export")  # the zoo exports with its own request
        dumped.pop("bench")  # and benches nothing
    assert shipped == measured


def test_the_zoos_ema_option_averages_the_students_weights_only() -> None:
    """`bench/zoo.py --ema` is a student knob: the teacher (shared by every student of a seed) stays as it was."""
    from kd2trt.config import load_config

    for argv, expected in (([], None), (["--ema", "0.1"], 0.1)):
        overrides = zoo.recipe(zoo.build_parser().parse_args(argv), Path("data/zoo"), seed=0)
        config = load_config(None, {**overrides, **zoo.student_overrides("cnn")})
        assert config.student.train.ema == expected and config.teacher.train.ema is None
