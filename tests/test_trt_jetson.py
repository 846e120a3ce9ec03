"""kd2trt.trt.jetson: L4T/JetPack/board/power-mode detection from fixture files (tests/fixtures/jetson).

Power mode and clocks are parsed by kd2trt.bench.telemetry (the one implementation); its own tests are in
tests/test_telemetry.py, and the Jetson fixtures here go through the same functions.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from kd2trt.trt.jetson import (
    UNKNOWN_L4T,
    L4tVersion,
    detect_jetson,
    jetpack_for_l4t,
    parse_device_tree_model,
    parse_jetson_clocks_show,
    parse_nv_tegra_release,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "jetson"
TEGRA234 = b"nvidia,p3737-0000+p3701-0000\x00nvidia,p3701-0000\x00nvidia,tegra234\x00"


def fixture_run(folder: Path):
    """A stand-in for subprocess.run answering nvpmodel/jetson_clocks from the folder's fixture files; a missing
    file answers like jetson_clocks run without root."""

    def run(argv, **kwargs):
        name = {"nvpmodel": "nvpmodel.txt", "jetson_clocks": "jetson_clocks.txt"}[os.path.basename(argv[0])]
        path = folder / name
        if path.is_file():
            return subprocess.CompletedProcess(argv, 0, path.read_text(), "")
        return subprocess.CompletedProcess(argv, 1, "", "Error: Run this script as a root user")

    return run


def no_device_tree(tmp_path: Path) -> Path:
    return tmp_path / "no-device-tree-compatible"


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
    info = detect_jetson(base / "nv_tegra_release", base / "model", run=fixture_run(base))
    assert info is not None
    assert (info.l4t, info.jetpack, info.expected_tensorrt, info.expected_cuda, info.python) == (
        l4t, jetpack, trt, cuda, python)
    assert info.model == model and "\0" not in info.model
    assert info.power_mode == power and info.jetson_clocks is clocks
    assert info.table_verified is (folder != "jp70")  # JetPack 7's TensorRT comes from DESIGN, not NVIDIA's page
    assert info.summary()["l4t"] == l4t and info.warning is None


def test_detect_jetson_without_power_queries() -> None:
    base = FIXTURES / "jp62"
    info = detect_jetson(base / "nv_tegra_release", base / "model", run=None)
    assert info is not None and info.power_mode is None and info.jetson_clocks is None


def test_not_a_jetson(tmp_path: Path) -> None:
    compatible = tmp_path / "compatible"
    assert detect_jetson(tmp_path / "nv_tegra_release", tmp_path / "model", compatible_path=compatible,
                         run=None) is None
    compatible.write_bytes(b"raspberrypi,4-model-b\x00brcm,bcm2711\x00")
    assert detect_jetson(tmp_path / "nv_tegra_release", tmp_path / "model", compatible_path=compatible,
                         run=None) is None


@pytest.mark.parametrize("text", ["Ubuntu 24.04\n", "", "# R40 (release), REV: 1.0, GCID: 1, BOARD: generic\n"])
def test_an_unparsable_release_file_is_a_jetson_of_unknown_l4t(tmp_path: Path, text: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    release = tmp_path / "nv_tegra_release"
    release.write_text(text)
    with caplog.at_level(logging.WARNING, logger="kd2trt.trt.jetson"):
        info = detect_jetson(release, FIXTURES / "jp62" / "model", compatible_path=no_device_tree(tmp_path),
                             run=None)
    assert info is not None, "an nv_tegra_release that does not parse must not mean x86"
    assert info.l4t == UNKNOWN_L4T and info.jetpack is None and info.expected_tensorrt is None
    assert not info.table_verified
    assert info.model == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert info.warning is not None and str(release) in info.warning and "does not parse" in info.warning
    assert "\n" not in info.warning and info.warning in caplog.text


def test_a_jetson_known_only_from_the_device_tree(tmp_path: Path) -> None:
    compatible = tmp_path / "compatible"
    compatible.write_bytes(TEGRA234)
    info = detect_jetson(tmp_path / "nv_tegra_release", tmp_path / "model", compatible_path=compatible, run=None)
    assert info is not None and info.l4t == UNKNOWN_L4T and info.model is None
    assert info.warning is not None and "is missing" in info.warning and "nv_tegra_release" in info.warning


def test_power_mode_and_clocks_come_from_the_telemetry_parsers(tmp_path: Path) -> None:
    """jetson_clocks output whose clocks are pinned (min == max) but not running at them is not "locked"."""
    folder = tmp_path / "board"
    folder.mkdir()
    (folder / "nvpmodel.txt").write_text("NV Power Mode: MAXN\n0\n")
    (folder / "jetson_clocks.txt").write_text((FIXTURES / "jp60" / "jetson_clocks.txt").read_text().replace(
        "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000",
        "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=306000000"))
    info = detect_jetson(FIXTURES / "jp60" / "nv_tegra_release", FIXTURES / "jp60" / "model",
                         compatible_path=no_device_tree(tmp_path), run=fixture_run(folder))
    assert info is not None and (info.power_mode, info.power_mode_id) == ("MAXN", 0)
    assert info.jetson_clocks is False


@pytest.mark.skipif(os.path.exists("/etc/nv_tegra_release") or os.path.exists("/proc/device-tree/compatible"),
                    reason="this machine may be a Jetson")
def test_this_machine_is_not_a_jetson() -> None:
    assert detect_jetson(run=None) is None


def test_missing_model_file_is_tolerated(tmp_path: Path) -> None:
    info = detect_jetson(FIXTURES / "jp60" / "nv_tegra_release", tmp_path / "model", run=None)
    assert info is not None and info.warning is None
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


def test_jetson_clocks_fixtures() -> None:
    assert parse_jetson_clocks_show((FIXTURES / "jp60" / "jetson_clocks.txt").read_text()) is True
    assert parse_jetson_clocks_show((FIXTURES / "jp62" / "jetson_clocks.txt").read_text()) is False
    assert parse_jetson_clocks_show("jetson_clocks: permission denied") is None
