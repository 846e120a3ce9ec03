from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kd2trt.config import RunConfig, dump_config, load_config, parse_override
from kd2trt.errors import Kd2trtError
from tests.conftest import REPO


def test_default_recipe_file_equals_the_model_defaults() -> None:
    """pipeline/digits.yaml is documentation of the defaults; it must not drift from them."""
    from_file = load_config(REPO / "pipeline" / "digits.yaml")
    assert from_file.model_dump() == RunConfig().model_dump()


def test_overrides_apply_on_top_of_the_file(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("distill:\n  temperature: 2\n")
    config = load_config(recipe, {"distill.alpha": 0.5, "student.train.epochs": 3})
    assert (config.distill.temperature, config.distill.alpha, config.student.train.epochs) == (2, 0.5, 3)


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("distill:\n  temprature: 4\n")
    with pytest.raises(Kd2trtError, match=r"bad\.yaml: distill\.temprature: unknown key"):
        load_config(recipe)


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("teacher:\n  train:\n    lr: -1\n")
    with pytest.raises(Kd2trtError, match=r"bad\.yaml: teacher\.train\.lr: Input should be greater than 0"):
        load_config(recipe)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("data: [unclosed\n")
    with pytest.raises(Kd2trtError, match=r"broken\.yaml: line \d+ is not valid YAML"):
        load_config(recipe)
    with pytest.raises(Kd2trtError, match="recipe not found"):
        load_config(tmp_path / "nope.yaml")


def test_override_parsing() -> None:
    assert parse_override("a.b=4") == ("a.b", 4)
    assert parse_override("a=[8, 16]") == ("a", [8, 16])
    assert parse_override("x=true") == ("x", True)
    with pytest.raises(Kd2trtError, match="KEY=VALUE"):
        parse_override("novalue")


def test_channels_only_for_cnn() -> None:
    with pytest.raises(Kd2trtError, match="channels applies to arch 'cnn' only"):
        load_config(None, {"student.arch": "resnet18", "student.channels": [8]})
    assert load_config(None, {"student.arch": "resnet18", "student.channels": None}).student.arch == "resnet18"


def test_dump_round_trips() -> None:
    config = load_config(None, {"seed": 7})
    assert RunConfig.model_validate(yaml.safe_load(dump_config(config))) == config


def test_bench_and_build_sections_are_validated() -> None:
    with pytest.raises(Kd2trtError, match=r"bench\.batch_sizes\.0: Input should be greater than 0"):
        load_config(None, {"bench.batch_sizes": [0]})
    with pytest.raises(Kd2trtError, match="min_batch <= opt_batch <= max_batch"):
        load_config(None, {"build.min_batch": 8, "build.max_batch": 4})
