from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kd2trt.config import RunConfig, dump_config, load_config, parse_override
from kd2trt.errors import Kd2trtError
from tests.conftest import REPO


def test_default_recipe_file_equals_the_model_defaults() -> None:
    """pipeline/digits.yaml is documentation of the defaults; it must not drift from them. One exception, on
    purpose: it sets an INT8 budget (TensorRT's entropy calibration, the default method, loses ~12 points on
    these sparse digit images; the budget picks minmax there), which a bare ExportConfig leaves to the caller."""
    from_file = load_config(REPO / "pipeline" / "digits.yaml")
    assert from_file.export.int8_budget == 0.5
    expected = RunConfig().model_dump()
    expected["export"]["int8_budget"] = 0.5
    assert from_file.model_dump() == expected


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


@pytest.mark.parametrize("recipe", sorted((REPO / "pipeline").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe: Path) -> None:
    config = load_config(recipe)
    assert not config.build.engines or max(config.bench.batch_sizes) <= config.build.max_batch


@pytest.mark.parametrize("value", ["10.x", "11.x", "9.0", "8.4", "latest", ""])
def test_bad_trt_target_fails_at_load_time(value: str) -> None:
    """One parser, at load time: `kd2trt run` must not distill for an hour and then fail in export."""
    with pytest.raises(Kd2trtError, match=rf"export\.trt_versions: TensorRT target {value!r} is not"):
        load_config(None, {"export.trt_versions": ["10.3", value]})


def test_good_trt_targets_load_and_match_the_export_parser() -> None:
    from kd2trt.targets import parse_target

    config = load_config(None, {"export.trt_versions": ["8.5", "8.6", "10.3", "10.14.1", "11.0", " 10.3.0 "]})
    assert config.export.trt_versions == ["8.5", "8.6", "10.3", "10.14.1", "11.0", "10.3.0"]
    assert [str(parse_target(v).version) for v in config.export.trt_versions] == [
        "8.5.2", "8.6.2", "10.3.0", "10.14.1", "11.0.0", "10.3.0"]


def test_documented_trt_targets_are_all_accepted() -> None:
    """The forms the description and the default recipe's comment offer must be ones the parser takes."""
    import re

    from kd2trt.config import ExportConfig
    from kd2trt.targets import TARGET_FORMS, parse_target

    comment = next(line for line in (REPO / "pipeline" / "digits.yaml").read_text().split("\n\n")
                   if "trt_versions:" in line)
    texts = [ExportConfig.model_fields["trt_versions"].description, TARGET_FORMS,
             comment[comment.index("trt_versions:"):]]
    for text in texts:
        text = re.sub(r"\([^)]*\)", "", text)  # "(JetPack 6.1/6.2)" names JetPack releases, not targets
        forms = re.findall(r"\b\d+\.[\dxX*]+(?:\.\d+)?\b", text)
        assert forms, text
        for form in forms:
            parse_target(form)


def test_bench_device_is_checked_like_the_run_device() -> None:
    with pytest.raises(Kd2trtError, match=r"bench\.device: 'gpu' is not a device: use auto, cpu, cuda or cuda:N"):
        load_config(None, {"bench.device": "gpu"})
    with pytest.raises(Kd2trtError, match=r"device: 'gpu' is not a device"):
        load_config(None, {"device": "gpu"})
    assert load_config(None, {"bench.device": "cuda:1"}).bench.device == "cuda:1"


def test_bench_batches_must_fit_the_engines() -> None:
    with pytest.raises(Kd2trtError, match=r"bench\.batch_sizes includes 64 but build\.max_batch is 32"):
        load_config(None, {"bench.batch_sizes": [1, 64]})
    assert load_config(None, {"bench.batch_sizes": [1, 64], "build.max_batch": 64}).build.max_batch == 64
    assert load_config(None, {"bench.batch_sizes": [1, 64], "build.engines": False}).bench.batch_sizes == [1, 64]


def test_min_speedup_describes_the_batch_it_is_measured_at() -> None:
    from kd2trt.config import BenchConfig

    description = BenchConfig.model_fields["min_speedup"].description
    assert "batch 1" not in description and "first of batch_sizes" in description


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_torchvision_arch_with_the_default_cnn_channels_says_the_fix(role: str) -> None:
    """The default recipe gives both models cnn channels, so `--set teacher.arch=resnet18` alone fails: say how."""
    with pytest.raises(Kd2trtError, match=rf"{role}: channels applies to arch 'cnn' only, not 'resnet18'; set "
                                          rf"channels: null for torchvision/timm models \(--set {role}\.channels="
                                          r"null\)"):
        load_config(None, {f"{role}.arch": "resnet18"})
    config = load_config(None, dict([parse_override(f"{role}.arch=resnet18"), parse_override(f"{role}.channels=null")]))
    assert getattr(config, role).channels is None


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_recipe_warns_that_everything_is_the_default(tmp_path: Path, text: str) -> None:
    from kd2trt.errors import Kd2trtWarning

    recipe = tmp_path / "empty.yaml"
    recipe.write_text(text)
    with pytest.warns(Kd2trtWarning, match=r"empty\.yaml: the recipe is empty, so every setting is the default"):
        assert load_config(recipe).model_dump() == RunConfig().model_dump()


def test_the_cli_prints_the_empty_recipe_warning_as_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kd2trt.cli import app

    recipe = tmp_path / "empty.yaml"
    recipe.write_text("")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "missing.pt"), "--recipe", str(recipe)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert lines[0] == f"warning: {recipe}: the recipe is empty, so every setting is the default " \
                       "(see pipeline/digits.yaml)", lines
    assert len(lines) == 2 and lines[1].startswith("error:") and "missing.pt" in lines[1], lines


def test_an_int8_budget_without_int8_is_refused() -> None:
    with pytest.raises(Kd2trtError, match="int8_budget is set but int8 is off"):
        load_config(None, {"export.int8": False, "export.int8_budget": 0.5})
    assert load_config(None, {"export.int8_budget": 0.5}).export.int8_budget == 0.5
