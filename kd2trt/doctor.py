"""`kd2trt doctor`: what is installed, what this machine can do, and where to go for the rest.

:func:`collect_environment` gathers facts into a plain dict (JSON-serialisable, so ``--json`` is trivial);
:func:`format_report` renders it as text. Nothing here can crash the interpreter: TensorRT is looked at only
through :func:`kd2trt.trt.capabilities.probe_environment`, which checks for a CUDA device before importing it
(TensorRT objects created without a GPU can segfault), and every other probe is wrapped so that one broken
package becomes a line in the report, not a traceback.
"""

from __future__ import annotations

import importlib
import platform
import sys
from typing import Any

__all__ = ["collect_environment", "format_report"]

TARGET_HINT = ("run it on the target: inside docker/Dockerfile.x86 on an NVIDIA GPU host "
               "(`docker run --gpus all …`) or on the Jetson itself — see docker/README.md")


def _version_of(module_name: str) -> dict[str, Any]:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or a package that fails while importing
        return {"installed": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"installed": True, "version": str(getattr(module, "__version__", "?"))}


def _torch_info() -> dict[str, Any]:
    info = _version_of("torch")
    if not info["installed"]:
        return info
    try:
        import torch

        info["cuda_build"] = torch.version.cuda
        info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"]:
            props = torch.cuda.get_device_properties(0)
            info["device_count"] = torch.cuda.device_count()
            info["device_name"] = props.name
            info["compute_capability"] = f"{props.major}.{props.minor}"
    except Exception as exc:
        info["cuda_available"] = False
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def _onnxruntime_info() -> dict[str, Any]:
    info = _version_of("onnxruntime")
    if info["installed"]:
        try:
            import onnxruntime

            info["providers"] = list(onnxruntime.get_available_providers())
        except Exception as exc:
            info["providers"] = []
            info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def _cuda_python_info() -> dict[str, Any]:
    from kd2trt.trt import cuda_memory

    info: dict[str, Any] = {}
    try:
        cudart = cuda_memory.load_cudart()
        info["installed"] = True
        info["module"] = cudart.__name__
        try:
            from importlib.metadata import version

            for dist in ("cuda-python", "cuda-bindings"):
                try:
                    info["version"] = version(dist)
                    break
                except Exception:
                    continue
        except ImportError:
            pass
    except cuda_memory.CudaError as exc:
        info["installed"] = False
        info["error"] = str(exc)
    count, reason = cuda_memory.cuda_device_count()
    info["device_count"] = count
    info["device_reason"] = reason
    if count:
        try:
            device = cuda_memory.device_info(0)
            info["device_name"] = device.name
            info["compute_capability"] = device.compute_capability
            info["memory_mb"] = device.total_memory_mb
            info["cuda_runtime"] = cuda_memory.runtime_version()
        except Exception as exc:
            info["device_error"] = str(exc)
    return info


def _tensorrt_info() -> dict[str, Any]:
    from kd2trt.trt.capabilities import probe_environment, tensorrt_installed

    info: dict[str, Any] = {"packages": tensorrt_installed()}
    caps, reason = probe_environment()
    info["usable"] = caps is not None
    info["reason"] = reason
    if caps is not None:
        info["version"] = caps.version_string or str(caps.version)
        info["capabilities"] = caps.summary()
    return info


def _jetson_info() -> dict[str, Any] | None:
    from kd2trt.trt.jetson import detect_jetson

    try:
        jetson = detect_jetson()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return jetson.summary() if jetson is not None else None


def _abilities(env: dict[str, Any]) -> list[dict[str, Any]]:
    torch_info, trt_info = env["torch"], env["tensorrt"]
    onnx_ok = env["onnx"]["installed"] and env["onnxruntime"]["installed"]
    gpu = bool(torch_info.get("cuda_available"))
    rows = [
        {"task": "distill (teacher → student) on the CPU", "ok": bool(torch_info["installed"]),
         "why": "torch is installed" if torch_info["installed"] else "torch is missing: install the pinned pair "
         "from README"},
        {"task": "distill on a CUDA GPU", "ok": gpu,
         "why": f"torch sees {torch_info.get('device_name')}" if gpu else "torch sees no CUDA device (CPU works)"},
        {"task": "export ONNX, FP16/Q-DQ graphs, calibration caches, INT8 preview (ONNX Runtime)", "ok": onnx_ok,
         "why": "onnx and onnxruntime are installed" if onnx_ok else "onnx/onnxruntime missing: pip install -e ."},
    ]
    caps = trt_info.get("capabilities")
    if caps is None:
        why = f"needs TensorRT and a CUDA device (see above); {TARGET_HINT}"
        rows.append({"task": "build TensorRT engines (kd2trt export … with TensorRT)", "ok": False, "why": why})
        rows.append({"task": "benchmark TensorRT engines (kd2trt bench)", "ok": False, "why": why})
        return rows
    version = trt_info["version"]
    rows.append({"task": "build TensorRT engines", "ok": bool(caps["has_builder"]),
                 "why": f"TensorRT {version}" if caps["has_builder"] else
                 f"TensorRT {version} is runtime-only (no Builder); {TARGET_HINT}"})
    if caps["weak_typing"]:
        int8 = ("implicit INT8 from a calibration cache (no data needed) or the Q/DQ graph"
                if caps["has_calibrator"] else "INT8 from the Q/DQ graph")
        rows.append({"task": "INT8 engines", "ok": True, "why": int8 + "; FP16 via the builder flag"})
    else:
        rows.append({"task": "INT8 / FP16 engines", "ok": True,
                     "why": f"TensorRT {version} is strongly typed: INT8 from the Q/DQ graph, FP16 from the FP16 "
                     "graph (calibration caches are not used)"})
    rows.append({"task": "DLA engines", "ok": caps["num_dla_cores"] > 0,
                 "why": f"{caps['num_dla_cores']} DLA core(s)" if caps["num_dla_cores"] else "no DLA on this device"})
    rows.append({"task": "run / benchmark TensorRT engines (kd2trt bench)", "ok": True,
                 "why": f"TensorRT {version} with a CUDA device; engines must be built for this TensorRT and GPU"})
    return rows


def collect_environment() -> dict[str, Any]:
    """Everything `kd2trt doctor` reports, as a JSON-serialisable dict. Never raises for a missing package."""
    from kd2trt import __version__

    env: dict[str, Any] = {
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform(), "machine": platform.machine()},
        "kd2trt": {"version": __version__},
        "torch": _torch_info(),
        "onnx": _version_of("onnx"),
        "onnxruntime": _onnxruntime_info(),
        "cuda_python": _cuda_python_info(),
        "tensorrt": _tensorrt_info(),
        "jetson": _jetson_info(),
    }
    env["abilities"] = _abilities(env)
    return env


def _line(label: str, value: str) -> str:
    return f"  {label:<14} {value}"


def format_report(env: dict[str, Any]) -> str:
    """Plain-text report (rich prints it as is)."""
    out = ["kd2trt doctor", ""]
    py = env["python"]
    out.append(_line("python", f"{py['version']} ({py['executable']}) on {py['platform']}"))
    out.append(_line("kd2trt", env["kd2trt"]["version"]))
    torch_info = env["torch"]
    if torch_info["installed"]:
        cuda = (f"CUDA {torch_info.get('cuda_build')} build; device: {torch_info['device_name']} "
                f"(sm{torch_info['compute_capability'].replace('.', '')})" if torch_info.get("cuda_available")
                else f"CUDA {torch_info.get('cuda_build') or '-'} build; no CUDA device")
        out.append(_line("torch", f"{torch_info['version']} ({cuda})"))
    else:
        out.append(_line("torch", f"not installed ({torch_info.get('error', '')})"))
    for name in ("onnx", "onnxruntime"):
        info = env[name]
        text = info["version"] if info["installed"] else f"not installed ({info.get('error', '')})"
        if name == "onnxruntime" and info["installed"]:
            text += f" (providers: {', '.join(info.get('providers', [])) or 'none'})"
        out.append(_line(name, text))
    cp = env["cuda_python"]
    if cp.get("installed"):
        text = f"{cp.get('version', '?')} ({cp['module']})"
    else:
        text = "not installed (pip install 'kd2trt[trt]' on GPU machines)"
    out.append(_line("cuda-python", text))
    if cp.get("device_name"):
        out.append(_line("CUDA device", f"{cp['device_name']} (sm{cp['compute_capability'].replace('.', '')}, "
                         f"{cp['memory_mb']} MiB), CUDA runtime {cp.get('cuda_runtime') or '?'}"))
    else:
        out.append(_line("CUDA device", cp["device_reason"]))
    trt = env["tensorrt"]
    if trt["usable"]:
        caps = trt["capabilities"]
        typing_ = "strong typing only" if not caps["weak_typing"] else "weak typing (FP16/INT8 flags)"
        out.append(_line("TensorRT", f"{trt['version']} — {typing_}, calibrators: "
                         f"{'yes' if caps['has_calibrator'] else 'no'}, DLA cores: {caps['num_dla_cores']}"))
    else:
        out.append(_line("TensorRT", f"not usable — {trt['reason']}"))
    jetson = env["jetson"]
    if jetson is None:
        out.append(_line("Jetson", "no (not an NVIDIA Jetson)"))
    elif "error" in jetson:
        out.append(_line("Jetson", f"detection failed: {jetson['error']}"))
    else:
        jp = jetson.get("jetpack") or "unknown"
        expected = jetson.get("expected_tensorrt")
        text = f"{jetson.get('model') or 'unknown board'}, L4T {jetson['l4t']}, JetPack {jp}"
        if expected:
            text += f" (ships TensorRT {expected}{'' if jetson.get('table_verified') else ', unverified'})"
        if jetson.get("power_mode"):
            text += f", power mode {jetson['power_mode']}"
        if jetson.get("jetson_clocks") is not None:
            text += f", jetson_clocks {'on' if jetson['jetson_clocks'] else 'off'}"
        out.append(_line("Jetson", text))
        if jetson.get("warning"):
            out.append(_line("", f"warning: {jetson['warning']}"))
        if trt["usable"] and expected and not trt["version"].startswith(expected.replace(".x", "")):
            out.append(_line("", f"note: TensorRT {trt['version']} is not JetPack's {expected}; engines follow "
                             "the TensorRT that builds them"))
    out += ["", "What this machine can do:"]
    for row in env["abilities"]:
        out.append(f"  [{'yes' if row['ok'] else 'no '}] {row['task']}: {row['why']}")
    return "\n".join(out) + "\n"
