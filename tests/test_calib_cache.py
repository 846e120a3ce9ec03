"""Tests for kd2trt.onnx.calib_cache: TensorRT's calibration-cache format, byte for byte.

Expected scale encodings are computed independently with numpy's float32 (``np.float32(amax) / 127``),
not with the module's own encoder, so that a wrong rounding or byte order in the module fails a test.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from kd2trt.errors import Kd2trtError, TrtVersionError
from kd2trt.onnx import calib_cache
from kd2trt.onnx.calib_cache import (
    CALIBRATION_ALGORITHMS,
    CalibCacheError,
    CalibrationCache,
    check_compatible,
    parse_cache,
    read_cache,
    resolve_algorithm,
    write_cache,
)
from kd2trt.targets import TrtVersion

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "calib"
# Real TensorRT-written caches live outside the repository (licences not reviewed): in ../shared, the
# sibling of the repository directory, locally /work/shared.
SHARED_CACHES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "trt-calibration-caches"

V851 = TrtVersion(8, 5, 1)
V1030 = TrtVersion(10, 3, 0)


def f32_bits_hex(amax: float) -> str:
    """TensorRT's encoding of ``amax``, computed independently: float32 division, bits, unpadded hex."""
    scale = np.float32(amax) / np.float32(127.0)
    return format(int(np.array([scale], dtype=">f4").view(">u4")[0]), "x")


def f32_from_hex(text: str) -> float:
    return float(np.array([int(text, 16)], dtype=">u4").view(">f4")[0])


# --------------------------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8.5", TrtVersion(8, 5, 0)),
        ("8.6.2", TrtVersion(8, 6, 2)),
        ("10.3", TrtVersion(10, 3, 0)),
        ("10.14.1", TrtVersion(10, 14, 1)),
        ("11.0", TrtVersion(11, 0, 0)),
        (" 10.3.0 ", TrtVersion(10, 3, 0)),
        ("10.3.0.26", TrtVersion(10, 3, 0)),  # tensorrt.__version__ carries a build number
    ],
)
def test_version_parse_accepted_forms(text: str, expected: TrtVersion) -> None:
    assert TrtVersion.parse(text) == expected


@pytest.mark.parametrize("text", ["", "10", "ten", "10.x", "v10.3", "10.3.0.1.2", "10..3", "-8.5", "8.5-ea"])
def test_version_parse_rejects_with_accepted_forms(text: str) -> None:
    with pytest.raises(TrtVersionError) as info:
        TrtVersion.parse(text)
    message = str(info.value)
    assert repr(text) in message
    assert "MAJOR.MINOR" in message and "10.14.1" in message
    assert isinstance(info.value, Kd2trtError)


@pytest.mark.parametrize(
    ("version", "number"),
    [
        (TrtVersion(8, 5, 1), 8501),
        (TrtVersion(8, 5, 2), 8502),
        (TrtVersion(8, 6, 0), 8600),
        (TrtVersion(8, 4, 0), 8400),
        (TrtVersion(10, 1, 0), 100100),
        (TrtVersion(10, 3, 0), 100300),
        (TrtVersion(10, 13, 3), 101303),
        (TrtVersion(10, 14, 1), 101401),
        (TrtVersion(9, 3, 0), 90300),  # assumed 10.x encoding for 9.x, see the module notes
    ],
)
def test_header_number_both_ways(version: TrtVersion, number: int) -> None:
    assert version.header_number == number
    assert TrtVersion.from_header_number(number) == version


@pytest.mark.parametrize("number", [0, 500, 9300, 12345, 89999])
def test_from_header_number_refuses_numbers_of_no_encoding(number: int) -> None:
    with pytest.raises(TrtVersionError, match="not a TensorRT version number"):
        TrtVersion.from_header_number(number)


@pytest.mark.parametrize("version", [TrtVersion(8, 10, 0), TrtVersion(8, 5, 100), TrtVersion(10, 100, 0)])
def test_header_number_refuses_unencodable_versions(version: TrtVersion) -> None:
    with pytest.raises(TrtVersionError, match="cannot be written"):
        _ = version.header_number


def test_version_validation_and_str() -> None:
    assert str(TrtVersion(8, 5, 1)) == "8.5.1"
    assert str(TrtVersion.parse("10.3")) == "10.3.0"
    with pytest.raises(TrtVersionError):
        TrtVersion(0, 5)
    with pytest.raises(TrtVersionError):
        TrtVersion(8, -1)


def test_supports_implicit_int8() -> None:
    assert TrtVersion(8, 5, 1).supports_implicit_int8
    assert TrtVersion(10, 14, 1).supports_implicit_int8
    assert not TrtVersion(11, 0).supports_implicit_int8


# ------------------------------------------------------------------------------------------ algorithms


def test_calibration_algorithms_mapping() -> None:
    assert dict(CALIBRATION_ALGORITHMS) == {
        "entropy": "EntropyCalibration2",
        "minmax": "MinMaxCalibration",
        "percentile": "EntropyCalibration2",
    }
    with pytest.raises(TypeError):
        CALIBRATION_ALGORITHMS["x"] = "y"  # type: ignore[index]


def test_resolve_algorithm() -> None:
    assert resolve_algorithm("minmax") == "MinMaxCalibration"
    assert resolve_algorithm("LegacyCalibration") == "LegacyCalibration"
    with pytest.raises(CalibCacheError, match="'Entropy2'"):
        resolve_algorithm("Entropy2")


# ---------------------------------------------------------------------------------------- known values


def test_known_values_decode() -> None:
    cache = parse_cache("TRT-8502-EntropyCalibration2\na: 3c010a14\nb: 0\nc: 7f800000\nd: 3f800000\n")
    assert cache.version == TrtVersion(8, 5, 2)
    assert cache.algorithm == "EntropyCalibration2"
    assert cache.scales["a"] == pytest.approx(0.0078760, abs=1e-7)
    assert cache.amax("a") == pytest.approx(1.0003, abs=1e-4)
    assert cache.scales["a"] == f32_from_hex("3c010a14")  # exactly the float32 value, not an approximation
    assert cache.amax("b") == 0.0
    assert cache.amax("c") == math.inf
    assert cache.amax("d") == 127.0
    assert list(cache.amaxes()) == ["a", "b", "c", "d"]
    with pytest.raises(KeyError):
        cache.amax("missing")


def test_uppercase_and_short_hex_are_read() -> None:
    cache = parse_cache("TRT-8502-EntropyCalibration2\na: 3C010A14\nb: 1\n")
    assert cache.scales["a"] == f32_from_hex("3c010a14")
    assert cache.scales["b"] == f32_from_hex("00000001")  # short forms are zero-padded on the left
    assert cache.to_text() == "TRT-8502-EntropyCalibration2\na: 3c010a14\nb: 1\n"


def test_split_on_last_separator() -> None:
    text = (
        "TRT-100300-EntropyCalibration2\n"
        "%x : Tensor = aten::relu(%y) # f.py:1:0_output: 3c010204\n"
        "a: b: c:: 0\n"
        "trailing: : 3f800000\n"
    )
    cache = parse_cache(text)
    assert list(cache.scales) == [
        "%x : Tensor = aten::relu(%y) # f.py:1:0_output",
        "a: b: c:",
        "trailing: ",
    ]
    assert cache.amax("trailing: ") == 127.0
    assert cache.to_text() == text


def test_bare_zero_written_back_as_zero() -> None:
    text = "TRT-101401-EntropyCalibration2\nz: 0\n"
    assert parse_cache(text).to_text() == text
    cache = CalibrationCache.from_amax({"z": 0.0, "neg_zero": -0.0}, TrtVersion(10, 14, 1))
    assert cache.to_text() == "TRT-101401-EntropyCalibration2\nz: 0\nneg_zero: 0\n"


def test_header_property_and_method_name_normalised() -> None:
    cache = CalibrationCache(V851, "entropy", {})
    assert cache.algorithm == "EntropyCalibration2"
    assert cache.header == "TRT-8501-EntropyCalibration2"
    assert CalibrationCache(V1030, "minmax").header == "TRT-100300-MinMaxCalibration"
    assert CalibrationCache(V1030, "percentile").header == "TRT-100300-EntropyCalibration2"
    assert CalibrationCache(V1030, "minmax").to_text() == "TRT-100300-MinMaxCalibration\n"
    with pytest.raises(CalibCacheError):
        CalibrationCache(V1030, "percentile99")


# ------------------------------------------------------------------------------------------- from_amax


def test_from_amax_encodes_like_float32_division() -> None:
    amax = {"input": 1.0, "conv": 6.0, "act": 2.5, "small": 0.5, "big": 127.0, "max": 3.4028234663852886e38}
    cache = CalibrationCache.from_amax(amax, V1030, "entropy")
    lines = cache.to_text().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    assert lines[1:] == [f"{name}: {f32_bits_hex(value)}" for name, value in amax.items()]
    assert "input: 3c010204" in lines and "big: 3f800000" in lines and "max: 7c010204" in lines


def test_from_amax_to_text_parse_round_trip_within_float32() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0, 50, 200), rng.lognormal(0, 4, 200), [0.0, 1e-30, 1e30]])
    amax = {f"t{i}: odd name": float(v) for i, v in enumerate(values)}
    cache = CalibrationCache.from_amax(amax, V851, "minmax")
    back = parse_cache(cache.to_text())
    assert back == cache
    assert list(back.scales) == list(amax)
    for name, value in amax.items():
        # one float32 rounding of amax/127, then *127 in float64: within float32 precision
        assert back.amax(name) == pytest.approx(value, rel=2**-23, abs=1e-37)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -0.5, 1e40, "wide"])
def test_from_amax_refuses_bad_ranges_naming_tensor(bad: object) -> None:
    with pytest.raises(CalibCacheError, match="/backbone/Conv_output_0"):
        CalibrationCache.from_amax({"ok": 1.0, "/backbone/Conv_output_0": bad}, V1030)  # type: ignore[dict-item]


def test_from_amax_accepts_numpy_scalars() -> None:
    cache = CalibrationCache.from_amax({"a": np.float32(1.0), "b": np.float64(6.0)}, V1030)
    expected = f"TRT-100300-EntropyCalibration2\na: {f32_bits_hex(1.0)}\nb: {f32_bits_hex(6.0)}\n"
    assert cache.to_text() == expected


@pytest.mark.parametrize("name", ["", "two\nlines", "cr\r"])
def test_unwritable_names_refused(name: str) -> None:
    with pytest.raises(CalibCacheError, match="line breaks"):
        CalibrationCache.from_amax({name: 1.0}, V1030)
    with pytest.raises(CalibCacheError, match="line breaks"):
        CalibrationCache(V1030, "entropy", {name: 0.1}).to_text()


def test_from_amax_refuses_tensorrt_11() -> None:
    with pytest.raises(CalibCacheError, match="explicit quantization"):
        CalibrationCache.from_amax({"a": 1.0}, TrtVersion(11, 0))


# ------------------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", None, "is empty"),
        ("\n", 1, "expected a header"),
        ("input: 3c010a14\n", 1, "header is missing"),
        ("TRT8502EntropyCalibration2\na: 0\n", 1, "expected a header"),
        ("TRT-85x2-EntropyCalibration2\na: 0\n", 1, "expected a header"),
        ("TRT-08502-EntropyCalibration2\n", 1, "expected a header"),
        ("TRT-8502-EntropyCalibration2 \n", 1, "expected a header"),
        ("TRT-8502-PercentileCalibration\na: 0\n", 1, "unknown calibration algorithm"),
        ("TRT-9300-EntropyCalibration2\na: 0\n", 1, "not a TensorRT version number"),
        ("TRT-8502-EntropyCalibration2\na: 0\nb 3c010a14\n", 3, "no ': ' separator"),
        ("TRT-8502-EntropyCalibration2\na: 0\nb:3c010a14\n", 3, "no ': ' separator"),
        ("TRT-8502-EntropyCalibration2\n\na: 0\n", 2, "is empty"),
        ("TRT-8502-EntropyCalibration2\na: 0\n\n", 3, "is empty"),
        ("TRT-8502-EntropyCalibration2\n: 3c010a14\n", 2, "tensor name is empty"),
        ("TRT-8502-EntropyCalibration2\na: 13c010a14\n", 2, "not 1-8 hex digits"),
        ("TRT-8502-EntropyCalibration2\na: 0x3c01\n", 2, "not 1-8 hex digits"),
        ("TRT-8502-EntropyCalibration2\na: 3c01zz14\n", 2, "not 1-8 hex digits"),
        ("TRT-8502-EntropyCalibration2\na: \n", 2, "not 1-8 hex digits"),
        ("TRT-8502-EntropyCalibration2\na: 1.0\n", 2, "not 1-8 hex digits"),
        ("TRT-8502-EntropyCalibration2\na: 3c010a14 \n", 2, "not 1-8 hex digits"),
        ("TRT-8502-EntropyCalibration2\na: 0\nb: 0\na: 3c010a14\n", 4, "already appeared on line 2"),
        ("TRT-8502-EntropyCalibration2\r\na: 0\r\n", 1, "carriage return"),
        ("TRT-8502-EntropyCalibration2\na: 0\nb: 0\r\n", 3, "carriage return"),
    ],
)
def test_malformed_input_names_source_and_line(text: str, line: int | None, fragment: str) -> None:
    with pytest.raises(CalibCacheError) as info:
        parse_cache(text, source="models/student.cache")
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message  # one line for the CLI
    if line is None:
        assert message.startswith("models/student.cache ")
    else:
        assert message.startswith(f"models/student.cache:{line}: ")


def test_malformed_line_message_says_what_a_line_must_look_like() -> None:
    with pytest.raises(CalibCacheError, match=r'"<tensor name>: <scale as 1-8 hex digits>"'):
        parse_cache("TRT-8502-EntropyCalibration2\nbroken\n", source="x.cache")


def test_long_lines_are_shortened_in_messages() -> None:
    name = "%input : Tensor = " + "x" * 500
    with pytest.raises(CalibCacheError) as info:
        parse_cache(f"TRT-100100-EntropyCalibration2\n{name}: nothex\n")
    assert len(str(info.value)) < 400


def test_missing_trailing_newline_is_tolerated() -> None:
    cache = parse_cache("TRT-8502-EntropyCalibration2\na: 3c010a14")
    assert cache.scales == {"a": f32_from_hex("3c010a14")}


def test_header_only_cache_is_valid() -> None:
    cache = parse_cache("TRT-100300-MinMaxCalibration\n")
    assert cache.scales == {} and cache.algorithm == "MinMaxCalibration"


# ------------------------------------------------------------------------------------------------ I/O


def test_read_cache_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "calib.cache"
    with pytest.raises(CalibCacheError, match="does not exist") as info:
        read_cache(missing)
    assert str(missing) in str(info.value)


def test_read_cache_directory_and_binary(tmp_path: Path) -> None:
    with pytest.raises(CalibCacheError, match="is a directory"):
        read_cache(tmp_path)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"ftrt\x00\x00\xff\xfe\x80binary")
    with pytest.raises(CalibCacheError, match="not UTF-8") as info:
        read_cache(engine)
    assert str(engine) in str(info.value)


def test_read_cache_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "calib.cache"
    path.write_text("TRT-8502-EntropyCalibration2\na: 3c010a14\nb: zz\n")
    with pytest.raises(CalibCacheError) as info:
        read_cache(path)
    assert str(info.value).startswith(f"{path}:3: ")


def test_write_cache_writes_exact_text_and_leaves_no_temp(tmp_path: Path) -> None:
    cache = CalibrationCache.from_amax({"input": 1.0, "(Unnamed Layer* 3) [Convolution]_output": 0.0}, V851)
    path = tmp_path / "calib.cache"
    write_cache(cache, path)
    assert path.read_bytes() == (
        b"TRT-8501-EntropyCalibration2\ninput: 3c010204\n(Unnamed Layer* 3) [Convolution]_output: 0\n"
    )
    assert os.listdir(tmp_path) == ["calib.cache"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert read_cache(path) == cache


def test_write_cache_replaces_existing_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "calib.cache"
    path.write_text("old\n")
    path.chmod(0o600)
    write_cache(CalibrationCache(V1030, "minmax", {"a": 1.0}), path)
    assert path.read_text() == "TRT-100300-MinMaxCalibration\na: 3f800000\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["calib.cache"]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_keeps_existing_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "calib.cache"
    path.write_text("TRT-8501-EntropyCalibration2\nkeep: 3c010204\n")
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(calib_cache.os, failing, boom)
    with pytest.raises(CalibCacheError, match="No space left on device") as info:
        write_cache(CalibrationCache(V1030, "entropy", {"new": 0.5}), path)
    monkeypatch.undo()
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["calib.cache"]


def test_write_cache_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "calib.cache"
    with pytest.raises(CalibCacheError, match="cannot write calibration cache") as info:
        write_cache(CalibrationCache(V1030, "entropy", {"a": 0.5}), path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------- check_compatible


def test_check_compatible_accepts_same() -> None:
    cache = CalibrationCache(V1030, "EntropyCalibration2", {"a": 0.1})
    check_compatible(cache, TrtVersion.parse("10.3"), "EntropyCalibration2", "calib.cache")
    check_compatible(cache, V1030, "entropy", "calib.cache")
    check_compatible(cache, V1030, "percentile", "calib.cache")


def test_check_compatible_refuses_other_version() -> None:
    cache = CalibrationCache(V851, "EntropyCalibration2", {"a": 0.1})
    with pytest.raises(CalibCacheError) as info:
        check_compatible(cache, V1030, "EntropyCalibration2", "runs/x/calib.cache")
    message = str(info.value)
    assert message.startswith("runs/x/calib.cache was written for TensorRT 8.5.1")
    assert "TRT-8501-EntropyCalibration2" in message
    assert "TensorRT 10.3.0" in message and "TRT-100300-EntropyCalibration2" in message
    assert "silently ignore" in message
    assert "`kd2trt export --int8 --trt-version 10.3`" in message and "--force" in message


def test_check_compatible_strict_on_patch_by_default() -> None:
    cache = CalibrationCache(V851, "EntropyCalibration2", {"a": 0.1})
    with pytest.raises(CalibCacheError, match=r"--trt-version 8\.5\.2"):
        check_compatible(cache, TrtVersion(8, 5, 2), "entropy", "calib.cache")
    check_compatible(cache, TrtVersion(8, 5, 2), "entropy", "calib.cache", allow_patch_mismatch=True)
    with pytest.raises(CalibCacheError):
        check_compatible(cache, TrtVersion(8, 6, 1), "entropy", "calib.cache", allow_patch_mismatch=True)
    # the documented follow-up for allow_patch_mismatch: re-stamp the header
    restamped = dataclasses.replace(cache, version=TrtVersion(8, 5, 2))
    assert restamped.header == "TRT-8502-EntropyCalibration2"
    check_compatible(restamped, TrtVersion(8, 5, 2), "entropy", "calib.cache")


def test_check_compatible_refuses_other_algorithm() -> None:
    cache = CalibrationCache(V1030, "MinMaxCalibration", {"a": 0.1})
    with pytest.raises(CalibCacheError) as info:
        check_compatible(cache, V1030, "entropy", Path("calib.cache"))
    message = str(info.value)
    assert message.startswith("calib.cache was written for TensorRT 10.3.0 with MinMaxCalibration")
    assert "TRT-100300-EntropyCalibration2" in message and "'entropy'" in message


def test_check_compatible_refuses_tensorrt_11() -> None:
    cache = CalibrationCache(V1030, "EntropyCalibration2", {"a": 0.1})
    with pytest.raises(CalibCacheError, match="no INT8 calibrators"):
        check_compatible(cache, TrtVersion(11, 0), "entropy", "calib.cache")


# ------------------------------------------------------------------------------- the project's fixtures


OWN_FIXTURES = {
    "trt8502_entropy2_internal_names.cache": (TrtVersion(8, 5, 2), "EntropyCalibration2", 6),
    "trt100300_entropy2_colon_names.cache": (TrtVersion(10, 3, 0), "EntropyCalibration2", 5),
    "trt101303_minmax_inf_zero.cache": (TrtVersion(10, 13, 3), "MinMaxCalibration", 6),
}


@pytest.mark.parametrize("name", sorted(OWN_FIXTURES))
def test_own_fixture_round_trip_byte_exact(name: str, tmp_path: Path) -> None:
    path = FIXTURES / name
    version, algorithm, count = OWN_FIXTURES[name]
    cache = read_cache(path)
    assert (cache.version, cache.algorithm, len(cache.scales)) == (version, algorithm, count)
    assert cache.to_text().encode("utf-8") == path.read_bytes()
    out = tmp_path / name
    write_cache(cache, out)
    assert out.read_bytes() == path.read_bytes()


def test_own_fixture_edge_values() -> None:
    internal = read_cache(FIXTURES / "trt8502_entropy2_internal_names.cache")
    assert internal.amax("(Unnamed Layer* 3) [Convolution]_output") == pytest.approx(6.0, rel=1e-6)
    assert "ONNXTRT_ShapeShuffle_0" in internal.scales

    colon = read_cache(FIXTURES / "trt100300_entropy2_colon_names.cache")
    assert "name: with: colons:" in colon.scales
    assert colon.amax("%7 : Tensor = aten::relu(%input.3) # functional.py:1500:0_output") == 0.0

    minmax = read_cache(FIXTURES / "trt101303_minmax_inf_zero.cache")
    assert minmax.amax("/encoder/layer.0/attention/Where_output_0") == math.inf
    assert minmax.amax("/encoder/layer.0/attention/Max_output_0") == pytest.approx(3.4028235e38, rel=1e-6)
    assert minmax.amax("/encoder/layer.0/Add_output_0") == 0.0


# --------------------------------------------------------------------- real caches written by TensorRT


@pytest.fixture
def shared_caches() -> Path:
    if not SHARED_CACHES.is_dir():
        pytest.skip(
            f"real TensorRT caches not found at {SHARED_CACHES} (the shared/ directory beside the repository "
            "is absent); they are kept out of the repo because their licences were not reviewed"
        )
    return SHARED_CACHES


REAL = {
    "trt8501_entropy2_retina_lpr.cache": (TrtVersion(8, 5, 1), 126),
    "trt100100_entropy2_usamnet_colon_names.cache": (TrtVersion(10, 1, 0), 57),
    "trt101401_entropy2_yolov8_zero_entries.cache": (TrtVersion(10, 14, 1), 348),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_cache_counts_and_byte_exact_round_trip(shared_caches: Path, name: str, tmp_path: Path) -> None:
    path = shared_caches / name
    version, count = REAL[name]
    cache = read_cache(path)
    assert cache.version == version
    assert cache.algorithm == "EntropyCalibration2"
    assert len(cache.scales) == count
    assert cache.header == path.read_text().split("\n", 1)[0]
    assert cache.to_text().encode("utf-8") == path.read_bytes()
    out = tmp_path / name
    write_cache(cache, out)
    assert out.read_bytes() == path.read_bytes()
    check_compatible(cache, version, "entropy", path)


def test_real_cache_edge_cases(shared_caches: Path) -> None:
    colon = read_cache(shared_caches / "trt100100_entropy2_usamnet_colon_names.cache")
    assert sum(": " in name for name in colon.scales) == 53
    zeros = read_cache(shared_caches / "trt101401_entropy2_yolov8_zero_entries.cache")
    assert sum(scale == 0.0 for scale in zeros.scales.values()) == 15
    assert zeros.amax("/model.0/act/Sigmoid_output_0") == pytest.approx(1.0003, abs=1e-4)
    old = read_cache(shared_caches / "trt8501_entropy2_retina_lpr.cache")
    with pytest.raises(CalibCacheError, match="TRT-8501-EntropyCalibration2"):
        check_compatible(old, TrtVersion(8, 5, 2), "entropy", "trt8501.cache")
