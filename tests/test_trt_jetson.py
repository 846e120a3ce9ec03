"""kd2trt.trt.jetson: L4T/JetPack/board/power-mode detection from fixture files (tests/fixtures/jetson)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kd2trt.trt.jetson import (
    L4tVersion,
    detect_jetson,
    jetpack_for_l4t,
    parse_device_tree_model,
    parse_jetson_clocks,
    parse_nv_tegra_release,
    parse_nvpmodel,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "jetson"


def fixture_runner(folder: Path):
    def run(argv):
        name = {"nvpmodel": "nvpmodel.txt", "jetson_clocks": "jetson_clocks.txt"}[argv[0]]
        path = folder / name
        return path.read_text() if path.is_file() else ""

    return run


@pytest.mark.parametrize(("folder", "l4t", "jetpack", "trt", "cuda", "python", "model", "power", "clocks"), [
    ("jp512", "35.4.1", "5.1.2", "8.5.2", "11.4", "3.8", "NVIDIA Jetson Xavier NX Developer Kit",
     "MODE_20W_6CORE", None),
    ("jp60", "36.3.0", "6.0", "8.6.2", "12.2", "3.10", "NVIDIA Jetson AGX Orin Developer Kit", "MAXN", True),
    ("jp62", "36.4.3", "6.2", "10.3", "12.6", "3.10",
     "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "MAXN_SUPER", False),
    ("jp70", "38.2.0", "7.0", "10.13", "13.0", "3.12", "NVIDIA Jetson AGX Thor Developer Kit", "MAXN", None),
])
def test_detect_jetson_from_fixtures(folder, l4t, jetpack, trt, cuda, python, model, power, clocks) -> None:
    base = FIXTURES / folder
    info = detect_jetson(base / "nv_tegra_release", base / "model", run=fixture_runner(base))
    assert info is not None
    assert (info.l4t, info.jetpack, info.expected_tensorrt, info.expected_cuda, info.python) == (
        l4t, jetpack, trt, cuda, python)
    assert info.model == model and "\0" not in info.model
    assert info.power_mode == power and info.jetson_clocks is clocks
    assert info.table_verified is (folder != "jp70")  # JetPack 7's TensorRT comes from DESIGN, not NVIDIA's page
    assert info.summary()["l4t"] == l4t


def test_detect_jetson_without_power_queries() -> None:
    base = FIXTURES / "jp62"
    info = detect_jetson(base / "nv_tegra_release", base / "model", run=None)
    assert info is not None and info.power_mode is None and info.jetson_clocks is None


def test_not_a_jetson(tmp_path: Path) -> None:
    assert detect_jetson(tmp_path / "nv_tegra_release", tmp_path / "model", run=None) is None
    (tmp_path / "nv_tegra_release").write_text("Ubuntu 24.04\n")
    assert detect_jetson(tmp_path / "nv_tegra_release", tmp_path / "model", run=None) is None


def test_missing_model_file_is_tolerated(tmp_path: Path) -> None:
    info = detect_jetson(FIXTURES / "jp60" / "nv_tegra_release", tmp_path / "model", run=None)
    assert info is not None and info.model is None and info.jetpack == "6.0"


def test_parse_nv_tegra_release() -> None:
    assert parse_nv_tegra_release("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic") == L4tVersion(36, 4, 3)
    assert parse_nv_tegra_release("# R32 (release), REVISION: 7.1, GCID: 1") == L4tVersion(32, 7, 1)
    assert parse_nv_tegra_release("# R35 (release), REVISION: 2") == L4tVersion(35, 2, 0)
    assert parse_nv_tegra_release("DISTRIB_ID=Ubuntu") is None


@pytest.mark.parametrize(("l4t", "jetpack", "trt"), [
    (L4tVersion(35, 2, 1), "5.1", "8.5.2"), (L4tVersion(35, 6, 1), "5.1.4/5.1.5", "8.5.2"),
    (L4tVersion(36, 2, 0), "6.0 DP", "8.6.2"), (L4tVersion(36, 4, 0), "6.1", "10.3"),
    (L4tVersion(36, 4, 2), "6.1", "10.3"), (L4tVersion(36, 4, 3), "6.2", "10.3"),
    (L4tVersion(36, 4, 4), "6.2.1", "10.3"), (L4tVersion(36, 4, 7), "6.2.1", "10.3"),
    (L4tVersion(38, 2, 1), "7.0", "10.13"),
])
def test_jetpack_table(l4t: L4tVersion, jetpack: str, trt: str) -> None:
    release = jetpack_for_l4t(l4t)
    assert release is not None and (release.jetpack, release.tensorrt) == (jetpack, trt)


def test_unknown_and_unverified_releases() -> None:
    assert jetpack_for_l4t(L4tVersion(32, 7, 1)) is None  # JetPack 4: not a kd2trt target
    assert jetpack_for_l4t(L4tVersion(37, 0, 0)) is None
    jp72 = jetpack_for_l4t(L4tVersion(39, 2, 0))
    assert jp72 is not None and jp72.jetpack == "7.2" and not jp72.verified


def test_parse_device_tree_model() -> None:
    name = "NVIDIA Jetson AGX Orin Developer Kit"
    assert parse_device_tree_model(name.encode() + b"\x00") == name
    assert parse_device_tree_model("x\0garbage") == "x"
    assert parse_device_tree_model(b"\x00") is None


def test_parse_nvpmodel() -> None:
    mode = parse_nvpmodel("NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n0\n")
    assert mode is not None and (mode.name, mode.mode_id) == ("15W", 0)
    mode = parse_nvpmodel("NV Power Mode: MAXN\n")
    assert mode is not None and mode.mode_id is None
    assert parse_nvpmodel("") is None


def test_parse_jetson_clocks() -> None:
    assert parse_jetson_clocks((FIXTURES / "jp60" / "jetson_clocks.txt").read_text()) is True
    assert parse_jetson_clocks((FIXTURES / "jp62" / "jetson_clocks.txt").read_text()) is False
    assert parse_jetson_clocks("jetson_clocks: permission denied") is None
