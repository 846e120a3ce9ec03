"""What the installed TensorRT can do, found by probing its API rather than by parsing its version string.

TensorRT's precision API changed twice in the versions kd2trt targets (DESIGN §3):

* 8.5 / 8.6 (JetPack 5 / 6.0): weak typing (``BuilderFlag.FP16``/``INT8``), INT8 calibrators, and networks
  must be created with ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``.
* 10.x (JetPack 6.1+ and 7, x86): the same weak typing (calibrators deprecated since 10.1 but present);
  ``EXPLICIT_BATCH`` is deprecated and ignored, ``STRONGLY_TYPED`` exists (opt-in).
* 11.x: strong typing only. ``BuilderFlag.FP16/INT8``, ``IBuilderConfig.int8_calibrator`` and
  ``Builder.platform_has_fast_fp16/int8`` and ``EXPLICIT_BATCH`` are removed; ``STRONGLY_TYPED`` is accepted
  and ignored (its value is 0 there, 1 in 10.x: the flag is always read from the enum, never hard-coded).
  (NVIDIA "Migrating from TensorRT 10.x to 11.x", Python API reference, "Removed Python APIs".)

So :func:`probe` asks ``hasattr`` of the classes, and only uses the version for the one thing no attribute
tells apart: whether ``EXPLICIT_BATCH`` is still required (8.x) or merely tolerated (10.x).

:func:`probe_environment` is the single entry point the rest of kd2trt uses. It looks for a CUDA device
*before* importing TensorRT or creating any TensorRT object, because TensorRT without a usable GPU does not
always fail cleanly (the ``tensorrt-lean`` runtime logs CUDA error 35 and then segfaults on the next call),
and it never raises: no TensorRT is an ordinary state of a CPU machine, reported as a reason.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict, dataclass
from typing import Any

from kd2trt.targets import TrtVersion

__all__ = ["TrtCapabilities", "probe", "probe_environment", "tensorrt_installed"]


@dataclass(frozen=True)
class TrtCapabilities:
    """The TensorRT features kd2trt's plan, builder and runner depend on."""

    version: TrtVersion
    version_string: str = ""
    weak_typing: bool = True  # BuilderFlag.FP16 / BuilderFlag.INT8 exist (<= 10.x)
    has_calibrator: bool = True  # IInt8EntropyCalibrator2 and IBuilderConfig.int8_calibrator exist (<= 10.x)
    strongly_typed_flag: bool = False  # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists (>= 9.x)
    explicit_batch_flag_needed: bool = False  # 8.x: networks must be created EXPLICIT_BATCH
    version_compatible: bool = False  # BuilderFlag.VERSION_COMPATIBLE (>= 8.6)
    hardware_compatible: bool = False  # HardwareCompatibilityLevel (>= 8.6)
    has_builder: bool = True  # a full TensorRT (Builder + OnnxParser), not only the lean runtime
    num_dla_cores: int = 0
    platform_has_fast_fp16: bool | None = None  # None: not asked, or removed (11.x)
    platform_has_fast_int8: bool | None = None
    # Per-layer precisions (ILayer.precision) and the flag that makes the builder honour them:
    # OBEY_PRECISION_CONSTRAINTS (>= 8.2; PREFER_PRECISION_CONSTRAINTS only warns); both gone in 11.x with
    # ILayer.precision itself (strong typing: the graph's types are the precisions).
    layer_precision: bool = True
    precision_constraints_flag: str | None = "OBEY_PRECISION_CONSTRAINTS"
    has_calibration_profile: bool = True  # IBuilderConfig.set_calibration_profile (<= 10.x)
    tf32_flag: bool = True  # BuilderFlag.TF32 (on by default: FP32 layers may run as TF32 on Ampere and later)

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 and later: precision comes from the ONNX graph's types, never from builder flags."""
        return not self.weak_typing

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = str(self.version)
        return data


def _version_of(trt: Any) -> tuple[TrtVersion, str]:
    text = str(getattr(trt, "__version__", "") or "")
    return TrtVersion.parse(text), text


def probe(trt: Any, builder: Any = None) -> TrtCapabilities:
    """Capabilities of the imported ``tensorrt`` module ``trt``.

    The class-level probes create no TensorRT object. Only the DLA core count and the ``platform_has_fast_*``
    answers need a ``Builder``; pass one (or let this create one) only once a CUDA device is known to exist
    -- :func:`probe_environment` does that.
    """
    version, version_string = _version_of(trt)
    builder_flag = getattr(trt, "BuilderFlag", None)
    network_flag = getattr(trt, "NetworkDefinitionCreationFlag", None)
    config_cls = getattr(trt, "IBuilderConfig", None)
    weak_typing = builder_flag is not None and hasattr(builder_flag, "INT8") and hasattr(builder_flag, "FP16")
    has_calibrator = hasattr(trt, "IInt8EntropyCalibrator2") and config_cls is not None and hasattr(
        config_cls, "int8_calibrator")
    has_builder = hasattr(trt, "Builder") and hasattr(trt, "OnnxParser")
    layer_cls = getattr(trt, "ILayer", None)
    constraints = next((name for name in ("OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS")
                        if builder_flag is not None and hasattr(builder_flag, name)), None)
    num_dla = 0
    fast_fp16 = fast_int8 = None
    if has_builder:
        if builder is None:
            builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        num_dla = int(getattr(builder, "num_DLA_cores", 0) or 0)
        # Deprecated in 10.5, removed in 11.0: ask only where they exist.
        if hasattr(type(builder), "platform_has_fast_fp16"):
            fast_fp16 = bool(builder.platform_has_fast_fp16)
        if hasattr(type(builder), "platform_has_fast_int8"):
            fast_int8 = bool(builder.platform_has_fast_int8)
    return TrtCapabilities(
        version=version,
        version_string=version_string,
        weak_typing=weak_typing,
        has_calibrator=has_calibrator,
        strongly_typed_flag=network_flag is not None and hasattr(network_flag, "STRONGLY_TYPED"),
        # The flag still exists in 10.x but is "[DEPRECATED] Ignored because networks are always explicit
        # batch": no attribute distinguishes "required" from "ignored", so this one uses the major version.
        explicit_batch_flag_needed=network_flag is not None and hasattr(network_flag, "EXPLICIT_BATCH")
        and version.major < 10,
        version_compatible=builder_flag is not None and hasattr(builder_flag, "VERSION_COMPATIBLE"),
        hardware_compatible=hasattr(trt, "HardwareCompatibilityLevel"),
        has_builder=has_builder,
        num_dla_cores=num_dla,
        platform_has_fast_fp16=fast_fp16,
        platform_has_fast_int8=fast_int8,
        layer_precision=layer_cls is not None and hasattr(layer_cls, "precision"),
        precision_constraints_flag=constraints,
        has_calibration_profile=config_cls is not None and hasattr(config_cls, "set_calibration_profile"),
        tf32_flag=builder_flag is not None and hasattr(builder_flag, "TF32"),
    )


def tensorrt_installed() -> dict[str, bool]:
    """Which TensorRT Python packages are on the path, found without importing (and so without risk)."""
    found = {}
    for name in ("tensorrt", "tensorrt_lean", "tensorrt_dispatch"):
        try:
            found[name] = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found[name] = False
    return found


def probe_environment() -> tuple[TrtCapabilities | None, str]:
    """``(capabilities, reason)`` for this machine, or ``(None, why not)``; never raises.

    Order matters: (1) a CUDA device must be visible (cuda-python's ``cudaGetDeviceCount``, else
    ``torch.cuda``), (2) only then is ``tensorrt`` imported, (3) only then is a ``Builder`` created.
    """
    from kd2trt.trt.cuda_memory import cuda_device_count

    installed = tensorrt_installed()
    count, device_reason = cuda_device_count()
    if count == 0:
        if installed["tensorrt"]:
            what = "TensorRT is installed but needs one"
        elif installed["tensorrt_lean"] or installed["tensorrt_dispatch"]:
            what = "only the TensorRT lean/dispatch runtime is installed (it cannot build engines)"
        else:
            what = "TensorRT is not installed either"
        return None, f"{device_reason}; {what}"
    if not installed["tensorrt"]:
        extra = " (tensorrt_lean is present, but it only runs engines)" if installed["tensorrt_lean"] else ""
        return None, (f"TensorRT is not installed{extra}; use the NVIDIA container (docker/Dockerfile.x86) or "
                      "JetPack's python3-libnvinfer")
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or a broken native library
        return None, f"`import tensorrt` failed: {type(exc).__name__}: {exc}"
    try:
        caps = probe(trt)
    except Exception as exc:
        return None, f"TensorRT {getattr(trt, '__version__', '?')} is installed but probing it failed: {exc}"
    return caps, f"TensorRT {caps.version_string or caps.version} with {device_reason}"
