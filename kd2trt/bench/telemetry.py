"""Jetson telemetry for `kd2trt bench`: power mode, clock lock state, and board power sampled with tegrastats.

On a Jetson, `kd2trt bench` runs `tegrastats --interval N` in the background while a latency measurement
runs, to report mean board power (W) and energy per inference (mJ); the power mode and clock lock state it
records come from :mod:`kd2trt.trt.jetson`. Everywhere else this
module reports "not a Jetson" and does nothing: nothing here raises on a machine without the Jetson tools.

Formats handled (see tests/fixtures/tegrastats/README.md for the fixtures and where each format comes from):

* tegrastats power rails, one ``NAME VALUE`` pair per rail, the first number being the instantaneous reading
  in milliwatts and the second the running average (JetPack 7 adds a third, the maximum):
  ``VDD_IN 5012mW/4870mW`` (JetPack 5/6: Orin, Xavier NX), ``VDD_IN 5012mW/4870mW/6120mW`` (JetPack 7),
  ``POM_5V_IN 3000/2950`` and ``VDD_IN 3744/3744`` (JetPack 4: Nano, TX2, Xavier; bare numbers, still mW).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import IO, Any

from kd2trt.errors import Kd2trtError
from kd2trt.trt.jetson import NOT_A_JETSON, find_tool

# Rails that measure the whole module/board input, in preference order:
# VDD_IN (Orin Nano/NX, Xavier NX, TX1/TX2), POM_5V_IN (original Nano), VIN (Thor's input monitor; unverified).
TOTAL_RAILS: tuple[str, ...] = ("VDD_IN", "POM_5V_IN", "VIN")

# Modules with no single input rail: module power is the sum of these rails (all must be present).
# AGX Orin: GPU+SOC, CPU+CV and the 5 V system rail, the sum public AGX Orin power scripts use; VDDQ_VDD2_1V8AO is
# left out (taken to be supplied from VIN_SYS_5V0, so adding it would count it twice).
# AGX Xavier (JetPack 4 names): GPU, CPU, SOC, CV, VDDRQ and SYS5V.
SUMMED_RAILS: tuple[tuple[str, ...], ...] = (
    ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"),
    ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"),
)


# A rail name, and a rail value: "5012mW/4870mW", "5012mW/4870mW/6120mW" or "3000/2950".
_RAIL_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_RAIL_VALUE = re.compile(r"(\d+(?:\.\d+)?)(?:mW)?(?:/\d+(?:\.\d+)?(?:mW)?){1,2}")
# Tokens shaped like a rail that are not one: memory counters carry a unit so never match, but be explicit.
_NOT_RAILS = frozenset({"RAM", "SWAP", "IRAM", "NC"})



# ---------------------------------------------------------------------------------------------------------------
# tegrastats
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PowerSample:
    """One tegrastats line: when it arrived (`time.monotonic()` seconds) and the instantaneous mW per rail."""

    t: float
    rails_mw: dict[str, float]


def parse_tegrastats_line(line: str) -> dict[str, float]:
    """Rail name -> instantaneous power in mW for one tegrastats line; {} when the line has no power rail.

    Takes the first number of ``NAME X/Y`` or ``NAME XmW/YmW`` (or ``XmW/YmW/ZmW``); bare numbers are the
    older JetPack 4 form and are milliwatts too. Every other token (RAM, CPU loads, clocks, temperatures,
    the leading date) is ignored.
    """
    rails: dict[str, float] = {}
    tokens = line.split()
    for i in range(len(tokens) - 1):  # no itertools.pairwise / zip(strict=): Python 3.8
        name, value = tokens[i], tokens[i + 1]
        if name in _NOT_RAILS or not _RAIL_NAME.fullmatch(name):
            continue
        match = _RAIL_VALUE.fullmatch(value)
        if match:
            rails[name] = float(match.group(1))
    return rails


def _total_with_rail(rails: dict[str, float]) -> tuple[str, float] | None:
    for name in TOTAL_RAILS:
        if name in rails:
            return name, rails[name]
    for group in SUMMED_RAILS:
        if all(name in rails for name in group):
            return "+".join(group), sum(rails[name] for name in group)
    return None


def total_power_mw(rails: dict[str, float]) -> float | None:
    """Whole-board power in mW from one parsed line: the first of TOTAL_RAILS present, else the sum of a
    SUMMED_RAILS group (AGX Orin, AGX Xavier); None when the line has no board-level rail."""
    picked = _total_with_rail(rails)
    return None if picked is None else picked[1]


@dataclass
class PowerSummary:
    """Board power over a sampling window: `samples` readings of `rail`, mean and max in watts."""

    samples: int
    mean_w: float
    max_w: float
    rail: str
    seconds: float

    def energy_per_inference_mj(self, inferences: int, seconds: float) -> float:
        """Energy per inference in millijoules, for `inferences` run in `seconds` (the timed loop's duration):
        mean power x time / inferences. The caller picks the unit: images, or batches."""
        if inferences <= 0:
            raise ValueError(f"energy per inference needs a positive number of inferences, got {inferences}")
        if seconds < 0:
            raise ValueError(f"energy per inference needs a non-negative duration, got {seconds}")
        return self.mean_w * seconds / inferences * 1000.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_samples(samples: Iterable[PowerSample], seconds: float) -> PowerSummary | None:
    """Mean/max board power over `samples`; None when no sample has a board-level rail.

    If the rail differs between samples (it should not), the rail seen most often is used and only its
    samples are averaged, so that one reading is never mixed with another rail's.
    """
    picked = [p for p in (_total_with_rail(s.rails_mw) for s in samples) if p is not None]
    if not picked:
        return None
    rail = Counter(name for name, _ in picked).most_common(1)[0][0]
    values = [mw for name, mw in picked if name == rail]
    return PowerSummary(samples=len(values), mean_w=sum(values) / len(values) / 1000.0,
                        max_w=max(values) / 1000.0, rail=rail, seconds=max(0.0, seconds))


def _reap(proc: Any, timeout: float) -> None:
    """Terminate `proc` and wait for it; kill it if it ignores SIGTERM for `timeout` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError):  # already gone
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait(timeout=timeout)


class TegrastatsSampler:
    """Runs `tegrastats --interval N` in the background and collects board power, as a context manager::

        with TegrastatsSampler(interval_ms=100) as sampler:
            result = latency.measure(...)
        summary = sampler.summary()      # PowerSummary, or None (then `sampler.reason` says why)

    Where tegrastats is absent (not a Jetson), `available` is False, start/stop do nothing and `summary()` is
    None: it never raises for that. `stop()` terminates tegrastats (then kills it if it does not exit) and
    also runs when the body raises; a finalizer reaps the process if the sampler is dropped unstopped.
    `runner` stands in for `subprocess.Popen` in tests.
    """

    def __init__(self, interval_ms: int = 100, executable: str = "tegrastats",
                 runner: Callable[..., Any] = subprocess.Popen, stop_timeout: float = 2.0) -> None:
        if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or interval_ms < 1:
            raise Kd2trtError(f"kd2trt bench: the tegrastats interval must be a whole number of milliseconds "
                              f">= 1, got {interval_ms!r}; use e.g. 100")
        self.interval_ms = interval_ms
        self.executable = executable
        self._runner = runner
        self._stop_timeout = stop_timeout
        self._path = find_tool(executable)
        self._reason: str | None = None
        if self._path is None:
            self._reason = (f"{executable} not found: {NOT_A_JETSON} (or JetPack's tegrastats is not on PATH); "
                            f"power not measured")
        self._proc: Any = None
        self._thread: threading.Thread | None = None
        self._finalizer: Any = None
        self._lock = threading.Lock()
        self._samples: list[PowerSample] = []
        self._other_lines = 0
        self._last_other = ""
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._exited_early: int | None = None

    # -- state -------------------------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """False when tegrastats is absent or could not be started."""
        return self._path is not None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._stopped_at is None and self._proc.poll() is None

    @property
    def samples(self) -> list[PowerSample]:
        with self._lock:
            return list(self._samples)

    @property
    def command(self) -> list[str]:
        return [self._path or self.executable, "--interval", str(self.interval_ms)]

    @property
    def reason(self) -> str | None:
        """Why there is no power summary (None when there is one, or before sampling)."""
        if self._reason is not None:
            return self._reason
        if self._exited_early is not None:
            tail = f": {self._last_other}" if self._last_other else ""
            return f"{self.executable} exited with code {self._exited_early} before it was stopped{tail}"
        samples = self.samples
        if self._started_at is not None and samples and summarize_samples(samples, 0.0) is None:
            seen = ", ".join(sorted({name for s in samples for name in s.rails_mw}))
            return (f"{self.executable} reported rails ({seen}) but none that measures the whole board "
                    f"(one of {', '.join(TOTAL_RAILS)}, or a full set of {SUMMED_RAILS[0]}); power not measured")
        if self._started_at is not None and not samples:
            if self._other_lines:
                return (f"{self.executable} printed {self._other_lines} line(s) but none had a power rail "
                        f"(last: {self._last_other!r}); this board may not expose power monitors")
            return (f"no {self.executable} output in the sampling window; measure for longer than the "
                    f"{self.interval_ms} ms interval")
        return None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> TegrastatsSampler:
        if self._started_at is not None:
            raise RuntimeError("TegrastatsSampler.start() called twice; use a new sampler per measurement")
        self._started_at = time.monotonic()
        if self._path is None:
            return self
        try:
            proc = self._runner(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, universal_newlines=True, encoding="utf-8",
                                errors="replace", bufsize=1)
        except OSError as exc:  # not executable, vanished, permission denied
            self._path = None
            self._reason = f"could not start {self.executable}: {exc}; power not measured"
            return self
        self._proc = proc
        self._finalizer = weakref.finalize(self, _reap, proc, self._stop_timeout)
        try:
            self._thread = threading.Thread(target=self._read, args=(proc.stdout,),
                                            name="kd2trt-tegrastats", daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop tegrastats; safe to call more than once, and before or without start()."""
        proc = self._proc
        if proc is None or self._stopped_at is not None:
            if self._stopped_at is None:
                self._stopped_at = time.monotonic()
            return
        self._stopped_at = time.monotonic()
        try:
            code = proc.poll()
            if code is not None and code != 0:
                self._exited_early = code
            _reap(proc, self._stop_timeout)
        except subprocess.TimeoutExpired:  # not even SIGKILL worked in time: the finalizer tries again at exit
            self._reason = f"{self.executable} (pid {proc.pid}) did not exit after SIGKILL"
        finally:
            if self._finalizer is not None and proc.poll() is not None:
                self._finalizer.detach()
            thread = self._thread
            if thread is not None:
                thread.join(timeout=self._stop_timeout)
            # Close the pipe only once the reader is done: closing it under a blocked read can deadlock.
            if (thread is None or not thread.is_alive()) and proc.stdout is not None:
                with contextlib.suppress(OSError):
                    proc.stdout.close()

    def __enter__(self) -> TegrastatsSampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _read(self, stream: IO[str] | None) -> None:
        if stream is None:
            return
        try:
            for line in stream:
                rails = parse_tegrastats_line(line)
                now = time.monotonic()
                stopped = self._stopped_at
                if stopped is not None:  # drained after stop(): written before tegrastats was stopped
                    now = min(now, stopped)
                with self._lock:
                    if rails:
                        self._samples.append(PowerSample(t=now, rails_mw=rails))
                    elif line.strip():
                        self._other_lines += 1
                        self._last_other = line.strip()[:200]
        except (OSError, ValueError):  # pipe closed under us
            pass

    # -- results -----------------------------------------------------------------------------------------------
    def summary(self, since: float | None = None, until: float | None = None) -> PowerSummary | None:
        """Board power over the samples taken (optionally only those with since <= t <= until, in
        `time.monotonic()` seconds); None when tegrastats is absent or gave no board-level rail."""
        if self._started_at is None:
            return None
        end = self._stopped_at if self._stopped_at is not None else time.monotonic()
        lo = self._started_at if since is None else since
        hi = end if until is None else until
        window = [s for s in self.samples if lo <= s.t <= hi]
        return summarize_samples(window, hi - lo)
