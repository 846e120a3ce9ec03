"""Jetson detection: L4T release, board model, the JetPack and TensorRT that L4T implies, power mode, clocks.

Sources on the device (all paths injectable, so tests read fixture files):

* ``/etc/nv_tegra_release`` -- first line ``# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, ...``:
  L4T (Jetson Linux) 36.4.3.
* ``/proc/device-tree/model`` -- ``NVIDIA Jetson AGX Orin Developer Kit`` followed by a NUL byte.
* ``nvpmodel -q`` and ``jetson_clocks --show`` -- power mode and clock lock state (optional extras;
  ``jetson_clocks --show`` needs root on most images, so a failure is reported as "unknown").

Whether this *is* a Jetson, and the power mode and clocks, come from :mod:`kd2trt.bench.telemetry`
(:func:`~kd2trt.bench.telemetry.is_jetson`, :func:`~kd2trt.bench.telemetry.read_clock_state`): one
implementation for ``kd2trt doctor``, engine manifests and ``kd2trt bench``. That module is standard library
only and keeps to Python 3.8 as this package does. A Jetson whose ``nv_tegra_release`` is missing (the device
tree says Jetson) or does not parse is still a Jetson: :func:`detect_jetson` reports L4T ``"unknown"`` with a
warning rather than pretending the machine is an x86 host.

L4T -> JetPack -> TensorRT, from NVIDIA's JetPack release pages (developer.nvidia.com/embedded/jetpack
archive) and DESIGN §3. The TensorRT version is what JetPack *installs*; a container or a pip wheel can bring
another one, so it is an expectation to compare with, never a substitute for ``tensorrt.__version__``.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kd2trt.bench.telemetry import DEVICE_TREE_COMPATIBLE, JETSON_RELEASE_FILE, is_jetson, read_clock_state

__all__ = [
    "JETPACK_TABLE",
    "UNKNOWN_L4T",
    "JetPackRelease",
    "JetsonInfo",
    "L4tVersion",
    "detect_jetson",
    "jetpack_for_l4t",
    "parse_device_tree_model",
    "parse_nv_tegra_release",
]

log = logging.getLogger(__name__)

NV_TEGRA_RELEASE = Path(JETSON_RELEASE_FILE)
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
UNKNOWN_L4T = "unknown"  # JetsonInfo.l4t on a Jetson whose nv_tegra_release is missing or does not parse


@dataclass(frozen=True, order=True)
class L4tVersion:
    """Jetson Linux (L4T) release: ``R36 (release), REVISION: 4.3`` -> 36.4.3."""

    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class JetPackRelease:
    """What an L4T release ships: JetPack, TensorRT, CUDA and the system Python."""

    jetpack: str
    tensorrt: str
    cuda: str
    python: str
    verified: bool = True  # False: inferred, not read on an NVIDIA page (see the table's notes)


# (L4T major, L4T minor, first patch or None for any) -> release. Looked up most specific first.
# JetPack 5.1.x: L4T 35.2.1 (5.1), 35.3.1 (5.1.1), 35.4.1 (5.1.2), 35.5.0 (5.1.3), 35.6.x (5.1.4/5.1.5).
# JetPack 6: 36.2 (6.0 DP), 36.3 (6.0), 36.4.0 (6.1), 36.4.3 (6.2), 36.4.4 (6.2.1).
# JetPack 7: 38.2 (7.0, Thor), 38.4 (7.1) -- L4T numbers from NVIDIA's JetPack 7.0/7.1 download pages; their
# TensorRT (10.13, per DESIGN §3 "JetPack 7.x: 10.13-10.16") was not read on an NVIDIA page, hence unverified.
# 7.2 (Orin support, CUDA 13.2): L4T 39.x assumed from the r39.2 Developer Guide link, TensorRT unknown.
JETPACK_TABLE: tuple[tuple[tuple[int, int | None, int | None], JetPackRelease], ...] = (
    ((35, 1, None), JetPackRelease("5.0.2", "8.4.1", "11.4", "3.8")),
    ((35, 2, None), JetPackRelease("5.1", "8.5.2", "11.4", "3.8")),
    ((35, 3, None), JetPackRelease("5.1.1", "8.5.2", "11.4", "3.8")),
    ((35, 4, None), JetPackRelease("5.1.2", "8.5.2", "11.4", "3.8")),
    ((35, 5, None), JetPackRelease("5.1.3", "8.5.2", "11.4", "3.8")),
    ((35, 6, None), JetPackRelease("5.1.4/5.1.5", "8.5.2", "11.4", "3.8")),
    ((36, 2, None), JetPackRelease("6.0 DP", "8.6.2", "12.2", "3.10")),
    ((36, 3, None), JetPackRelease("6.0", "8.6.2", "12.2", "3.10")),
    ((36, 4, 4), JetPackRelease("6.2.1", "10.3", "12.6", "3.10")),
    ((36, 4, 3), JetPackRelease("6.2", "10.3", "12.6", "3.10")),
    ((36, 4, None), JetPackRelease("6.1", "10.3", "12.6", "3.10")),
    ((38, 2, None), JetPackRelease("7.0", "10.13", "13.0", "3.12", verified=False)),
    ((38, 4, None), JetPackRelease("7.1", "10.13", "13.0", "3.12", verified=False)),
    ((39, None, None), JetPackRelease("7.2", "10.x", "13.2", "3.12", verified=False)),
)


def jetpack_for_l4t(l4t: L4tVersion) -> JetPackRelease | None:
    """The JetPack release an L4T version belongs to; ``None`` for releases kd2trt does not know.

    A row matches on major, minor (``None``: any) and a minimum patch (``None``: any); the row with the
    highest matching minimum patch wins, so 36.4.3 is JetPack 6.2 while 36.4.0 is 6.1.
    """
    best: tuple[int, JetPackRelease] | None = None
    for (major, minor, patch), release in JETPACK_TABLE:
        if l4t.major != major or (minor is not None and l4t.minor != minor):
            continue
        if patch is not None and l4t.patch < patch:
            continue
        rank = -1 if patch is None else patch
        if best is None or rank > best[0]:
            best = (rank, release)
    return best[1] if best else None


_RELEASE_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?")


def parse_nv_tegra_release(text: str) -> L4tVersion | None:
    """``# R35 (release), REVISION: 4.1, ...`` -> ``L4tVersion(35, 4, 1)``; ``None`` if not that format."""
    for line in text.splitlines():
        match = _RELEASE_RE.search(line)
        if match:
            return L4tVersion(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))
    return None


def parse_device_tree_model(data: bytes | str) -> str | None:
    """The board name; the device-tree string ends in a NUL byte, which is dropped."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    model = data.split("\0", 1)[0].strip()
    return model or None


@dataclass(frozen=True)
class JetsonInfo:
    """What kd2trt records about a Jetson (engine manifests, doctor, bench reports)."""

    l4t: str
    model: str | None
    jetpack: str | None
    expected_tensorrt: str | None
    expected_cuda: str | None
    python: str | None
    table_verified: bool
    power_mode: str | None = None
    power_mode_id: int | None = None
    jetson_clocks: bool | None = None
    warning: str | None = None  # e.g. nv_tegra_release missing or unparsable: L4T and JetPack unknown

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def _read_l4t(release_path: Path) -> tuple[L4tVersion | None, str | None]:
    """(L4T, None) from ``nv_tegra_release``, or (None, why it gave none) -- on a machine known to be a Jetson."""
    try:
        text = release_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None, (f"{release_path} is missing although the device tree says this is a Jetson (a container "
                      "without it?); L4T, JetPack and the TensorRT it ships are unknown — mount or copy the "
                      "host's /etc/nv_tegra_release")
    except OSError as exc:
        return None, (f"cannot read {release_path} ({exc.strerror or exc}); L4T, JetPack and the TensorRT it ships "
                      "are unknown — fix the file's permissions")
    l4t = parse_nv_tegra_release(text)
    if l4t is None:
        first = (text.strip().splitlines() or [""])[0][:80]
        return None, (f"{release_path} does not parse (first line {first!r}; expected '# R36 (release), "
                      "REVISION: 4.3, ...'); L4T, JetPack and the TensorRT it ships are unknown — check the "
                      "file (JetPack writes it)")
    return l4t, None


def detect_jetson(
    release_path: str | Path = NV_TEGRA_RELEASE,
    model_path: str | Path = DEVICE_TREE_MODEL,
    *,
    compatible_path: str | Path = DEVICE_TREE_COMPATIBLE,
    run: Callable[..., Any] | None = subprocess.run,
) -> JetsonInfo | None:
    """The Jetson this runs on, or ``None`` when :func:`~kd2trt.bench.telemetry.is_jetson` says it is not one.

    ``run`` stands in for ``subprocess.run`` when querying ``nvpmodel -q`` and ``jetson_clocks --show``
    (:func:`~kd2trt.bench.telemetry.read_clock_state`); ``None`` skips both. A Jetson whose release file is
    missing or does not parse gives L4T :data:`UNKNOWN_L4T` and :attr:`JetsonInfo.warning` (also logged).
    """
    release_path = Path(release_path)
    if not is_jetson(str(release_path), str(compatible_path)):
        return None
    l4t, warning = _read_l4t(release_path)
    if warning is not None:
        log.warning("%s", warning)
    try:
        model = parse_device_tree_model(Path(model_path).read_bytes())
    except OSError:
        model = None
    release = jetpack_for_l4t(l4t) if l4t is not None else None
    clocks = read_clock_state(run) if run is not None else None
    return JetsonInfo(
        l4t=str(l4t) if l4t is not None else UNKNOWN_L4T,
        model=model,
        jetpack=release.jetpack if release else None,
        expected_tensorrt=release.tensorrt if release else None,
        expected_cuda=release.cuda if release else None,
        python=release.python if release else None,
        table_verified=release.verified if release else False,
        power_mode=clocks.power_mode if clocks else None,
        power_mode_id=clocks.power_mode_id if clocks else None,
        jetson_clocks=clocks.clocks_locked if clocks else None,
        warning=warning,
    )
