"""Jetson detection: L4T release, board model, the JetPack and TensorRT that L4T implies, power mode, clocks.

Sources on the device (all paths injectable, so tests read fixture files):

* ``/etc/nv_tegra_release`` -- first line ``# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, ...``:
  L4T (Jetson Linux) 36.4.3.
* ``/proc/device-tree/model`` -- ``NVIDIA Jetson AGX Orin Developer Kit`` followed by a NUL byte.
* ``nvpmodel -q`` and ``jetson_clocks --show`` -- power mode and clock lock state (optional extras;
  ``jetson_clocks --show`` needs root on most images, so a failure is reported as "unknown").

Formats: ``nvpmodel -q`` prints a line ``NV Power Mode: <NAME>`` followed by a line holding the mode id;
``jetson_clocks --show`` prints ``cpuN: Online=1 Governor=... MinFreq=.. MaxFreq=.. CurrentFreq=..`` per CPU
and ``GPU MinFreq=.. MaxFreq=.. CurrentFreq=..``: clocks are locked when MinFreq == MaxFreq == CurrentFreq for
the GPU and every online CPU (what ``jetson_clocks`` sets). One implementation serves ``kd2trt doctor``, engine
manifests and ``kd2trt bench``. A Jetson whose ``nv_tegra_release`` is missing (the device tree says Jetson) or
does not parse is still a Jetson: :func:`detect_jetson` reports L4T ``"unknown"`` with a warning rather than
pretending the machine is an x86 host.

L4T -> JetPack -> TensorRT, from NVIDIA's JetPack release pages (developer.nvidia.com/embedded/jetpack
archive) and DESIGN §3. The TensorRT version is what JetPack *installs*; a container or a pip wheel can bring
another one, so it is an expectation to compare with, never a substitute for ``tensorrt.__version__``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

NOT_A_JETSON = "not a Jetson"
JETSON_RELEASE_FILE = "/etc/nv_tegra_release"
DEVICE_TREE_COMPATIBLE = "/proc/device-tree/compatible"
# Where JetPack installs its tools, for when they are not on PATH (e.g. /usr/sbin for a non-root user).
_TOOL_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")
_NVP_MODE = re.compile(r"NV Power Mode:\s*(\S.*?)\s*$")
_BARE_INT = re.compile(r"\s*(\d+)\s*$")
_CPU_LINE = re.compile(r"^\s*cpu(\d+):\s*(.*)$")
_GPU_LINE = re.compile(r"^\s*GPU\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)")
_FIELD = re.compile(r"(\w+)=(\S+)")

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


def find_tool(name: str) -> str | None:
    """Full path of a tool: as given if it names a path, else on PATH, else in JetPack's usual folders."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    for folder in _TOOL_DIRS:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# ---------------------------------------------------------------------------------------------------------------
# power mode and clocks
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ClockState:
    """nvpmodel power mode and jetson_clocks lock state; None where unknown, with `details` saying why."""

    power_mode: str | None
    power_mode_id: int | None
    clocks_locked: bool | None
    details: str

    @property
    def warning(self) -> str | None:
        """A one-line flag for a latency report when the clocks were not (known to be) locked, else None."""
        if self.clocks_locked is True:
            return None
        if self.clocks_locked is False:
            return ("clocks were not locked: latency varies with DVFS; run `sudo jetson_clocks` before "
                    "`kd2trt bench`")
        return f"clock lock state unknown ({self.details})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_nvpmodel(text: str) -> tuple[str | None, int | None]:
    """(mode name, mode id) from `nvpmodel -q` output: ``NV Power Mode: MAXN`` then a line ``0``."""
    name: str | None = None
    mode_id: int | None = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _NVP_MODE.search(line)
        if match:
            name = match.group(1)
            for following in lines[i + 1:]:
                number = _BARE_INT.match(following)
                if number:
                    mode_id = int(number.group(1))
                    break
            break
    if mode_id is None:
        for line in lines:
            number = _BARE_INT.match(line)
            if number:
                mode_id = int(number.group(1))
                break
    return name, mode_id


def _analyse_jetson_clocks(text: str) -> tuple[bool | None, str]:
    """(locked, why) from `jetson_clocks --show` output."""
    unlocked: list[str] = []
    cpus_online = 0
    gpu_seen = False
    for line in text.splitlines():
        gpu = _GPU_LINE.match(line)
        if gpu:
            gpu_seen = True
            lo, hi, cur = (int(v) for v in gpu.groups())
            if not lo == hi == cur:
                unlocked.append(f"GPU min {lo} max {hi} current {cur} Hz")
            continue
        cpu = _CPU_LINE.match(line)
        if cpu:
            fields = dict(_FIELD.findall(cpu.group(2)))
            if fields.get("Online", "1") != "1":
                continue
            try:
                lo, hi, cur = int(fields["MinFreq"]), int(fields["MaxFreq"]), int(fields["CurrentFreq"])
            except (KeyError, ValueError):
                continue
            cpus_online += 1
            if not lo == hi == cur:
                unlocked.append(f"cpu{cpu.group(1)} min {lo} max {hi} current {cur} kHz")
    if unlocked:
        more = f" (+{len(unlocked) - 1} more)" if len(unlocked) > 1 else ""
        return False, f"clocks not locked: {unlocked[0]}{more}"
    if gpu_seen and cpus_online:
        return True, f"clocks locked: GPU and {cpus_online} online CPU(s) at min == max == current"
    if not gpu_seen and not cpus_online:
        return None, "no CPU or GPU clock lines in `jetson_clocks --show` output"
    missing = "GPU" if not gpu_seen else "CPU"
    return None, f"no {missing} clock line in `jetson_clocks --show` output"


def parse_jetson_clocks_show(text: str) -> bool | None:
    """True when the GPU and every online CPU run at MinFreq == MaxFreq == CurrentFreq; False when any does
    not; None when the output has no clock lines to judge by."""
    return _analyse_jetson_clocks(text)[0]


def _run_tool(run: Callable[..., Any], tool: str, args: list[str], *, root_hint: str = ""
              ) -> tuple[str | None, str]:
    """(stdout, problem): stdout on success, else None and a one-line reason."""
    path = find_tool(tool) or tool
    shown = " ".join([tool, *args])
    try:
        done = run([path, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   universal_newlines=True, timeout=15, check=False)
    except FileNotFoundError:
        return None, f"{tool} not found ({NOT_A_JETSON}, or JetPack's tools are not on PATH)"
    except PermissionError:
        return None, f"permission denied running `{shown}`{root_hint}"
    except subprocess.TimeoutExpired:
        return None, f"`{shown}` timed out"
    except OSError as exc:
        return None, f"could not run `{shown}`: {exc}"
    out = done.stdout or ""
    if done.returncode != 0:
        said = " ".join(((done.stderr or "") + " " + out).split())[:160]
        hint = root_hint if root_hint and (_not_root() or "root" in said.lower()) else ""
        return None, f"`{shown}` failed (exit {done.returncode}{': ' + said if said else ''}){hint}"
    return out, ""


def _not_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() != 0


def read_clock_state(run: Callable[..., Any] = subprocess.run) -> ClockState:
    """Power mode from `nvpmodel -q` and lock state from `jetson_clocks --show`; never raises.

    Missing tools (not a Jetson) or a refused `jetson_clocks --show` (it needs root) give None fields and
    `details` saying why. `run` stands in for `subprocess.run` in tests.
    """
    notes: list[str] = []
    mode: str | None = None
    mode_id: int | None = None

    out, problem = _run_tool(run, "nvpmodel", ["-q"])
    if out is None:
        notes.append(f"power mode unknown: {problem}")
    else:
        mode, mode_id = parse_nvpmodel(out)
        if mode is None:
            notes.append(f"power mode unknown: no 'NV Power Mode:' line in `nvpmodel -q` output {out.strip()!r:.80}")
        else:
            notes.append(f"power mode {mode}" + (f" (id {mode_id})" if mode_id is not None else ""))

    root_hint = ("; jetson_clocks --show needs root: run `kd2trt bench` with sudo, or lock the clocks with "
                 "`sudo jetson_clocks` first")
    out, problem = _run_tool(run, "jetson_clocks", ["--show"], root_hint=root_hint)
    locked: bool | None = None
    if out is None:
        notes.append(f"clock lock state unknown: {problem}")
    else:
        locked, why = _analyse_jetson_clocks(out)
        if locked is None and "root" in out.lower():  # a version that refuses non-root but exits 0
            why += root_hint
        notes.append(why)
        if mode is None:  # jetson_clocks --show also prints the power mode
            shown_mode, _ = parse_nvpmodel(out)
            if shown_mode is not None:
                mode = shown_mode
                notes.append(f"power mode {mode} (from jetson_clocks --show)")
    return ClockState(power_mode=mode, power_mode_id=mode_id, clocks_locked=locked, details="; ".join(notes))


def is_jetson(release_file: str | os.PathLike[str] = JETSON_RELEASE_FILE,
              compatible_file: str | os.PathLike[str] = DEVICE_TREE_COMPATIBLE) -> bool:
    """True on an NVIDIA Jetson (L4T): /etc/nv_tegra_release exists, or the device tree says nvidia,tegra*.

    The one Jetson test in kd2trt (:func:`kd2trt.trt.jetson.detect_jetson` asks it too)."""
    if os.path.isfile(release_file):
        return True
    try:
        with open(compatible_file, "rb") as handle:
            return b"nvidia,tegra" in handle.read()
    except OSError:
        return False
