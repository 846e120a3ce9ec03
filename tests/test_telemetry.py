"""Tests for kd2trt.bench.telemetry: tegrastats / nvpmodel / jetson_clocks parsing, and the tegrastats sampler.

Expected rail values are written out by hand from the fixture files (or read from them with a separate, simpler
regex), never produced by the module's own parser. The sampler runs end to end against a stand-in `tegrastats`
(a Python script printing fixture lines every 10 ms): that exercises the real process and thread handling.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kd2trt.bench.telemetry import (
    TOTAL_RAILS,
    PowerSample,
    PowerSummary,
    TegrastatsSampler,
    parse_tegrastats_line,
    summarize_samples,
    total_power_mw,
)
from kd2trt.errors import Kd2trtError
from kd2trt.trt.jetson import ClockState, is_jetson, parse_jetson_clocks_show, parse_nvpmodel, read_clock_state

FIXTURES = Path(__file__).parent / "fixtures" / "tegrastats"


def fixture_lines(name: str) -> list[str]:
    return [line for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def first_line(name: str) -> str:
    return fixture_lines(name)[0]


# ---------------------------------------------------------------------------------------------------------------
# parse_tegrastats_line
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "expected"), [
    ("orin_nano_jp5.txt", {"VDD_IN": 7412.0, "VDD_CPU_GPU_CV": 2806.0, "VDD_SOC": 1988.0}),
    ("orin_nano_jp6.txt", {"VDD_IN": 9874.0, "VDD_CPU_GPU_CV": 4120.0, "VDD_SOC": 2510.0}),
    ("agx_orin_jp5.txt", {"VDD_GPU_SOC": 9876.0, "VDD_CPU_CV": 2364.0, "VIN_SYS_5V0": 4512.0,
                          "VDDQ_VDD2_1V8AO": 1305.0}),
    ("agx_orin_jp7.txt", {"VDD_GPU_SOC": 8120.0, "VDD_CPU_CV": 3012.0, "VIN_SYS_5V0": 5620.0}),
    ("xavier_nx_jp4.txt", {"VDD_IN": 6125.0, "VDD_CPU_GPU_CV": 2203.0, "VDD_SOC": 1346.0}),
    ("xavier_nx_jp5.txt", {"VDD_IN": 6740.0, "VDD_CPU_GPU_CV": 2655.0, "VDD_SOC": 1388.0}),
    ("nano_jp4.txt", {"POM_5V_IN": 4312.0, "POM_5V_GPU": 1690.0, "POM_5V_CPU": 855.0}),
    ("agx_xavier_jp4.txt", {"GPU": 7412.0, "CPU": 1243.0, "SOC": 2329.0, "CV": 0.0, "VDDRQ": 1087.0,
                            "SYS5V": 3320.0}),
])
def test_parse_first_line_of_each_format(fixture: str, expected: dict[str, float]) -> None:
    # Exactly the rails: RAM/SWAP/IRAM counters, CPU loads, clocks, temperatures, the date and NC are not rails.
    assert parse_tegrastats_line(first_line(fixture)) == expected


def test_parse_takes_the_instantaneous_value_not_the_average() -> None:
    # Second Orin Nano JP5 line: VDD_IN 7180mW/6925mW -> 7180 (the average 6925 must not be used).
    assert parse_tegrastats_line(fixture_lines("orin_nano_jp5.txt")[1])["VDD_IN"] == 7180.0
    # JetPack 7 inst/avg/max: VDD_CPU_CV 3012mW/2968mW/3388mW -> 3012.
    assert parse_tegrastats_line(first_line("agx_orin_jp7.txt"))["VDD_CPU_CV"] == 3012.0
    # Bare JetPack 4 numbers: POM_5V_IN 4468/4124 -> 4468.
    assert parse_tegrastats_line(fixture_lines("nano_jp4.txt")[1])["POM_5V_IN"] == 4468.0


@pytest.mark.parametrize("line", [
    "",
    "RAM 2418/7620MB (lfb 916x4MB) SWAP 0/3810MB (cached 0MB) CPU [12%@1510,3%@1510] EMC_FREQ 9%@2133",
    "IRAM 0/252kB(lfb 252kB) GR3D_FREQ 0%@76 APE 25 PLL@37C cpu@52.968C/52.968C",
    "05-16-2023 14:02:11 NVDEC off VIC off",
    "tegrastats: unrecognized option '--bogus'",
])
def test_lines_without_a_rail_give_empty_dict(line: str) -> None:
    assert parse_tegrastats_line(line) == {}


def test_only_milliwatt_or_bare_values_are_rails() -> None:
    # Counters with another unit, shaped like a rail, are not rails (whatever their name).
    line = "GPU_MEM 512/7620MB NVMAP 12/64kB TEMP_X 41C/43C VDD_IN 5000mW/4000mW POM_5V_GPU 1200/1100"
    assert parse_tegrastats_line(line) == {"VDD_IN": 5000.0, "POM_5V_GPU": 1200.0}
    # Decimal milliwatts are accepted; lower-case names (temperatures, dates) are not rail names.
    assert parse_tegrastats_line("VIN 10250.5mW/10100.0mW gpu 100/200") == {"VIN": 10250.5}


def test_every_fixture_line_has_a_board_total() -> None:
    for name in ("orin_nano_jp5.txt", "orin_nano_jp6.txt", "agx_orin_jp5.txt", "agx_orin_jp7.txt",
                 "xavier_nx_jp4.txt", "xavier_nx_jp5.txt", "nano_jp4.txt", "agx_xavier_jp4.txt"):
        for line in fixture_lines(name):
            assert total_power_mw(parse_tegrastats_line(line)) is not None, (name, line)


# ---------------------------------------------------------------------------------------------------------------
# total power and summaries
# ---------------------------------------------------------------------------------------------------------------


def test_total_rails_preference_order() -> None:
    assert TOTAL_RAILS[:2] == ("VDD_IN", "POM_5V_IN")
    assert total_power_mw({"VDD_SOC": 1000.0, "VDD_IN": 5000.0}) == 5000.0
    assert total_power_mw({"POM_5V_IN": 4000.0, "POM_5V_GPU": 900.0}) == 4000.0
    # Both present (never seen on a real board): VDD_IN wins.
    assert total_power_mw({"POM_5V_IN": 4000.0, "VDD_IN": 5000.0}) == 5000.0
    assert total_power_mw({}) is None
    assert total_power_mw({"VDD_SOC": 1000.0, "VDD_CPU_GPU_CV": 800.0}) is None


def test_agx_orin_total_is_the_sum_of_the_module_rails() -> None:
    rails = parse_tegrastats_line(first_line("agx_orin_jp5.txt"))
    # 9876 + 2364 + 4512; VDDQ_VDD2_1V8AO (1305) is fed from VIN_SYS_5V0 and must not be added.
    assert total_power_mw(rails) == 16752.0
    assert total_power_mw(parse_tegrastats_line(first_line("agx_orin_jp7.txt"))) == 8120.0 + 3012.0 + 5620.0
    # A partial set is not a board total.
    assert total_power_mw({"VDD_GPU_SOC": 9876.0, "VDD_CPU_CV": 2364.0}) is None


def test_agx_xavier_total_is_the_sum_of_its_six_rails() -> None:
    rails = parse_tegrastats_line(first_line("agx_xavier_jp4.txt"))
    assert total_power_mw(rails) == 7412.0 + 1243.0 + 2329.0 + 0.0 + 1087.0 + 3320.0


def test_summarize_samples_mean_max_and_rail() -> None:
    samples = [PowerSample(t=float(i), rails_mw=parse_tegrastats_line(line))
               for i, line in enumerate(fixture_lines("orin_nano_jp5.txt"))]
    summary = summarize_samples(samples, seconds=2.5)
    assert summary is not None
    # VDD_IN: 7412, 7180, 6951, 7533, 6890, 7305 -> mean 7211.833.. mW, max 7533 mW.
    assert summary.samples == 6
    assert summary.rail == "VDD_IN"
    assert summary.mean_w == pytest.approx(43271 / 6 / 1000)
    assert summary.max_w == pytest.approx(7.533)
    assert summary.seconds == 2.5


def test_summarize_samples_names_the_summed_rail() -> None:
    samples = [PowerSample(t=0.0, rails_mw=parse_tegrastats_line(line))
               for line in fixture_lines("agx_orin_jp5.txt")]
    summary = summarize_samples(samples, seconds=1.0)
    assert summary is not None
    assert summary.rail == "VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0"
    assert summary.mean_w == pytest.approx((16752 + 10241 + 2288 + 4536) / 2 / 1000)


def test_summarize_samples_without_total_is_none() -> None:
    assert summarize_samples([], seconds=1.0) is None
    assert summarize_samples([PowerSample(t=0.0, rails_mw={"VDD_SOC": 1.0})], seconds=1.0) is None


def test_energy_per_inference() -> None:
    summary = PowerSummary(samples=10, mean_w=6.0, max_w=7.5, rail="VDD_IN", seconds=2.1)
    # 6 W for 2 s over 1000 inferences = 12 J / 1000 = 12 mJ each.
    assert summary.energy_per_inference_mj(1000, 2.0) == pytest.approx(12.0)
    assert summary.energy_per_inference_mj(3, 0.5) == pytest.approx(1000.0)
    with pytest.raises(ValueError):
        summary.energy_per_inference_mj(0, 1.0)
    assert summary.as_dict()["rail"] == "VDD_IN"


# ---------------------------------------------------------------------------------------------------------------
# nvpmodel -q and jetson_clocks --show
# ---------------------------------------------------------------------------------------------------------------


def test_parse_nvpmodel_maxn() -> None:
    assert parse_nvpmodel((FIXTURES / "nvpmodel_q_maxn.txt").read_text()) == ("MAXN", 0)


def test_parse_nvpmodel_15w_after_a_warning_line() -> None:
    assert parse_nvpmodel((FIXTURES / "nvpmodel_q_15w.txt").read_text()) == ("15W", 2)


def test_parse_nvpmodel_other_shapes() -> None:
    assert parse_nvpmodel("NV Power Mode: MODE_15W_6CORE\n2\n") == ("MODE_15W_6CORE", 2)
    assert parse_nvpmodel("NV Power Mode: MAXN_SUPER\r\n2\r\n") == ("MAXN_SUPER", 2)
    assert parse_nvpmodel("NV Power Mode: MAXN\n") == ("MAXN", None)  # no id line: the id is unknown, not 0
    assert parse_nvpmodel("NVPM ERROR: failed to read /var/lib/nvpmodel/status\n") == (None, None)
    assert parse_nvpmodel("") == (None, None)


def test_parse_jetson_clocks_locked_and_unlocked() -> None:
    assert parse_jetson_clocks_show((FIXTURES / "jetson_clocks_show_locked.txt").read_text()) is True
    assert parse_jetson_clocks_show((FIXTURES / "jetson_clocks_show_unlocked.txt").read_text()) is False


def test_jetson_clocks_gpu_alone_unlocked_is_not_locked() -> None:
    text = (FIXTURES / "jetson_clocks_show_locked.txt").read_text().replace(
        "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000",
        "GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=1300500000")
    assert parse_jetson_clocks_show(text) is False


def test_jetson_clocks_one_online_cpu_unlocked_is_not_locked() -> None:
    text = (FIXTURES / "jetson_clocks_show_locked.txt").read_text().replace(
        "cpu7: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600",
        "cpu7: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=2201600")
    assert parse_jetson_clocks_show(text) is False


def test_jetson_clocks_offline_cpus_are_ignored() -> None:
    text = (FIXTURES / "jetson_clocks_show_locked.txt").read_text() + (
        "cpu12: Online=0 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=729600 IdleStates: WFI=1\n")
    assert parse_jetson_clocks_show(text) is True


def test_jetson_clocks_tx1_style_lines_without_online_field() -> None:
    locked = ("cpu0: Gonvernor=interactive MinFreq=1734000 MaxFreq=1734000 CurrentFreq=1734000\n"
              "GPU MinFreq=998400000 MaxFreq=998400000 CurrentFreq=998400000\n")
    assert parse_jetson_clocks_show(locked) is True
    assert parse_jetson_clocks_show(locked.replace("MinFreq=998400000", "MinFreq=76800000")) is False


def test_jetson_clocks_unparsable_is_none() -> None:
    assert parse_jetson_clocks_show("") is None
    assert parse_jetson_clocks_show("Error: Run this script(/usr/bin/jetson_clocks) as a root user\n") is None
    # CPU lines all locked but no GPU line: cannot tell.
    only_cpus = "\n".join(line for line in (FIXTURES / "jetson_clocks_show_locked.txt").read_text().splitlines()
                          if line.startswith("cpu"))
    assert parse_jetson_clocks_show(only_cpus) is None


def fake_run(outputs: dict[str, object]):
    """A stand-in for subprocess.run: outputs maps the tool's basename to (returncode, stdout, stderr) or an
    exception to raise. Records the argv of each call."""
    calls: list[list[str]] = []

    def run(argv, **kwargs):
        calls.append(list(argv))
        result = outputs[os.path.basename(argv[0])]
        if isinstance(result, BaseException):
            raise result
        code, out, err = result
        return subprocess.CompletedProcess(argv, code, out, err)

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_read_clock_state_on_a_locked_orin() -> None:
    run = fake_run({"nvpmodel": (0, (FIXTURES / "nvpmodel_q_maxn.txt").read_text(), ""),
                    "jetson_clocks": (0, (FIXTURES / "jetson_clocks_show_locked.txt").read_text(), "")})
    state = read_clock_state(run=run)
    assert (state.power_mode, state.power_mode_id, state.clocks_locked) == ("MAXN", 0, True)
    assert state.warning is None
    assert [call[1:] for call in run.calls] == [["-q"], ["--show"]]


def test_read_clock_state_unlocked_is_flagged() -> None:
    run = fake_run({"nvpmodel": (0, (FIXTURES / "nvpmodel_q_15w.txt").read_text(), ""),
                    "jetson_clocks": (0, (FIXTURES / "jetson_clocks_show_unlocked.txt").read_text(), "")})
    state = read_clock_state(run=run)
    assert (state.power_mode, state.power_mode_id, state.clocks_locked) == ("15W", 2, False)
    assert state.warning is not None and "sudo jetson_clocks" in state.warning
    assert "cpu0" in state.details


def test_read_clock_state_when_jetson_clocks_needs_root() -> None:
    run = fake_run({"nvpmodel": (0, "NV Power Mode: MAXN\n0\n", ""),
                    "jetson_clocks": (1, "Error: Run this script(/usr/bin/jetson_clocks) as a root user\n", "")})
    state = read_clock_state(run=run)
    assert (state.power_mode, state.power_mode_id) == ("MAXN", 0)
    assert state.clocks_locked is None
    assert "needs root" in state.details and "sudo" in state.details
    assert state.warning is not None and "unknown" in state.warning


def test_read_clock_state_root_refusal_with_exit_0() -> None:
    run = fake_run({"nvpmodel": (0, "NV Power Mode: 15W\n0\n", ""),
                    "jetson_clocks": (0, "Please run as root\n", "")})
    state = read_clock_state(run=run)
    assert state.clocks_locked is None and "needs root" in state.details


def test_read_clock_state_permission_error_and_missing_nvpmodel() -> None:
    run = fake_run({"nvpmodel": FileNotFoundError(2, "No such file"),
                    "jetson_clocks": PermissionError(13, "Permission denied")})
    state = read_clock_state(run=run)
    assert state == ClockState(None, None, None, state.details)
    assert "nvpmodel not found" in state.details
    assert "permission denied" in state.details and "needs root" in state.details


def test_read_clock_state_takes_the_mode_from_jetson_clocks_when_nvpmodel_fails() -> None:
    run = fake_run({"nvpmodel": (255, "", "NVPM ERROR: failed to read status"),
                    "jetson_clocks": (0, (FIXTURES / "jetson_clocks_show_locked.txt").read_text(), "")})
    state = read_clock_state(run=run)
    assert (state.power_mode, state.power_mode_id, state.clocks_locked) == ("MAXN", None, True)
    assert "exit 255" in state.details


def test_read_clock_state_timeout() -> None:
    run = fake_run({"nvpmodel": subprocess.TimeoutExpired(["nvpmodel", "-q"], 15),
                    "jetson_clocks": subprocess.TimeoutExpired(["jetson_clocks", "--show"], 15)})
    state = read_clock_state(run=run)
    assert (state.power_mode, state.clocks_locked) == (None, None)
    assert "timed out" in state.details


# ---------------------------------------------------------------------------------------------------------------
# is_jetson and non-Jetson behaviour on this machine
# ---------------------------------------------------------------------------------------------------------------


def test_is_jetson_from_release_file_or_device_tree(tmp_path: Path) -> None:
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n")
    missing = tmp_path / "missing"
    assert is_jetson(str(release), compatible_file=str(missing)) is True
    assert is_jetson(str(missing), compatible_file=str(missing)) is False
    compatible = tmp_path / "compatible"
    compatible.write_bytes(b"nvidia,p3768-0000+p3767-0005\x00nvidia,p3767-0005\x00nvidia,tegra234\x00")
    assert is_jetson(str(missing), compatible_file=str(compatible)) is True
    compatible.write_bytes(b"raspberrypi,4-model-b\x00brcm,bcm2711\x00")
    assert is_jetson(str(missing), compatible_file=str(compatible)) is False


on_a_jetson = os.path.exists("/etc/nv_tegra_release") or shutil.which("tegrastats") is not None


@pytest.mark.skipif(on_a_jetson, reason="this machine is a Jetson")
def test_this_machine_is_not_a_jetson() -> None:
    assert is_jetson() is False


@pytest.mark.skipif(on_a_jetson, reason="this machine is a Jetson")
def test_sampler_without_tegrastats_is_unavailable_and_silent() -> None:
    for sampler in (TegrastatsSampler(), TegrastatsSampler(executable="kd2trt-no-such-tegrastats")):
        assert sampler.available is False
        with sampler as entered:
            assert entered is sampler
            time.sleep(0.01)
        assert sampler.summary() is None
        assert sampler.samples == []
        assert sampler.reason is not None and "not a Jetson" in sampler.reason


@pytest.mark.skipif(on_a_jetson or shutil.which("nvpmodel") is not None, reason="this machine is a Jetson")
def test_read_clock_state_on_this_machine_returns_nones() -> None:
    state = read_clock_state()
    assert (state.power_mode, state.power_mode_id, state.clocks_locked) == (None, None, None)
    assert "not found" in state.details


def test_sampler_rejects_a_bad_interval() -> None:
    for bad in (0, -5, 2.5, True):
        with pytest.raises(Kd2trtError, match="kd2trt bench"):
            TegrastatsSampler(interval_ms=bad)  # type: ignore[arg-type]


def test_sampler_start_failure_is_not_an_exception() -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    sampler = TegrastatsSampler(executable=sys.executable, runner=refuse)
    with sampler:
        pass
    assert sampler.available is False
    assert sampler.summary() is None
    assert sampler.reason is not None and "Permission denied" in sampler.reason


# ---------------------------------------------------------------------------------------------------------------
# the sampler, end to end, against a stand-in tegrastats
# ---------------------------------------------------------------------------------------------------------------

FAKE_TEGRASTATS = """\
#!{python}
import os, signal, sys, time
with open({pid_file!r}, "w") as f:
    f.write(str(os.getpid()))
with open({argv_file!r}, "w") as f:
    f.write("\\n".join(sys.argv[1:]))
if {ignore_term!r}:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
lines = open({fixture!r}).read().splitlines()
if {exit_code!r} is not None:
    print("tegrastats: cannot open power monitor", flush=True)
    sys.exit({exit_code!r})
i = 0
while True:
    sys.stdout.write(lines[i % len(lines)] + "\\n")
    sys.stdout.flush()
    i += 1
    time.sleep(0.01)
"""


def make_fake_tegrastats(tmp_path: Path, fixture: str | Path, *, ignore_term: bool = False,
                         exit_code: int | None = None) -> tuple[Path, Path, Path]:
    script = tmp_path / "tegrastats"  # FIXTURES / fixture: a fixture name, or an absolute Path as is
    pid_file, argv_file = tmp_path / "pid", tmp_path / "argv"
    script.write_text(FAKE_TEGRASTATS.format(python=sys.executable, pid_file=str(pid_file),
                                             argv_file=str(argv_file), fixture=str(FIXTURES / fixture),
                                             ignore_term=ignore_term, exit_code=exit_code))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, pid_file, argv_file


def wait_for(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} was never written")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it has exited all the same.
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        return "zombie" not in status.read_text()
    return True


def test_sampler_end_to_end(tmp_path: Path) -> None:
    script, pid_file, argv_file = make_fake_tegrastats(tmp_path, "orin_nano_jp5.txt")
    vdd_in = [int(v) for v in re.findall(r"VDD_IN (\d+)mW", (FIXTURES / "orin_nano_jp5.txt").read_text())]

    with TegrastatsSampler(interval_ms=50, executable=str(script)) as sampler:
        assert sampler.available
        pid = int(wait_for(pid_file))
        assert pid_alive(pid)
        time.sleep(0.3)
    assert not pid_alive(pid), "tegrastats still running after stop()"
    assert wait_for(argv_file).split("\n") == ["--interval", "50"]

    summary = sampler.summary()
    assert summary is not None, sampler.reason
    assert summary.samples > 5
    assert summary.rail == "VDD_IN"
    assert min(vdd_in) / 1000 <= summary.mean_w <= max(vdd_in) / 1000
    assert summary.max_w * 1000 in vdd_in
    assert summary.seconds >= 0.3
    assert sampler.reason is None
    times = [s.t for s in sampler.samples]
    assert times == sorted(times)
    # Windowing: nothing before the first sample -> None; the whole run -> all samples.
    assert sampler.summary(until=times[0] - 1.0) is None
    assert sampler.summary(since=times[0], until=times[-1]).samples == summary.samples


def test_sampler_stops_the_process_when_the_body_raises(tmp_path: Path) -> None:
    script, pid_file, _ = make_fake_tegrastats(tmp_path, "nano_jp4.txt")
    sampler = TegrastatsSampler(interval_ms=10, executable=str(script))
    with pytest.raises(RuntimeError, match="boom"), sampler:
        pid = int(wait_for(pid_file))
        time.sleep(0.1)
        raise RuntimeError("boom")
    assert not pid_alive(pid)
    summary = sampler.summary()
    assert summary is not None and summary.rail == "POM_5V_IN"
    assert 4.312 <= summary.mean_w <= 4.468
    sampler.stop()  # idempotent


def test_sampler_kills_a_tegrastats_that_ignores_sigterm(tmp_path: Path) -> None:
    script, pid_file, _ = make_fake_tegrastats(tmp_path, "agx_orin_jp5.txt", ignore_term=True)
    sampler = TegrastatsSampler(interval_ms=10, executable=str(script), stop_timeout=0.5)
    sampler.start()
    try:
        pid = int(wait_for(pid_file))
        time.sleep(0.1)
    finally:
        started = time.monotonic()
        sampler.stop()
    assert not pid_alive(pid)
    assert time.monotonic() - started < 5.0
    summary = sampler.summary()
    assert summary is not None and summary.rail == "VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0"


def test_sampler_reports_an_early_exit(tmp_path: Path) -> None:
    script, pid_file, _ = make_fake_tegrastats(tmp_path, "orin_nano_jp6.txt", exit_code=3)
    with TegrastatsSampler(interval_ms=10, executable=str(script)) as sampler:
        pid = int(wait_for(pid_file))
        time.sleep(0.3)
    assert not pid_alive(pid)
    assert sampler.summary() is None
    assert sampler.reason is not None
    assert "exited with code 3" in sampler.reason and "cannot open power monitor" in sampler.reason


def test_sampler_without_a_board_rail_says_so(tmp_path: Path) -> None:
    # A board whose monitors report only sub-rails: samples, but no whole-board power.
    only_soc = tmp_path / "only_soc.txt"
    only_soc.write_text("RAM 2418/7620MB (lfb 916x4MB) VDD_SOC 1988mW/1902mW VDD_CPU_GPU_CV 2806mW/2511mW\n")
    script, pid_file, _ = make_fake_tegrastats(tmp_path, only_soc)
    with TegrastatsSampler(interval_ms=10, executable=str(script)) as sampler:
        wait_for(pid_file)
        time.sleep(0.1)
    assert sampler.samples
    assert sampler.summary() is None
    assert sampler.reason is not None and "VDD_CPU_GPU_CV, VDD_SOC" in sampler.reason


def test_sampler_cannot_be_started_twice(tmp_path: Path) -> None:
    script, _, _ = make_fake_tegrastats(tmp_path, "orin_nano_jp5.txt")
    with TegrastatsSampler(interval_ms=10, executable=str(script)) as sampler, pytest.raises(RuntimeError):
        sampler.start()
