"""Zoo benchmark: one recipe, a ResNet-18 teacher and ten student architectures on a folder-per-class data set.

The data set is written here, reproducibly, from scikit-learn's digits (`kd2trt.data.write_digits_folder`: 64×64
RGB PNGs in ROOT/{train,val,test}/digit_D/, the chest-X-ray layout), so the benchmark needs no download. Per
student: parameters; teacher / KD / scratch test top-1 (mean ± sd over seeds) under the label-scarce protocol
(10 % labels) and with full labels; the paired KD gain; FP16 parity and the INT8 Q/DQ preview drop (kd2trt's
own export, `kd2trt.onnx.stage.run_export`, on the seed-0 KD student); seconds per epoch; and any warning the
training loop raised. Every student gets the same recipe knobs (`--lr`, `--epochs`, …): nothing per
architecture. Writes bench/results/zoo.json and prints a Markdown table for the README.

    .venv/bin/python bench/zoo.py --jobs 2                          # the whole zoo, 3 seeds, 32 px (2 CPU cores)
    .venv/bin/python bench/zoo.py --device cuda --image-size 64 --epochs 15 --teacher-epochs 15
    .venv/bin/python bench/zoo.py --seeds 1 --students cnn,mobilenet_v3_small --per-class 60
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, NoReturn

import torch
from rich.console import Console

from kd2trt import __version__
from kd2trt.artifacts import atomic_write_json
from kd2trt.config import ExportConfig, load_config
from kd2trt.data import write_digits_folder
from kd2trt.distill.train import DistillRun, run_distill
from kd2trt.errors import Kd2trtError
from kd2trt.onnx.stage import ExportRequest, run_export

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
#: every student's AdamW rate and gradient-norm clip. Label-scarce zoo, 3 seeds, KD test top-1, 3e-3 unclipped
#: (zoo v5) → 1e-2 clipped at 1.0 (v6): ShuffleNetV2 84.1 → 93.5, RegNetX 78.5 → 96.9, timm MobileNetV3-0.5
#: 85.0 → 95.9, MobileNetV2 91.1 → 93.4; but MobileNetV3-Large 95.5 → 88.0 and EfficientNet-B0 78.9 → 70.8.
#: The KD term is scaled by T² (16 at T 4); a clip of T (4.0), chosen on validation
#: (bench/results/zoo_clip_sweep.json, KD stage of 6 students × 3 seeds): EfficientNet-B0 val 68.5 → 77.3,
#: MobileNetV3-Large 88.1 → 94.1, SqueezeNet 69.0 → 73.1, MobileNetV2 91.5 → 94.2, the others within a point;
#: the zoo at 4.0 (v7): 8 of 10 students ≥ 90 % label-scarce. It weakens some scratch runs (full labels:
#: MobileNetV2 92.2 → 81.7), so bench/zoo_baselines.py measures KD against the better scratch recipe too.
#: SqueezeNet (no normalisation layer) trains near 1e-3: its stalled starts are restarted at a third of the rate
#: (train.stall_restarts).
LR, GRAD_CLIP = 1e-2, 4.0
STUDENTS = ["mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_1",
            "efficientnet_b0", "resnet18", "regnet_x_400mf", "cnn", "timm:mobilenetv3_small_050"]


def mean_sd(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def recipe(args: argparse.Namespace, data_root: Path, seed: int) -> dict[str, Any]:
    """The overrides every run shares: the zoo data, a ResNet-18 teacher, one student recipe."""
    train = {"optimizer": "adamw", "lr": args.lr, "weight_decay": 5e-4, "schedule": "cosine",
             "warmup": args.warmup, "epochs": args.epochs, "grad_clip": args.grad_clip or None, "ema": args.ema}
    return {
        "name": "zoo", "seed": seed, "device": args.device,
        "data.spec": f"imagefolder:{data_root}", "data.image_size": args.image_size, "data.channels": 3,
        "data.batch_size": args.batch_size, "data.augment": False,
        "teacher.arch": "resnet18", "teacher.channels": None, "teacher.feature_tap": None,
        "teacher.train": {**train, "lr": args.teacher_lr, "epochs": args.teacher_epochs, "grad_clip": None,
                          "ema": None},
        "student.feature_tap": None, "student.train": train,
        "distill.temperature": 4.0, "distill.alpha": 0.9, "distill.beta": 0.0,
    }


def student_overrides(arch: str) -> dict[str, Any]:
    if arch == "cnn":
        return {"student.arch": "cnn", "student.channels": [16, 32, 64, 128], "student.blocks": 2}
    return {"student.arch": arch, "student.channels": None}


def export_figures(checkpoint: Path, out_dir: Path) -> dict[str, Any]:
    """FP16 parity and the INT8 Q/DQ preview drop of one checkpoint, from kd2trt's export library."""
    config = ExportConfig(teacher=False, calib_images=256, trt_versions=["10.3"])
    try:
        summary = run_export(ExportRequest(checkpoint, out_dir=out_dir, force=True), config, QUIET)
    except Kd2trtError as exc:
        return {"error": str(exc)}
    return figures_of_export(summary)


def figures_of_export(summary: dict[str, Any]) -> dict[str, Any]:
    """The zoo's export columns from an export summary (`<model>.export.json`)."""
    preview = summary["preview"]
    fp16 = summary["fp16"]["parity_vs_fp32"]
    return {"fp16_max_abs_diff": fp16["max_abs_diff"], "fp16_max_rel_diff": fp16.get("max_rel_diff"),
            "fp16_tolerance_used": fp16.get("tolerance_used"), "fp16_top1_agreement": fp16["top1_agreement"],
            "int8_drop_points": preview.get("int8_drop_points"),
            "int8_top1_agreement": preview.get("int8_vs_fp32", {}).get("top1_agreement"),
            "onnx_nodes": summary["onnx"]["nodes"]}


class InlineExecutor(Executor):
    """`--jobs 1`: every run in this process, in submission order (tracebacks and timings as before)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))  # a failure stops the benchmark at once, as before
        return future


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def make_pool(jobs: int, threads: int | None) -> Executor:
    """Runs in `jobs` processes of `threads` torch threads each.

    Why: at 32 px these students are too small for one process to keep two cores busy — on the 2-core CI
    machine two 1-thread processes did 1.47× the training steps of one 2-thread process (five zoo students,
    batch 32: 1.9× for ShuffleNetV2, 1.3× for ResNet-18). Each run is a function of its config and seed only,
    so at the same thread count the figures do not depend on `jobs` (tests/test_zoo_bench.py). Another thread
    count sums in another order: a few float roundings per step, which after training moved most students by
    a point or two and SqueezeNet's stall restarts by up to 17 (README); per-epoch seconds are a shared
    machine's.
    """
    if jobs == 1:
        set_threads(threads)
        return InlineExecutor()
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=set_threads, initargs=(threads_per_job(jobs, threads),))


def threads_per_job(jobs: int, threads: int | None) -> int:
    if threads:
        return threads
    return max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else torch.get_num_threads()


def train_teacher(overrides: dict[str, Any], run_dir: Path) -> tuple[Path, float, float]:
    """One seed's ResNet-18 teacher (a finished teacher of this recipe is reused)."""
    run = DistillRun(load_config(None, overrides), run_dir, "matching", QUIET)
    run_dir.mkdir(parents=True, exist_ok=True)
    _, report = run.teacher()
    return run.layout.checkpoint("teacher"), report.test_top1, report.as_dict()["train_seconds_per_epoch"]


def train_student(overrides: dict[str, Any], run_dir: Path,
                  with_export: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One KD student and its scratch baseline; with `with_export`, the export columns of the KD student."""
    summary = run_distill(load_config(None, overrides), run_dir, console=QUIET)
    exported = export_figures(run_dir / "student.pt", run_dir / "export") if with_export else None
    return summary, exported


def fail(message: str) -> NoReturn:
    """Bad input to a zoo script: one line on stderr and exit 2 (1 is for a failed gate)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_run_summary(run_dir: Path) -> dict[str, Any]:
    """A zoo run's distill.json; empty when the run did not finish, a one-line error when it cannot be read."""
    summary_json = run_dir / "distill.json"
    try:
        return json.loads(summary_json.read_text()) if summary_json.is_file() else {}
    except ValueError as exc:
        fail(f"{run_dir}: unreadable run record ({exc!r}); delete the folder to train it again")


def collected_run(run_dir: Path, with_export: bool) -> Future[tuple[dict[str, Any], dict[str, Any] | None]]:
    """`--collect`: a finished run's summary (empty when it did not finish) and its export columns."""
    future: Future[tuple[dict[str, Any], dict[str, Any] | None]] = Future()
    summary = read_run_summary(run_dir)
    exported_json = run_dir / "export" / "student.export.json"
    try:
        exported = figures_of_export(json.loads(exported_json.read_text())) \
            if with_export and exported_json.is_file() else None
    except (ValueError, KeyError) as exc:
        fail(f"{run_dir}: unreadable run record ({exc!r}); delete the folder to train it again")
    future.set_result((summary, exported))
    return future


def fp16_cell(exp: dict[str, Any]) -> str:
    """max |Δlogit| of the FP16 graph and the share of export's FP16 tolerance it used (> 1: refused)."""
    if "error" in exp:
        return "refused (zoo.json: error)"
    if "fp16_max_abs_diff" not in exp:
        return "—"
    used = exp.get("fp16_tolerance_used")
    return f"{exp['fp16_max_abs_diff']:.1e}" + (f" ({used:.2f})" if used is not None else "")


def markdown(result: dict[str, Any]) -> str:
    protocols = result["protocols"]
    head = ["student", "params"]
    for p in protocols:
        tag = f"{round(100 * float(p))} % labels"
        head += [f"KD ({tag})", f"scratch ({tag})", f"KD gain ({tag})"]
    head += ["FP16 Δ (share of tolerance)", "INT8 drop (pts)", "s/epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arch, row in result["students"].items():
        cells = [f"`{arch}`", f"{row['params'] / 1e6:.2f} M"]
        for p in protocols:
            fig = row["protocols"].get(p)
            if fig is None:
                cells += ["—", "—", "—"]
                continue
            runs = len(fig["kd"]["values"])
            seeds = f" (n={runs})" if runs != result["seeds"] else ""
            cells += [f"{fig['kd']['mean']:.1f} ± {fig['kd']['sd']:.1f}{seeds}",
                      f"{fig['scratch']['mean']:.1f} ± {fig['scratch']['sd']:.1f}",
                      f"{fig['kd_gain']['mean']:+.1f} ± {fig['kd_gain']['sd']:.1f}"]
        exp = row.get("export", {})
        cells += [fp16_cell(exp),
                  f"{exp['int8_drop_points']:+.1f}" if exp.get("int8_drop_points") is not None else "—",
                  f"{row['seconds_per_epoch']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    teacher = result["teacher_test_top1"]
    lines.append(f"\nTeacher ResNet-18: {teacher['mean']:.1f} ± {teacher['sd']:.1f} % test top-1; "
                 f"{result['image_size']} px, {result['epochs']} student epochs, {result['seeds']} seed(s), "
                 f"{result['train_images']} training images, {result['machine']['device']}.")
    return "\n".join(lines)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The zoo's options; their defaults are the zoo's recipe (bench/zoo_sweep.py starts from them too)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", default=",".join(STUDENTS), help="comma-separated model names")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32, help="the PNGs are 64 px; resized to this")
    parser.add_argument("--per-class", type=int, default=None, help="cap images per class (all ~180 by default)")
    parser.add_argument("--epochs", type=int, default=6, help="student epochs (KD and scratch)")
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=LR, help="student learning rate (AdamW), every student")
    parser.add_argument("--grad-clip", type=non_negative_float, default=GRAD_CLIP,
                        help="students' gradient-norm clip (train.grad_clip); 0 turns it off")
    parser.add_argument("--teacher-lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=float, default=0.1, help="share of the steps with a linear warm-up")
    parser.add_argument("--ema", type=float, default=None,
                        help="students' weight average over this share of the steps (train.ema); default off")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--protocols", default="0.1,1.0", help="labeled fractions for the student")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="runs at once, each in its own process (CPU: 2 on 2 cores trains ~1.5x faster)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads per run (default: cores / jobs; torch's own with --jobs 1)")
    parser.add_argument("--no-export", action="store_true", help="skip the FP16 / INT8 export figures")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-zoo"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/zoo.json"))
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: tabulate the runs already finished under --work (seeds missing there "
                             "are left out and counted), e.g. after an interrupted benchmark")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    console = Console()
    students = [s.strip() for s in args.students.split(",") if s.strip()]
    protocols = [str(float(p)) for p in args.protocols.split(",")]
    started = time.perf_counter()

    data_root = args.work / f"data-{args.per_class or 'all'}"
    if not (data_root / "test").is_dir():
        per_class = [args.per_class] * 10 if args.per_class else None
        write_digits_folder(data_root, image_size=64, channels=3, per_class=per_class, seed=0)

    pool = make_pool(args.jobs, args.threads)
    teachers: dict[int, tuple[Path, float, float]] = {}
    runs: dict[tuple[str, str, int], Future[tuple[dict[str, Any], dict[str, Any] | None]]] = {}

    def queue_students(seed: int) -> None:
        for fraction in protocols:
            for arch in students:
                run_dir = args.work / f"seed{seed}" / arch.replace(":", "_") / f"labels{fraction}"
                with_export = not args.no_export and seed == 0 and fraction == protocols[0]
                if args.collect:
                    runs[arch, fraction, seed] = collected_run(run_dir, with_export)
                    continue
                overrides = {**recipe(args, data_root, seed), **student_overrides(arch),
                             "teacher.weights": str(teachers[seed][0]), "data.labeled_fraction": float(fraction)}
                runs[arch, fraction, seed] = pool.submit(train_student, overrides, run_dir, with_export)

    if args.collect:
        for seed in range(args.seeds):
            queue_students(seed)
    # A seed's students are queued as soon as its teacher is done (no core waits for the last teacher), seed by
    # seed: an interrupted benchmark still has every student, with fewer seeds (`--collect` counts them).
    teacher_jobs = {pool.submit(train_teacher, {**recipe(args, data_root, seed), **student_overrides("cnn")},
                                args.work / f"seed{seed}" / "teacher"): seed
                    for seed in range(0 if args.collect else args.seeds)}
    for job in as_completed(teacher_jobs):
        seed = teacher_jobs[job]
        teachers[seed] = job.result()
        console.print(f"seed {seed}: teacher resnet18 {teachers[seed][1]:.2f}% ({teachers[seed][2]:.1f} s/epoch)")
        queue_students(seed)

    rows: dict[str, Any] = {}
    collected_teachers: dict[int, dict[str, Any]] = {}
    train_images = 0
    for arch in students:
        row: dict[str, Any] = {"protocols": {}, "warnings": []}
        epoch_seconds: list[float] = []
        for fraction in protocols:
            kd, scratch, kd_val, scratch_val = [], [], [], []
            for seed in range(args.seeds):
                summary, exported = runs[arch, fraction, seed].result()
                if not summary:
                    row["missing_runs"] = row.get("missing_runs", 0) + 1
                    continue
                collected_teachers[seed] = summary["teacher"]
                if exported is not None:
                    row["export"] = exported
                kd.append(summary["student"]["test_top1"])
                scratch.append(summary["baseline"]["test_top1"])
                kd_val.append(summary["student"]["val_top1"])
                scratch_val.append(summary["baseline"]["val_top1"])
                epoch_seconds += [summary["student"]["train_seconds_per_epoch"],
                                  summary["baseline"]["train_seconds_per_epoch"]]
                row["params"] = summary["student"]["params"]
                row["warnings"] += summary["warnings"]
                train_images = summary["train_images"]
                console.print(f"{arch:28s} labels {float(fraction):4.0%} seed {seed}: KD {kd[-1]:6.2f}  "
                              f"scratch {scratch[-1]:6.2f}  ({summary['wall_seconds']:.0f}s)"
                              + "".join(f"\n  warning: {w}" for w in summary["warnings"]))
            if not kd:
                continue
            row["protocols"][fraction] = {
                "kd": mean_sd(kd), "scratch": mean_sd(scratch),
                "kd_gain": mean_sd([a - b for a, b in zip(kd, scratch, strict=True)]),
                "kd_val": mean_sd(kd_val), "scratch_val": mean_sd(scratch_val)}  # what a recipe is chosen on
        if not epoch_seconds:  # --collect: no finished run of this student
            continue
        row["seconds_per_epoch"] = statistics.fmean(epoch_seconds)
        rows[arch] = row
    pool.shutdown()
    if args.collect:
        teachers = {seed: (Path(), t["test_top1"], t.get("train_seconds_per_epoch", math.nan))
                    for seed, t in collected_teachers.items()}

    result = {
        "kd2trt": __version__, "torch": torch.__version__,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "jobs": args.jobs, "torch_threads_per_job": threads_per_job(args.jobs, args.threads),
                    "device": args.device},
        "command": "bench/zoo.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                              if k not in ("work", "out", "no_export")),
        "image_size": args.image_size, "per_class": args.per_class, "epochs": args.epochs,
        "teacher_epochs": args.teacher_epochs, "seeds": args.seeds, "lr": args.lr, "warmup": args.warmup,
        "ema": args.ema,
        "protocols": protocols, "train_images": train_images,
        "teacher_test_top1": mean_sd([t[1] for t in teachers.values()]),
        "teacher_seconds_per_epoch": statistics.fmean(t[2] for t in teachers.values()),
        "students": rows,
        "chance_top1": 10.0,
        "all_students_above_chance": all(
            row["protocols"][p]["kd"]["mean"] > 30.0 and row["protocols"][p]["scratch"]["mean"] > 30.0
            for row in rows.values() for p in row["protocols"]),
        "students_not_run": [arch for arch in students if arch not in rows],
        "collected": args.collect,
        "wall_seconds": time.perf_counter() - started,
    }
    result["markdown"] = markdown(result)
    atomic_write_json(args.out, result)
    print(result["markdown"])
    console.print(f"{result['wall_seconds']:.0f}s; written to {args.out}")


if __name__ == "__main__":
    main()
