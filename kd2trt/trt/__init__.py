"""TensorRT layer: capability probe, precision plan, engine builder, calibrator, runner and engine manifest.

Nothing here imports ``tensorrt`` (or CUDA) at module import time: every module can be imported, and its pure
logic tested, on a machine without a GPU. TensorRT is imported only after :func:`capabilities.probe_environment`
has seen a CUDA device, because TensorRT objects created without one can crash the interpreter instead of
raising (see DESIGN §3).

The code is written for TensorRT 8.5 (JetPack 5, Python 3.8) through 11.x, so this package keeps to Python 3.8
syntax and standard library: ``from __future__ import annotations`` everywhere, no ``match``, no 3.9+ helpers.
"""
