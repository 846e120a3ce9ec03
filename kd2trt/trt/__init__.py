"""TensorRT layer: capability probe, precision plan, engine builder, calibrator, runner and engine manifest.

Nothing here imports ``tensorrt`` (or CUDA) at module import time: every module can be imported, and its pure
logic tested, on a machine without a GPU. TensorRT is imported only after :func:`capabilities.probe_environment`
has seen a CUDA device, because TensorRT objects created without one can crash the interpreter instead of
raising (see DESIGN §3).

The code is written for TensorRT 8.5 through 11.x. It runs where kd2trt runs, Python 3.10 or later: JetPack 6
and 7, and the x86 containers. JetPack 5 (Python 3.8) builds engines from kd2trt's ONNX and calibration cache
with ``trtexec`` (README, "On a Jetson").
"""
