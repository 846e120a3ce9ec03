"""Jetson detection: L4T release, board model, the JetPack and TensorRT that L4T implies, power mode, clocks.

Sources on the device (all paths injectable, so tests read fixture files):

* ``/etc/nv_tegra_release`` -- first line ``# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, ...``:
  L4T (Jetson Linux) 36.4.3.
* ``/proc/device-tree/model`` -- ``NVIDIA Jetson AGX Orin Developer Kit`` followed by a NUL byte.
* ``nvpmodel -q`` -- ``NV Power Mode: MAXN`` then the mode id on the next line (optional extra).
* ``jetson_clocks --show`` -- per-CPU and GPU ``MinFreq=... MaxFreq=...``; jetson_clocks pins min to max
  (optional extra; the command needs root on most images, so a failure is reported as "unknown").

L4T -> JetPack -> TensorRT, from NVIDIA's JetPack release pages (developer.nvidia.com/embedded/jetpack
archive) and DESIGN §3. The TensorRT version is what JetPack *installs*; a container or a pip wheel can bring
another one, so it is an expectation to compare with, never a substitute for ``tensorrt.__version__``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = [
    "JETPACK_TABLE",
    "JetPackRelease",
    "JetsonInfo",
    "L4tVersion",
    "PowerMode",
    "detect_jetson",
    "jetpack_for_l4t",
    "parse_device_tree_model",
    "parse_jetson_clocks",
    "parse_nv_tegra_release",
    "parse_nvpmodel",
]

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


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
class PowerMode:
    name: str
    mode_id: int | None = None


def parse_nvpmodel(text: str) -> PowerMode | None:
    """``nvpmodel -q``: ``NV Power Mode: MAXN`` and, on the next non-empty line, the mode id.

    Lines that some versions print first (``NVPM WARN: ...``) are skipped.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        match = re.match(r"NV Power Mode\s*:\s*(.+)$", line)
        if match:
            mode_id = None
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                mode_id = int(lines[i + 1])
            return PowerMode(match.group(1).strip(), mode_id)
    return None


_FREQ_RE = re.compile(r"^(cpu\d+|GPU)\b.*?MinFreq=(\d+)\s+MaxFreq=(\d+)", re.MULTILINE)


def parse_jetson_clocks(text: str) -> bool | None:
    """``jetson_clocks --show``: ``True`` when every CPU and the GPU are pinned (MinFreq == MaxFreq).

    ``None`` when the output has no frequency lines (not a jetson_clocks report).
    """
    found = _FREQ_RE.findall(text)
    if not found:
        return None
    return all(int(low) == int(high) for _, low, high in found)


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

    def summary(self) -> dict[str, Any]:
        return asdict(self)


if TYPE_CHECKING:  # a runtime alias would subscript collections.abc.Callable, which Python 3.8 cannot
    Runner = Callable[[Sequence[str]], str]


def _run_command(argv: Sequence[str]) -> str:
    """Run a query tool; its output, or '' when it is missing, fails or hangs (these are optional extras)."""
    if shutil.which(argv[0]) is None:
        return ""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def detect_jetson(
    release_path: str | Path = NV_TEGRA_RELEASE,
    model_path: str | Path = DEVICE_TREE_MODEL,
    *,
    run: Runner | None = _run_command,
) -> JetsonInfo | None:
    """The Jetson this runs on, or ``None`` (x86, or an ARM machine without ``nv_tegra_release``).

    ``run`` executes ``nvpmodel -q`` and ``jetson_clocks --show`` (returns their stdout, '' on failure);
    pass ``None`` to skip them, or a function returning fixture text in tests.
    """
    try:
        text = Path(release_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    l4t = parse_nv_tegra_release(text)
    if l4t is None:
        return None
    try:
        model = parse_device_tree_model(Path(model_path).read_bytes())
    except OSError:
        model = None
    release = jetpack_for_l4t(l4t)
    power = clocks = None
    if run is not None:
        power = parse_nvpmodel(run(["nvpmodel", "-q"]))
        clocks = parse_jetson_clocks(run(["jetson_clocks", "--show"]))
    return JetsonInfo(
        l4t=str(l4t),
        model=model,
        jetpack=release.jetpack if release else None,
        expected_tensorrt=release.tensorrt if release else None,
        expected_cuda=release.cuda if release else None,
        python=release.python if release else None,
        table_verified=release.verified if release else False,
        power_mode=power.name if power else None,
        power_mode_id=power.mode_id if power else None,
        jetson_clocks=clocks,
    )
