"""`trtexec` command lines that build the engines kd2trt would build, for targets where kd2trt does not run.

JetPack 5 (TensorRT 8.5) ships Python 3.8; kd2trt needs Python >= 3.10, so on such a Jetson the engines are
built with NVIDIA's `trtexec` from the files `kd2trt export` wrote on the host: the FP32 ONNX with the FP16
and INT8 flags, the calibration cache for that exact release (`--calib`: trtexec reads a cache, it cannot
write one), and the layers an INT8 budget keeps in higher precision (`--precisionConstraints=obey
--layerPrecisions=…`). The precision decisions are kd2trt's own (:func:`kd2trt.trt.plan.plan_precision`,
with the capabilities the release is known to have), so a trtexec build and a kd2trt build agree.
"""

from __future__ import annotations

import shlex

from kd2trt.layout import ModelFiles
from kd2trt.targets import TrtVersion
from kd2trt.trt.capabilities import TrtCapabilities
from kd2trt.trt.plan import PrecisionPlan

__all__ = ["release_capabilities", "trtexec_command"]


def release_capabilities(version: TrtVersion) -> TrtCapabilities:
    """What a TensorRT release can do, from its version alone (DESIGN §3): for planning a build on a machine that
    is not the target. tests/test_trtexec.py checks it against the capabilities probed from the real bindings."""
    weak = version.major < 11
    return TrtCapabilities(version, str(version), weak_typing=weak, has_calibrator=weak,
                           strongly_typed_flag=version.major >= 9, explicit_batch_flag_needed=version.major < 10,
                           version_compatible=version >= TrtVersion(8, 6, 0),
                           hardware_compatible=version >= TrtVersion(8, 6, 0))


def trtexec_command(plan: PrecisionPlan, files: ModelFiles, version: TrtVersion, chw: tuple[int, int, int],
                    batches: tuple[int, int, int], *, input_name: str = "input", workspace_mb: int = 512,
                    high_precision: list[str] | tuple[str, ...] = (), model: str | None = None) -> str:
    """One `trtexec` line for `plan`, run in the directory that holds `files` (paths are file names, so the
    directory can be copied to the target): the graph, its flags, the optimisation profile, the engine.

    `batches` is (min, opt, max). The FP32 engine keeps TF32 off, as kd2trt's own FP32 reference does.
    """
    onnx = {"onnx": files.onnx("fp32"), "fp16_onnx": files.onnx("fp16"), "qdq_onnx": files.onnx("int8")}
    if plan.quantization == "implicit" and files.qat_onnx.is_file():
        onnx["onnx"] = files.qat_onnx  # QAT ran: the cache holds the ranges its fine-tuned weights need
    c, h, w = chw
    shape = lambda batch: f"{input_name}:{batch}x{c}x{h}x{w}"  # noqa: E731
    engine = f"{model or files.stem}-{plan.precision}-trt{version}.engine"
    args = ["trtexec", f"--onnx={onnx[plan.onnx_kind].name}", f"--saveEngine={engine}",
            f"--minShapes={shape(batches[0])}", f"--optShapes={shape(batches[1])}",
            f"--maxShapes={shape(batches[2])}", f"--memPoolSize=workspace:{workspace_mb}"]
    if plan.strongly_typed and version.major >= 11:
        args.append("--stronglyTyped")
    if plan.precision == "fp32":
        args.append("--noTF32")
    if plan.fp16_flag:
        args.append("--fp16")
    if plan.int8_flag:
        args.append("--int8")
    if plan.use_calibrator:
        args.append(f"--calib={files.calib_cache(version).name}")
    if high_precision and plan.quantization == "implicit":
        args += ["--precisionConstraints=obey",
                 "--layerPrecisions=" + ",".join(f"{layer}:fp32" for layer in high_precision)]
    return shlex.join(args)
