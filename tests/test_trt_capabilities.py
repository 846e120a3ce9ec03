"""kd2trt.trt.capabilities.probe against the API surfaces of NVIDIA's real bindings (tests/trt_surface.py).

Each surface has exactly the names, and enum values, that ``scripts/check_trt_api.py --introspect`` found in
that version's compiled ``tensorrt`` module, so these tests hold the probe to what 8.6, 10.3, 10.13, 11.0 and
11.4 really expose -- not to a hand-written idea of them.
"""

from __future__ import annotations

import pytest

from kd2trt.targets import TrtVersion
from kd2trt.trt.capabilities import probe
from tests.trt_surface import surface, versions

DLA = {"Builder": {"num_DLA_cores": 2, "platform_has_fast_fp16": True, "platform_has_fast_int8": False}}

#: version -> (weak typing, calibrator, STRONGLY_TYPED flag, EXPLICIT_BATCH needed, precision-constraints flag)
EXPECTED = {
    "8.6.1": (True, True, False, True, "OBEY_PRECISION_CONSTRAINTS"),
    "10.3.0": (True, True, True, False, "OBEY_PRECISION_CONSTRAINTS"),
    "10.13.3.9": (True, True, True, False, "OBEY_PRECISION_CONSTRAINTS"),
    "11.0.0.114": (False, False, True, False, None),
    "11.4.0.106": (False, False, True, False, None),
}


def test_every_introspected_version_is_expected() -> None:
    assert versions() == list(EXPECTED)


@pytest.mark.parametrize("version", list(EXPECTED))
def test_probe_per_version(version: str) -> None:
    caps = probe(surface(version, defaults=DLA))
    weak, calibrator, strongly_typed, explicit_batch, constraints = EXPECTED[version]
    assert caps.version == TrtVersion.parse(version) and caps.version_string == version
    assert caps.weak_typing is weak and caps.strongly_typed_only is (not weak)
    assert caps.has_calibrator is calibrator and caps.has_calibration_profile is calibrator
    assert caps.strongly_typed_flag is strongly_typed
    assert caps.explicit_batch_flag_needed is explicit_batch
    assert caps.precision_constraints_flag == constraints and caps.layer_precision is weak
    assert caps.version_compatible and caps.hardware_compatible and caps.has_builder  # all >= 8.6
    assert caps.num_dla_cores == 2
    if weak:  # asked of the Builder where the property exists
        assert (caps.platform_has_fast_fp16, caps.platform_has_fast_int8) == (True, False)
    else:  # removed in 11.0: not asked, reported as None
        assert (caps.platform_has_fast_fp16, caps.platform_has_fast_int8) == (None, None)


@pytest.mark.parametrize("version", ["10.3.0", "10.13.3.9"])
def test_explicit_batch_exists_on_10x_but_is_not_needed(version: str) -> None:
    """The flag is still an enum member on 10.x (deprecated, ignored): presence alone must not mean 'needed'."""
    trt = surface(version)
    assert hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert probe(trt).explicit_batch_flag_needed is False


def test_the_surfaces_carry_the_real_flag_values() -> None:
    """STRONGLY_TYPED is 1 on 10.x and 0 on 11.x: the bit kd2trt sets must be read from the enum."""
    assert int(surface("10.3.0").NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    assert int(surface("11.0.0.114").NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    assert int(surface("8.6.1").NetworkDefinitionCreationFlag.EXPLICIT_BATCH) == 0
    assert not hasattr(surface("11.4.0.106").NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")


def test_a_class_absent_from_a_version_is_absent_from_its_surface() -> None:
    assert not hasattr(surface("11.0.0.114"), "IInt8EntropyCalibrator2")
    assert hasattr(surface("10.13.3.9"), "IInt8EntropyCalibrator2")
    config = surface("11.0.0.114").IBuilderConfig()
    with pytest.raises(AttributeError, match="no attribute 'int8_calibrator'"):
        config.int8_calibrator = object()


def test_a_runtime_only_install_is_not_a_builder() -> None:
    trt = surface("10.13.3.9")
    del trt.Builder, trt.OnnxParser  # tensorrt_lean: the runtime without the builder
    caps = probe(trt)
    assert not caps.has_builder and caps.num_dla_cores == 0 and caps.platform_has_fast_fp16 is None
