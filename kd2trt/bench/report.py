"""The bench report: a Markdown table people read, JSON with every figure, a latency-vs-accuracy plot,
and the gates a CI/CD pipeline uses (exit code 1 naming the failing row and figure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd2trt.artifacts import atomic_path, atomic_write_json, atomic_write_text
from kd2trt.config import BenchConfig, ExportConfig
from kd2trt.layout import RunLayout
from kd2trt.onnx.parity import TOLERANCE_KEYS, Parity, Tolerance, describe
from kd2trt.results import GateResult


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


#: the per-class recall table of an imbalanced test split lists at most this many classes (JSON has them all)
RECALL_TABLE_MAX_CLASSES = 10


def _imbalance_note(result: dict[str, Any]) -> str:
    """The test split's class counts, when it is imbalanced: what balanced accuracy is shown for."""
    counts = ", ".join(f"{name} {n}" for name, n in result["class_counts"].items())
    return f" Imbalanced classes ({counts}): balanced accuracy = mean per-class recall."


def _recall_table(rows: list[dict[str, Any]], classes: list[str]) -> list[str]:
    """Each row's recall per class (%), for an imbalanced test split with few enough classes."""
    if len(classes) > RECALL_TABLE_MAX_CLASSES:
        return []
    lines = ["", "Per-class recall (test):", "",
             "| model | backend | precision | " + " | ".join(classes) + " |",
             "|---|---|---|" + "---:|" * len(classes)]
    for row in rows:
        recall = row["accuracy"]["per_class_recall"]
        cells = " | ".join("—" if recall.get(c) is None else f"{recall[c]:.1f}%" for c in classes)
        lines.append(f"| {row['model']} | {row['backend']} | {row['precision']} | {cells} |")
    return lines


def _int8_plan_lines(budget: dict[str, Any] | None, qat: dict[str, Any] | None) -> list[str]:
    """The INT8 accuracy budget's curve (layers kept in higher precision → validation top-1) and QAT's outcome."""
    lines: list[str] = []
    if budget:
        fp32 = budget["fp32_val_top1"]
        methods = ", ".join(f"{m} {v:.2f} %" for m, v in budget["methods_val_top1"].items())
        lines += ["", f"INT8 accuracy budget ({budget['budget_points']:g} points on the validation split, FP32 "
                  f"{fp32:.2f} %): calibration {methods}; chosen **{budget['method']}**, "
                  + ("within budget" if budget["met"] else "**not within budget**")
                  + f" with {len(budget['high_precision_layers'])} layer(s) kept in higher precision.", "",
                  "| layers kept in higher precision | layer added | val top-1 | drop vs FP32 (points) |",
                  "|---:|---|---:|---:|"]
        lines += [f"| {point['layers']} | {('`' + point['added'] + '`') if point.get('added') else '—'} | "
                  f"{point['val_top1']:.2f} % | {fp32 - point['val_top1']:+.2f} |" for point in budget["curve"]]
    if qat:
        lines += ["", f"QAT ({qat['epochs']} epoch(s), {qat['library']}, from {qat['method']} ranges): INT8 drop vs "
                  f"FP32 on validation {qat['val_ptq_drop_points']:+.2f} → {qat['val_qat_drop_points']:+.2f} points, "
                  f"on test {qat['test_ptq_drop_points']:+.2f} → {qat['test_qat_drop_points']:+.2f} "
                  f"(best epoch {qat['best_epoch']})."]
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The report people read. Balanced accuracy and per-class recall appear only for an imbalanced test split
    (`test_imbalanced`), where top-1 alone flatters a model that favours the majority class; report.json always
    has them."""
    rows = result["rows"]
    imbalanced = bool(result.get("test_imbalanced"))
    b0, b_max = result["batch_sizes"][0], result["batch_sizes"][-1]
    env = result["environment"]
    # GPU compute (CUDA events) gets a column only when some row has it: CPU-only reports stay narrow
    gpu = any((row["latency"].get(str(b0)) or {}).get("gpu_compute") for row in rows)
    lines = [
        f"# kd2trt bench — {result['run']}",
        "",
        f"Test split: {result['test_images']} images of `{result['data_spec']}`, {result['num_classes']} classes. "
        f"Machine: {env['machine']}. Latency: {result['protocol']}." + (_imbalance_note(result) if imbalanced else ""),
        "",
        "| model | backend | precision | device | params | file | top-1 | " + ("bal. acc | " if imbalanced else "")
        + f"Δ vs teacher | agreement | p50 ms (b={b0}) | p99 ms (b={b0}) | "
        + (f"GPU compute p50 ms (b={b0}) | " if gpu else "") + f"img/s (b={b_max}) | speed-up |",
        "|---|---|---|---|---:|---:|---:|" + ("---:|" if imbalanced else "") + "---:|---:|---:|---:|"
        + ("---:|" if gpu else "") + "---:|---:|",
    ]
    for row in rows:
        # a batch size outside a TensorRT engine's profile is not measured for that row (its notes say so)
        first, last = row["latency"].get(str(b0)), row["latency"].get(str(b_max))
        params = f"{row['params']:,}" if row.get("params") else "—"
        compute = first.get("gpu_compute") if first else None
        gpu_cell = (f"{compute['median_ms']:.3f} | " if compute else "— | ") if gpu else ""
        host = (f"{first['host']['median_ms']:.3f} | {first['host']['p99_ms']:.3f}" if first else "— | —")
        throughput = f"{last['throughput_ips']:,.0f}" if last else "—"
        speedup = f"{row['speedup_vs_teacher']:.1f}×" if row["speedup_vs_teacher"] is not None else "—"
        balanced = f"{row['accuracy']['balanced_accuracy']:.2f}% | " if imbalanced else ""
        lines.append(
            f"| {row['model']} | {row['backend']} | {row['precision']} | {row['device']} | {params} | "
            f"{_size(row.get('file_bytes'))} | {row['accuracy']['top1']:.2f}% | {balanced}"
            f"{row['delta_top1_vs_teacher']:+.2f} | "
            f"{row['accuracy']['agreement_with_teacher']:.1f}% | {host} | {gpu_cell}{throughput} | {speedup} |")
    if imbalanced:
        lines += _recall_table(rows, result["classes"])
    powered = [(row, b, lat["power"]) for row in rows for b, lat in row["latency"].items()
               if "power" in lat and "mean_w" in lat["power"]]
    if powered:
        lines += ["", "| model | backend | precision | batch | mean power (W) | energy per image (mJ) | rail |",
                  "|---|---|---|---:|---:|---:|---|"]
        lines += [f"| {row['model']} | {row['backend']} | {row['precision']} | {b} | {power['mean_w']:.2f} | "
                  f"{power['energy_per_image_mj']:.3f} | {power['rail']} |" for row, b, power in powered]
    lines += _int8_plan_lines(result.get("int8_budget"), result.get("int8_qat"))
    notes = sorted({note for row in rows for note in row.get("notes", [])})
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    if result.get("skipped"):
        lines += ["", "Not measured here:", *[f"- {item}" for item in result["skipped"]]]
    if result.get("gates"):
        lines += ["", "Gates:", *[f"- {'PASS' if g['passed'] else 'FAIL'}: {g['message']}" for g in result["gates"]]]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path:
    """p50 latency at the first batch size (log scale) against top-1, one labelled point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b0 = str(result["batch_sizes"][0])
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    markers = {"pytorch": "o", "onnxruntime": "s", "tensorrt": "^"}
    for row in result["rows"]:
        if b0 not in row["latency"]:
            continue  # not measured at this batch size (outside a TensorRT profile)
        x, y = row["latency"][b0]["host"]["median_ms"], row["accuracy"]["top1"]
        ax.scatter(x, y, marker=markers.get(row["backend"], "o"), s=60, zorder=3, alpha=0.85,
                   label=f"{row['model']} {row['precision']} ({row['backend']}, {row['device']})")
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 host latency at batch {b0} (ms, log scale)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"kd2trt bench — {result['run']}: latency vs accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


@dataclass(frozen=True)
class ParityTolerances:
    """How far an exported form may drift from the FP32 student: the export's own gates, applied to the test
    split and to every backend (ONNX Runtime, TensorRT), as Polygraphy compares runners."""

    fp32: Tolerance
    fp16: Tolerance
    int8_min_agreement: float

    @classmethod
    def of(cls, export: ExportConfig, bench: BenchConfig) -> ParityTolerances:
        return cls(Tolerance.of(export, "fp32"), Tolerance.of(export, "fp16"), bench.int8_min_agreement)

    def logits(self, precision: str) -> Tolerance | None:
        """The logit tolerance of a form of this precision; None for INT8 (gated on top-1 agreement)."""
        return {"fp32": self.fp32, "fp16": self.fp16}.get(precision)


def _parity_gate(row: dict[str, Any], label: str, tolerances: ParityTolerances) -> dict[str, Any] | None:
    """FP32/FP16: |Δlogit| vs the FP32 student within the export's tolerance (kd2trt.onnx.parity's rule, as
    compared when the row was measured); INT8: top-1 agreement with it. None for the reference itself."""
    accuracy = row["accuracy"]
    if "parity_vs_fp32_student" not in accuracy or (row["backend"], row["precision"]) == ("pytorch", "fp32"):
        return None
    parity = Parity(**accuracy["parity_vs_fp32_student"])
    if row["precision"] == "int8":
        value, limit = parity.top1_agreement, tolerances.int8_min_agreement
        return {"gate": "parity", "row": label, "value": value, "limit": limit, "passed": bool(value >= limit),
                "message": f"{label}: agreement with the FP32 student {value:.2f}% (required ≥ {limit:g}, "
                           "bench.int8_min_agreement)"}
    tolerance = tolerances.logits(row["precision"])
    if tolerance is None or (parity.atol, parity.rtol) != (tolerance.atol, tolerance.rtol):
        raise ValueError(f"{label}: parity was compared with another tolerance than the gate's")
    # FP32/FP16 rows: the logits decide, as in the export (see kd2trt.onnx.parity.require); INT8 rows: top-1
    return {"gate": "parity", "row": label, "value": parity.tolerance_used, "limit": 1.0,
            "passed": parity.within_tolerance,
            "message": f"{label}: vs the FP32 student {describe(parity)} ({TOLERANCE_KEYS[row['precision']]})"}


def evaluate_gates(result: dict[str, Any], config: BenchConfig, tolerances: ParityTolerances | None = None
                   ) -> list[dict[str, Any]]:
    """Each configured gate checked on every student row (the deployable forms); with `tolerances` (and
    `config.parity`), the parity of each exported form with the FP32 student too."""
    gates = []
    for row in result["rows"]:
        if row["model"] != "student":
            continue
        label = f"{row['model']} {row['precision']} ({row['backend']}, {row['device']})"
        parity = _parity_gate(row, label, tolerances) if tolerances is not None and config.parity else None
        if parity is not None:
            gates.append(parity)
        checks = [
            ("max_top1_drop", -row["delta_top1_vs_teacher"], config.max_top1_drop,
             lambda value, limit: value <= limit, "top-1 drop vs teacher {value:.2f} points", "≤"),
            ("min_agreement", row["accuracy"]["agreement_with_teacher"], config.min_agreement,
             lambda value, limit: value >= limit, "agreement with teacher {value:.2f}%", "≥"),
            ("min_speedup", row["speedup_vs_teacher"], config.min_speedup,
             lambda value, limit: value >= limit, "speed-up vs teacher {value:.2f}×", "≥"),
        ]
        for name, value, limit, passes, text, sign in checks:
            if limit is None:
                continue
            flag = "--" + name.replace("_", "-")
            if value is None:  # speed-up of a row not measured at the first batch size: cannot be shown to pass
                b0 = result["batch_sizes"][0]
                gates.append({"gate": name, "row": label, "value": None, "limit": limit, "passed": False,
                              "message": f"{label}: {text.split(' {')[0]} not measured, batch {b0} is outside its "
                                         "engine's batch range "
                                         f"(required {sign} {limit:g}, {flag}); put a batch size the engine takes "
                                         "first in bench.batch_sizes, or rebuild it with build.min_batch/max_batch"})
                continue
            passed = bool(passes(value, limit))
            gates.append({"gate": name, "row": label, "value": value, "limit": limit, "passed": passed,
                          "message": f"{label}: {text.format(value=value)} (required {sign} {limit:g}, {flag})"})
    # the stage manifest records them as GateResult; an extra key there makes every later `kd2trt run` rerun bench
    return [GateResult.model_validate(gate).model_dump() for gate in gates]


def write_report(result: dict[str, Any], layout: RunLayout, out_dir: Path | None = None) -> dict[str, Path]:
    """report.json, report.md and report.png in `out_dir` (default: the run directory)."""
    paths = {kind: layout.report(kind, out_dir) for kind in ("json", "markdown", "plot")}
    atomic_write_json(paths["json"], result)
    atomic_write_text(paths["markdown"], markdown(result))
    plot(result, paths["plot"])
    return paths
