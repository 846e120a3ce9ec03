"""`kd2trt export`: checkpoint → checked ONNX → FP16 graph → INT8 (calibration cache + Q/DQ) → preview.

Everything here runs on a machine with no GPU and no TensorRT. The outputs are what a TensorRT
builder on any target needs: the FP32 ONNX (TensorRT ≤ 10.x with builder flags), the FP16 cast graph
and the Q/DQ graph (TensorRT 11's strongly typed builds), and calibration caches (implicit INT8 on
TensorRT ≤ 10.x, reusable on a Jetson that has no data). Each cache carries a JSON manifest naming the
ONNX it was calibrated for and how, so that a cache cannot silently be reused with another ONNX; its
header names the one TensorRT release that will read it.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from rich.console import Console
from rich.markup import escape
from torch import nn

from kd2trt.artifacts import (
    atomic_path,
    atomic_write_json,
    ensure_directory,
    remove_stale_temp_dirs,
    remove_stale_temp_files,
    sha256_file,
)
from kd2trt.config import ExportConfig, RunConfig
from kd2trt.data import DataSplits, Preprocessing
from kd2trt.distill.checkpoint import data_of, model_from_checkpoint, preprocessing_of, read_checkpoint
from kd2trt.distill.qat import QatSettings, require_modelopt
from kd2trt.errors import Kd2trtError
from kd2trt.evaluation import TorchRunner
from kd2trt.layout import ModelFiles, RunLayout, sidecar
from kd2trt.manifests import CacheManifest, write_manifest
from kd2trt.metrics import top1
from kd2trt.onnx import calibration
from kd2trt.onnx.calib_cache import (
    CalibrationCache,
    check_cache_tensors,
    read_cache,
    read_cache_manifest,
    resolve_algorithm,
    write_cache,
)
from kd2trt.onnx.export import check_onnx, export_onnx, opset_of
from kd2trt.onnx.fp16 import convert_fp16
from kd2trt.onnx.int8_budget import search_budget
from kd2trt.onnx.parity import TOLERANCE_KEYS, Parity, Tolerance, compare, require
from kd2trt.onnx.qat import QatInputs, QatOutcome, run_qat
from kd2trt.onnx.qdq import quantize_qdq
from kd2trt.onnx.runtime import OrtRunner
from kd2trt.onnx.trt_ops import preflight
from kd2trt.provenance import tool_versions
from kd2trt.results import StageResult
from kd2trt.targets import parse_target

PARITY_IMAGES = 512


@dataclass
class ExportRequest:
    """What one `kd2trt export` invocation was asked for, beyond the recipe's export section."""

    checkpoint: Path
    out_dir: Path | None = None
    calib_data: Path | None = None      # .npy/.npz of preprocessed images instead of the data spec
    calib_cache: Path | None = None     # reuse: no calibration, no data needed
    force: bool = False


@dataclass
class ExportRun:
    request: ExportRequest
    config: ExportConfig
    console: Console
    checkpoint: dict[str, Any] = field(init=False)
    role: str = field(init=False)
    out_dir: Path = field(init=False)
    _data: DataSplits | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.checkpoint = read_checkpoint(self.request.checkpoint)
        self.role = self.checkpoint["kd2trt"]["role"]
        self.out_dir = self.request.out_dir or self.request.checkpoint.parent
        ensure_directory(self.out_dir)
        remove_stale_temp_files(self.out_dir)  # what a killed export left: its own temp names, dead pids only
        remove_stale_temp_dirs()               # and its kd2trt-calib-*/kd2trt-qdq-* directories
        self.files = ModelFiles(self.out_dir, self.role)
        self.targets = [parse_target(v).version for v in self.config.trt_versions]

    @property
    def preprocessing(self) -> Preprocessing:
        return preprocessing_of(self.checkpoint)

    @functools.cached_property
    def teacher(self) -> nn.Module | None:
        """The run's teacher.pt beside a student checkpoint, loaded once (None when there is none)."""
        path = self.request.checkpoint.parent / "teacher.pt"
        if self.role == "teacher" or not path.is_file():
            return None
        return model_from_checkpoint(read_checkpoint(path, ("teacher",)), path)

    @property
    def data(self) -> DataSplits:
        """The checkpoint's own data spec and preprocessing, loaded on first use only."""
        if self._data is None:
            self._data = data_of(self.checkpoint)
        return self._data

    def split_images(self, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        dataset = self.data.split(split)
        count = len(dataset) if limit is None else min(limit, len(dataset))
        images = torch.stack([dataset[i][0] for i in range(count)]).numpy()
        return images.astype(np.float32), dataset.labels[:count].numpy()


def torch_logits(model: nn.Module, images: np.ndarray) -> np.ndarray:
    with TorchRunner(model) as runner:
        return runner.infer_many(images)


def ort_logits(path: Path, images: np.ndarray, fake_quant: bool = False) -> np.ndarray:
    with OrtRunner(path, fake_quant=fake_quant) as runner:
        return runner.infer_many(images)


def _timed(timings: dict[str, float], key: str, started: float) -> None:
    timings[key] = round(time.perf_counter() - started, 3)


def export_fp32(run: ExportRun, model: nn.Module, role: str, timings: dict[str, float],
                onnx_path: Path | None = None) -> dict[str, Any]:
    """ONNX export → checker → parity gate → onnxslim → parity gate again, all before the file is renamed
    to its final path: a graph that fails a gate is never left where bench or the engine build would find it.
    `onnx_path`: default `<role>.onnx` (the QAT-fine-tuned graph goes to `<role>.qat.onnx`)."""
    started = time.perf_counter()
    timing_key = f"{role}_onnx_seconds" if onnx_path is None else f"{role}_qat_onnx_seconds"
    onnx_path = onnx_path or ModelFiles(run.out_dir, role).onnx("fp32")
    val_images, _ = run.split_images("val", PARITY_IMAGES)
    reference = torch_logits(model, val_images)
    tolerance = Tolerance.of(run.config, "fp32")
    record: dict[str, Any] = {"path": str(onnx_path), "simplified": False}

    def gates(tmp: Path) -> None:
        record["parity"] = _fp32_gate(reference, ort_logits(tmp, val_images), tolerance,
                                      f"{onnx_path} (ONNX Runtime)").as_dict()
        if run.config.simplify:
            record.update(_simplify(tmp, reference, val_images, tolerance, display=onnx_path))

    export_onnx(model, torch.from_numpy(val_images[:2]), onnx_path, run.config.opset, validate=gates)
    model_proto = check_onnx(onnx_path)
    record.update(opset=opset_of(model_proto), nodes=len(model_proto.graph.node), sha256=sha256_file(onnx_path),
                  input=[i.name for i in model_proto.graph.input], output=[o.name for o in model_proto.graph.output])
    _timed(timings, timing_key, started)
    return record


def _fp32_gate(reference: np.ndarray, candidate: np.ndarray, tolerance: Tolerance, what: str) -> Parity:
    """PyTorch vs ONNX Runtime in FP32, within the FP32 tolerance on every image."""
    return require(compare(reference, candidate, tolerance), what, TOLERANCE_KEYS["fp32"])


def _simplify(onnx_path: Path, reference: np.ndarray, images: np.ndarray, tolerance: Tolerance,
              display: Path | None = None) -> dict[str, Any]:
    """onnxslim `onnx_path` in place, replacing it only when the slimmed graph passes the checker and parity."""
    import onnxslim

    name = display or onnx_path
    before = len(onnx.load(str(onnx_path)).graph.node)
    slimmed = onnxslim.slim(str(onnx_path))
    with atomic_path(onnx_path) as tmp:
        onnx.save(slimmed, str(tmp))
        check_onnx(tmp, display=name)
        parity = _fp32_gate(reference, ort_logits(tmp, images), tolerance, f"{name} after onnxslim")
    return {"simplified": True, "nodes_before_simplify": before, "parity": parity.as_dict()}


def run_preflight(run: ExportRun, onnx_path: Path) -> dict[str, Any]:
    """Operators against each target's TensorRT ONNX parser; a target that cannot parse it stops here."""
    model = onnx.load(str(onnx_path))
    results = {}
    for version in run.config.trt_versions:
        report = preflight(model, parse_target(version).line)
        results[version] = {"ok": report.ok, "unsupported": report.unsupported,
                            "opset_too_new": report.opset_too_new}
        if not report.ok:
            raise Kd2trtError(report.message(onnx_path))
    return results


def export_fp16(run: ExportRun, fp32_path: Path, timings: dict[str, float]) -> dict[str, Any]:
    started = time.perf_counter()
    fp16_path = run.files.onnx("fp16")
    val_images, _ = run.split_images("val", PARITY_IMAGES)
    reference = ort_logits(fp32_path, val_images)
    tolerance = Tolerance.of(run.config, "fp16")
    checked: list[Parity] = []

    def gate(tmp: Path) -> None:  # before the rename: a failed gate leaves no student.fp16.onnx behind
        parity = compare(reference, ort_logits(tmp, val_images), tolerance)
        checked.append(require(parity, f"{fp16_path} vs FP32", TOLERANCE_KEYS["fp16"],
                               explain=lambda: fp16_sensitivity(fp32_path, val_images, reference, parity)))

    convert_fp16(fp32_path, fp16_path, validate=gate)
    parity = checked[-1]
    _timed(timings, "fp16_seconds", started)
    return {"path": str(fp16_path), "sha256": sha256_file(fp16_path), "parity_vs_fp32": parity.as_dict()}


def fp16_sensitivity(fp32_path: Path, images: np.ndarray, reference: np.ndarray, parity: Parity) -> str:
    """Why an FP16 graph missed its gate: the model's own sensitivity to FP16 rounding, or the conversion.

    The FP32 graph run on the images rounded to FP16 (a perturbation of 2^-11 relative, all FP16 storage
    does to the input) shows how far FP16 rounding alone moves this model's logits. On the digits and zoo
    students the FP16 graph's whole error was 0.8-2.6× that (RegNetX-400MF: 0.13 of the range vs 0.055): the
    model, not the conversion. An FP16 error more than 4× beyond it points at the conversion instead."""
    rounded = ort_logits(fp32_path, images.astype(np.float16).astype(np.float32))
    floor = compare(reference, rounded).max_rel_diff
    if parity.max_rel_diff <= 4 * floor:
        return (f"rounding only the input to FP16 already moves the FP32 graph's logits by {floor:.3g} of the "
                "range: this model is that sensitive to FP16 rounding, the conversion is not at fault — deploy "
                "FP32 (--no-fp16) or loosen the FP16 tolerance")
    return (f"far beyond what rounding the input to FP16 does to the FP32 graph ({floor:.3g} of the range): "
            "an op that loses precision in FP16 — report the model, or deploy FP32 (--no-fp16)")


def export_int8(run: ExportRun, fp32_path: Path, onnx_sha: str, timings: dict[str, float]) -> dict[str, Any]:
    """Calibrate once (or reuse a cache), or search an accuracy budget; write caches for the ≤10.x targets and
    the Q/DQ ONNX."""
    started = time.perf_counter()
    method = run.config.calib_method
    high_precision: list[str] = []
    budget: dict[str, Any] | None = None
    if run.request.calib_cache is not None:
        amax, calib_record, high_precision = _reused_cache(run, onnx_sha)
        recorded = calib_record.get("method")
        method = recorded if recorded in calibration.METHODS else method
        ranges = calibration.ranges_from_amax(amax, method)
        methods = [method]
    else:
        calib_set = calibration_set(run)
        calib_record = {"method": method, "source": calib_set.source, "images": len(calib_set.images),
                        "sha256": calib_set.sha256}
        if len(calib_set.images) < calibration.MIN_RECOMMENDED_IMAGES:
            run.console.print(f"[yellow]warning:[/] calibrating on {len(calib_set.images)} images; "
                              f"{calibration.MIN_RECOMMENDED_IMAGES}+ representative images give stabler ranges")
        methods = list(dict.fromkeys([method, *calibration.METHODS]))
        ranges = None
    if run.config.int8_budget is not None:
        val_images, val_labels = run.split_images("val")

        def ranges_of(candidate: str) -> Any:
            if run.request.calib_cache is not None:
                return ranges
            return calibration.collect_ranges(fp32_path, calib_set, candidate)

        found = search_budget(fp32_path, ranges_of, methods, val_images, val_labels, run.config.int8_budget,
                              progress=lambda line: run.console.print(f"INT8      budget: {line}"))
        method, ranges, high_precision, budget = found.method, found.ranges, found.high_precision, found.record()
        calib_record = {**calib_record, "method": method}
        if not found.met:
            drop = found.fp32_val_top1 - found.int8_val_top1
            run.console.print(f"[yellow]warning:[/] INT8 budget {run.config.int8_budget:g} points not met even "
                              f"with {len(high_precision)} layer(s) in high precision (validation drop "
                              f"{drop:.2f}); see the curve in the export summary"
                              + ("; running QAT next (--qat-epochs)" if run.config.qat_epochs > 0 else
                                 "; --qat-epochs N (export.qat_epochs) fine-tunes the student with "
                                 "distillation-aware QAT as the next step"))
    elif ranges is None:
        ranges = calibration.collect_ranges(fp32_path, calib_set, method)
    _timed(timings, "calibration_seconds", started)
    source_path, source_sha = fp32_path, onnx_sha
    qat: dict[str, Any] | None = None
    if run.config.qat_epochs > 0 and (budget is None or not budget["met"]):
        outcome = _qat(run, fp32_path, calib_set, method, ranges, high_precision, timings)
        ranges, qat = outcome.ranges, outcome.record
        source_path, source_sha = outcome.onnx_path, sha256_file(outcome.onnx_path)
        if budget is not None:
            qat["budget_met"] = qat["val_qat_drop_points"] <= run.config.int8_budget
            budget["met_after_qat"] = qat["budget_met"]
    else:
        if run.config.qat_epochs > 0:
            run.console.print("INT8      budget met by post-training quantisation: QAT not needed, not run")
        run.files.qat_onnx.unlink(missing_ok=True)  # an earlier export's QAT graph no longer matches the caches
    amax = calibration.amax_of(ranges)
    caches = []
    order = calibration.graph_order(onnx.load(str(source_path)), amax)  # the same file for the same inputs
    for version in run.targets:
        if not version.supports_implicit_int8:
            continue  # TensorRT 11 has no calibrator: its INT8 comes from the Q/DQ graph alone
        cache = CalibrationCache.from_amax(amax, version, resolve_algorithm(method), order=order)
        cache_path = run.files.calib_cache(version)
        write_cache(cache, cache_path)
        manifest = CacheManifest(cache=cache_path.name, header=cache.header, trt_version=str(version),
                                 algorithm=cache.algorithm, tensors=len(cache.scales), source_onnx=source_path.name,
                                 source_onnx_sha256=source_sha, calibration=calib_record,
                                 preprocessing=run.checkpoint["preprocessing"], tools=tool_versions(),
                                 high_precision_layers=high_precision,
                                 qat=None if qat is None else _qat_brief(qat))
        write_manifest(sidecar(cache_path), manifest)
        caches.append({"path": str(cache_path), "header": cache.header, "sha256": sha256_file(cache_path)})
    started = time.perf_counter()
    qdq_path = quantize_qdq(source_path, run.files.onnx("int8"), ranges, high_precision)
    _timed(timings, "qdq_seconds", started)
    out = {"qdq_onnx": {"path": str(qdq_path), "sha256": sha256_file(qdq_path)}, "caches": caches,
           "calibration": calib_record, "tensors": len(amax), "high_precision_layers": high_precision,
           "source_onnx": str(source_path)}
    if budget is not None:
        out["budget"] = budget
    if qat is not None:
        out["qat"] = qat
    return out


def _qat_brief(record: dict[str, Any]) -> dict[str, Any]:
    """What the cache manifest keeps of a QAT record (the export summary has all of it)."""
    keys = ("epochs", "lr", "temperature", "best_epoch", "val_top1_before", "val_top1_after", "val_fp32_top1",
            "val_ptq_drop_points", "val_qat_drop_points", "test_ptq_drop_points", "test_qat_drop_points",
            "fp32_onnx", "library")
    return {key: record[key] for key in keys if key in record}


def check_qat_request(run: ExportRun) -> None:
    """Refuse a QAT request that cannot run, before any file is written (one line each, exit 2)."""
    if run.config.qat_epochs == 0:
        return
    if run.request.calib_cache is not None:
        raise Kd2trtError(f"--qat-epochs {run.config.qat_epochs} with --calib-cache {run.request.calib_cache}: QAT "
                          "fine-tunes on the training data and the teacher, a reused cache has neither; drop one "
                          "of the two")
    if run.teacher is None:
        raise Kd2trtError(f"--qat-epochs: QAT distils from the teacher, and there is no teacher.pt beside "
                          f"{run.request.checkpoint}; copy the run's teacher.pt there, or set --qat-epochs 0")
    require_modelopt()


def _qat(run: ExportRun, fp32_path: Path, calib_set: calibration.CalibrationSet, method: str, ranges: Any,
         high_precision: list[str], timings: dict[str, float]) -> QatOutcome:
    """Distillation-aware QAT from the PTQ `ranges` (kd2trt.onnx.qat); needs the teacher and the data."""
    check_qat_request(run)
    assert run.teacher is not None
    started = time.perf_counter()
    student = model_from_checkpoint(run.checkpoint, run.request.checkpoint)
    inputs = QatInputs(student, run.teacher, run.data.train, run.data.val, run.split_images("val"),
                       run.split_images("test"), calib_set, method)
    settings = QatSettings(run.config.qat_epochs, run.config.qat_lr, run.config.qat_temperature,
                           seed=run.config.calib_seed)

    def export_plain(model: nn.Module) -> Path:
        record = export_fp32(run, model, run.role, timings, onnx_path=run.files.qat_onnx)
        return Path(record["path"])

    outcome = run_qat(inputs, fp32_path, ranges, high_precision, settings, export_plain,
                      progress=lambda line: run.console.print(f"INT8      QAT {line}"))
    _timed(timings, "qat_seconds", started)
    r = outcome.record
    run.console.print(f"INT8      QAT {r['epochs']} epoch(s), best {r['best_epoch']}: drop vs FP32 validation "
                      f"{r['val_ptq_drop_points']:+.2f} → {r['val_qat_drop_points']:+.2f}, test "
                      f"{r['test_ptq_drop_points']:+.2f} → {r['test_qat_drop_points']:+.2f} points "
                      f"({r['seconds']:.0f} s); {run.files.qat_onnx.name}")
    return outcome


def calibration_set(run: ExportRun) -> calibration.CalibrationSet:
    return calibration_set_for(run.checkpoint, run.config, run.request.calib_data, run.data)


def calibration_set_for(checkpoint: dict[str, Any], config: ExportConfig, calib_data: Path | None = None,
                        data: DataSplits | None = None) -> calibration.CalibrationSet:
    """The calibration images of a checkpoint: `calib_data` if given, else the stratified train-split sample
    the export section asks for -- the same set for `kd2trt export` and for live calibration in the engines
    stage, preprocessed as in training."""
    prep = preprocessing_of(checkpoint)
    if calib_data is not None:
        return calibration.calibration_set_from_file(calib_data, (prep.channels, prep.image_size, prep.image_size))
    data = data or data_of(checkpoint)
    return calibration.calibration_set_from_split(data.train, config.calib_images, config.calib_seed,
                                                  f"{checkpoint['data']['spec']} train split")


def _reused_cache(run: ExportRun, onnx_sha: str) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """A cache written earlier, checked against this ONNX unless --force; its calibration record carried on.

    Its TensorRT version need not be a target: the ranges do not depend on the TensorRT release, and
    `export_int8` writes them under each target's own header, which is all TensorRT compares.
    """
    path = run.request.calib_cache
    assert path is not None
    cache = read_cache(path)
    check_cache_tensors(cache, run.files.onnx("fp32"), path)
    manifest_file = sidecar(path)
    manifest: CacheManifest | None = None
    if manifest_file.exists():
        try:
            manifest = read_cache_manifest(manifest_file)
        except Kd2trtError as exc:
            if not run.request.force:
                raise
            run.console.print(f"[yellow]warning:[/] {escape(str(exc))} — used anyway (--force)", highlight=False)
    elif not run.request.force:
        raise Kd2trtError(f"{path}: no manifest ({manifest_file.name}) beside it, so it cannot be checked "
                          "against this ONNX; copy the .json written with it, or pass --force")
    if manifest is not None and not run.request.force:
        calibrated_for = manifest.source_onnx_sha256
        if calibrated_for != onnx_sha:
            raise Kd2trtError(f"{path}: was calibrated for another ONNX (sha256 {calibrated_for[:12]}…, this one "
                              f"{onnx_sha[:12]}…); its scales would be wrong — recalibrate with "
                              "`kd2trt export --int8` on the host, or pass --force")
    if manifest is not None:
        record = {**manifest.calibration, "reused_from": str(path)}
    else:  # --force without a manifest: where the ranges came from is unknown
        record = {"method": None, "source": f"unknown (reused cache {path} has no manifest)", "images": None,
                  "reused_from": str(path)}
    return cache.amaxes(), record, list(manifest.high_precision_layers) if manifest is not None else []


def int8_preview(run: ExportRun, fp32: Path, fp16: Path | None, qdq: Path | None, model: nn.Module,
                 qat: dict[str, Any] | None = None) -> dict[str, Any]:
    """Test-split top-1 of every form: what INT8 costs before any GPU is involved."""
    images, labels = run.split_images("test")
    rows: dict[str, float] = {}
    if run.teacher is not None:
        rows["teacher (PyTorch)"] = top1(torch_logits(run.teacher, images), labels)
    rows[f"{run.role} (PyTorch)"] = top1(torch_logits(model, images), labels)
    fp32_logits = ort_logits(fp32, images)
    rows[f"{run.role} FP32 (ONNX Runtime)"] = top1(fp32_logits, labels)
    out: dict[str, Any] = {"test_images": len(labels), "top1": rows}
    if fp16 is not None:
        rows[f"{run.role} FP16 (ONNX Runtime)"] = top1(ort_logits(fp16, images), labels)
    if qdq is not None:
        qdq_logits = ort_logits(qdq, images, fake_quant=True)
        rows[f"{run.role} INT8 Q/DQ (ONNX Runtime, fake-quant)"] = top1(qdq_logits, labels)
        out["int8_vs_fp32"] = compare(fp32_logits, qdq_logits).as_dict()
        out["int8_drop_points"] = top1(fp32_logits, labels) - top1(qdq_logits, labels)
    if qat is not None:  # the INT8 row above is the QAT graph; the PTQ graph it started from, for comparison
        rows[f"{run.role} QAT FP32 (ONNX Runtime)"] = top1(ort_logits(Path(qat["fp32_onnx"]), images), labels)
        rows[f"{run.role} Q/DQ before QAT (ONNX Runtime, fake-quant)"] = qat["test_ptq_int8_top1"]
        out["qat"] = {"epochs": qat["epochs"], "lr": qat["lr"], "best_epoch": qat["best_epoch"],
                      "ptq_drop_points": qat["test_ptq_drop_points"], "qat_drop_points": qat["test_qat_drop_points"],
                      "val_ptq_drop_points": qat["val_ptq_drop_points"],
                      "val_qat_drop_points": qat["val_qat_drop_points"]}
    return out


LARGE_INT8_DROP_POINTS = 1.0


def int8_drop_advice(summary: dict[str, Any], config: ExportConfig) -> str | None:
    """A large INT8 drop without a budget names the flag that fixes it: the calibration method alone moved the
    drop from 17.7 to 0.0 points on the chest-X-ray recipe (entropy clips sparse bright strokes; bench/int8.py)."""
    drop = summary["preview"].get("int8_drop_points")
    if drop is None or drop <= LARGE_INT8_DROP_POINTS or config.int8_budget is not None:
        return None
    method = summary["int8"]["calibration"]["method"]
    return (f"INT8 Q/DQ loses {drop:.2f} top-1 points vs FP32 on the test split with {method} calibration; "
            "--int8-budget 0.5 (export.int8_budget) chooses the calibration method and any layers to keep in "
            "higher precision on the validation split")


def _parity_text(parity: dict[str, Any]) -> str:
    """A recorded parity in a few words: the absolute and range-relative error, and the share of its tolerance."""
    return (f"max |Δ| {parity['max_abs_diff']:.2e} ({parity['max_rel_diff']:.1e} of the logit range, "
            f"{parity['tolerance_used']:.2f}× tolerance)")


def run_export(request: ExportRequest, config: ExportConfig, console: Console | None = None) -> dict[str, Any]:
    """All host-side export steps for one checkpoint; writes `<role>.export.json` and returns it."""
    console = console or Console()
    started = time.perf_counter()
    run = ExportRun(request, config, console)
    check_qat_request(run)
    model = model_from_checkpoint(run.checkpoint, request.checkpoint)
    timings: dict[str, float] = {}
    fp32 = export_fp32(run, model, run.role, timings)
    fp32_path = Path(fp32["path"])
    summary: dict[str, Any] = {
        "checkpoint": str(request.checkpoint), "checkpoint_sha256": sha256_file(request.checkpoint),
        "role": run.role, "onnx": fp32, "preflight": run_preflight(run, fp32_path),
        "preprocessing": run.checkpoint["preprocessing"], "classes": run.checkpoint["classes"],
    }
    console.print(f"ONNX      {fp32_path}  opset {fp32['opset']}, {fp32['nodes']} nodes, parity "
                  f"{_parity_text(fp32['parity'])}, top-1 agreement {fp32['parity']['top1_agreement']:.1f}%")
    if config.teacher and run.teacher is not None:
        summary["teacher_onnx"] = export_fp32(run, run.teacher, "teacher", timings)
    fp16_path = qdq_path = None
    if config.fp16:
        summary["fp16"] = export_fp16(run, fp32_path, timings)
        fp16_path = Path(summary["fp16"]["path"])
        console.print(f"FP16      {fp16_path}  parity vs FP32 {_parity_text(summary['fp16']['parity_vs_fp32'])}")
    if config.int8:
        summary["int8"] = export_int8(run, fp32_path, fp32["sha256"], timings)
        qdq_path = Path(summary["int8"]["qdq_onnx"]["path"])
        for cache in summary["int8"]["caches"]:
            console.print(f"INT8      {cache['path']}  ({cache['header']}, {summary['int8']['tensors']} tensors)")
        calibrated = summary["int8"]["calibration"]
        reused = f", reused from {calibrated['reused_from']}" if "reused_from" in calibrated else ""
        console.print(f"INT8      {qdq_path}  (Q/DQ, {calibrated['method']} ranges from {calibrated['source']}"
                      f"{reused})")
        if summary["int8"]["high_precision_layers"]:
            console.print(f"INT8      kept in high precision: {', '.join(summary['int8']['high_precision_layers'])}")
    qat = summary.get("int8", {}).get("qat")
    summary["preview"] = int8_preview(run, fp32_path, fp16_path, qdq_path, model, qat)
    advice = int8_drop_advice(summary, config)
    if advice:
        console.print(f"[yellow]warning:[/] {advice}")
        summary["warnings"] = [advice]
    summary["timings"] = {**timings, "total_seconds": round(time.perf_counter() - started, 3)}
    summary["tools"] = tool_versions()
    atomic_write_json(run.files.export_summary, summary)
    return summary


def export_stage(config: RunConfig, layout: RunLayout, console: Console, resume: bool = True) -> StageResult:
    """The export stage of `kd2trt run`: the student checkpoint's ONNX graphs, caches and preview."""
    summary = run_export(ExportRequest(layout.checkpoint("student")), config.export, console)
    outputs = [Path(summary["onnx"]["path"]), layout.model("student").export_summary]
    outputs += [Path(summary[key]["path"]) for key in ("teacher_onnx", "fp16") if key in summary]
    if "int8" in summary:
        outputs += [Path(summary["int8"]["qdq_onnx"]["path"])] + [Path(c["path"]) for c in summary["int8"]["caches"]]
        if "qat" in summary["int8"]:
            outputs.append(Path(summary["int8"]["qat"]["fp32_onnx"]))
    text = ", ".join(f"{k} {v:.2f}%" for k, v in summary["preview"]["top1"].items() if "ONNX" in k)
    return StageResult(outputs, text, report=summary)
