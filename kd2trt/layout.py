"""The run directory and the file names every stage reads and writes: one owner for each name.

A later stage reads an earlier stage's files, never its objects, so the names are the contract between
stages (and between the workstation and the Jetson, which receives a copy of the run directory). They are
spelled here once; every other module asks :class:`RunLayout` or :class:`ModelFiles`. Pure path logic: no
file is read and nothing heavier than the standard library is imported, so every layer may depend on it.

::

    runs/<name>/                          RunLayout(root)
      config.yaml, distill.json           the resolved recipe, the distillation summary
      <role>.pt, <role>.last.pt           checkpoint (best on validation), resume state
      <role>.metrics.json                 per-epoch history
      <role>.onnx, .fp16.onnx, .int8.onnx ModelFiles(root, role): FP32, FP16-cast and Q/DQ graphs
      <role>.qat.onnx                     FP32 graph of the QAT-fine-tuned weights (--qat-epochs): INT8's source
      <role>.calib-trt<X.Y.Z>.cache(.json) TensorRT calibration cache (+ manifest) per TensorRT release
      <role>.export.json                  the export summary
      <role>.trtexec.txt                  trtexec builds of the same engines, for targets without kd2trt
      report.{md,json,png}                the bench report
      stages/<stage>.json                 stage manifests of `kd2trt run`
    engines/<name>/                       RunLayout.engines_dir (relative to the working directory)
      <model>-<precision>-sm<cc>-trt<X.Y.Z>.engine (+ .json manifest, .layers.json)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kd2trt.errors import Kd2trtError, TrtVersionError
from kd2trt.targets import TrtVersion

__all__ = ["ONNX_SUFFIXES", "PRECISIONS", "ROLES", "STAGES", "ModelFiles", "RunLayout", "engine_filename",
           "sidecar", "slug", "trt_short"]

STAGES = ("distill", "export", "engines", "bench")
ROLES = ("teacher", "student", "baseline")
PRECISIONS = ("fp32", "fp16", "int8")
#: precision -> the suffix of its ONNX graph (INT8 is the explicit Q/DQ graph)
ONNX_SUFFIXES = {"fp32": ".onnx", "fp16": ".fp16.onnx", "int8": ".int8.onnx"}
#: the FP32 graph of the QAT-fine-tuned weights: the source of the INT8 outputs when `--qat-epochs` ran
QAT_ONNX_SUFFIX = ".qat.onnx"
REPORT_SUFFIXES = {"json": ".json", "markdown": ".md", "plot": ".png"}
_CACHE_RE = re.compile(r"\.calib-trt(\d+\.\d+\.\d+)\.cache$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str) -> str:
    """`text` as a file-name part (letters, digits, '.', '_', '-'); one that leaves nothing is an error."""
    result = _UNSAFE.sub("-", text.strip()).strip("-.")
    if not result:
        raise Kd2trtError(f"{text!r} cannot be used in a file name; use letters, digits, '.', '_' or '-'")
    return result


def trt_short(trt_version: str | TrtVersion) -> str:
    """``"10.3.0.30"`` -> ``"10.3.0"``: the build number does not change compatibility."""
    if isinstance(trt_version, TrtVersion):
        return str(trt_version)
    try:
        return str(TrtVersion.parse(str(trt_version)))
    except TrtVersionError:
        raise Kd2trtError(f"TensorRT version {trt_version!r} is not understood; expected e.g. 10.3.0") from None


def engine_filename(model: str, precision: str, cc: str, trt_version: str | TrtVersion) -> str:
    """``<model>-<precision>-sm<cc without dot>-trt<version>.engine``, e.g. ``student-int8-sm87-trt10.3.0.engine``."""
    if not re.fullmatch(r"\d+\.\d+", cc):
        raise Kd2trtError(f"compute capability {cc!r} is not of the form MAJOR.MINOR (e.g. 8.7)")
    return f"{slug(model)}-{slug(precision)}-sm{cc.replace('.', '')}-trt{trt_short(trt_version)}.engine"


def sidecar(path: str | os.PathLike[str], suffix: str = ".json") -> Path:
    """The file written beside `path` about it: ``x.cache`` -> ``x.cache.json``, ``x.engine`` -> ``x.engine.json``."""
    path = Path(path)
    return path.with_name(path.name + suffix)


@dataclass(frozen=True)
class ModelFiles:
    """The files `kd2trt export` writes for one model: ``<directory>/<stem><suffix>``."""

    directory: Path
    stem: str

    @classmethod
    def of_onnx(cls, onnx_path: str | os.PathLike[str]) -> ModelFiles:
        """The files of the FP32 graph ``<dir>/<stem>.onnx``; a derived graph is refused, naming the FP32 one."""
        onnx_path = Path(onnx_path)
        name = onnx_path.name
        if not name.endswith(".onnx") or name == ".onnx":
            raise Kd2trtError(f"{onnx_path}: not an ONNX graph; pass the <model>.onnx that `kd2trt export` wrote")
        for derived in (ONNX_SUFFIXES["fp16"], ONNX_SUFFIXES["int8"], QAT_ONNX_SUFFIX):
            if name.endswith(derived):
                fp32 = onnx_path.with_name(name[: -len(derived)] + ".onnx")
                raise Kd2trtError(f"{onnx_path} is a derived graph; pass the FP32 graph {fp32} (its FP16/INT8 "
                                  "siblings are found beside it)")
        return cls(onnx_path.parent, name[: -len(".onnx")])

    def onnx(self, precision: str = "fp32") -> Path:
        return self.directory / f"{self.stem}{ONNX_SUFFIXES[precision]}"

    @property
    def qat_onnx(self) -> Path:
        """The FP32 graph of the QAT-fine-tuned weights, which the Q/DQ graph and the caches are made from."""
        return self.directory / f"{self.stem}{QAT_ONNX_SUFFIX}"

    def calib_cache(self, version: TrtVersion | str) -> Path:
        """Where the TensorRT ``version`` calibration cache is written (by export, or by live calibration)."""
        return self.directory / f"{self.stem}.calib-trt{trt_short(version)}.cache"

    def calib_caches(self) -> Iterator[tuple[Path, str]]:
        """``(path, "X.Y.Z")`` of every calibration cache present, sorted by name."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"{self.stem}.calib-trt*.cache")):
            match = _CACHE_RE.search(path.name)
            if match is not None:
                yield path, match.group(1)

    @property
    def export_summary(self) -> Path:
        return self.directory / f"{self.stem}.export.json"

    @property
    def trtexec_commands(self) -> Path:
        """trtexec lines for targets kd2trt does not run on (written where no engine can be built)."""
        return self.directory / f"{self.stem}.trtexec.txt"

    @property
    def checkpoint(self) -> Path:
        return self.directory / f"{self.stem}.pt"


@dataclass(frozen=True)
class RunLayout:
    """One run directory, and the engines directory that goes with it."""

    root: Path
    engines_root: Path | None = None  # default: engines/<run name>, relative to the working directory

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ---------------------------------------------------------------------------------------- distill
    def checkpoint(self, role: str = "student") -> Path:
        return self.root / f"{role}.pt"

    def resume_state(self, role: str) -> Path:
        return self.root / f"{role}.last.pt"

    def metrics(self, role: str) -> Path:
        return self.root / f"{role}.metrics.json"

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def distill_summary(self) -> Path:
        return self.root / "distill.json"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    # ----------------------------------------------------------------------------------------- export
    def model(self, role: str = "student") -> ModelFiles:
        return ModelFiles(self.root, role)

    def exported(self) -> list[Path]:
        """The checkpoints, graphs and caches in the run directory (resume states excluded), sorted."""
        return sorted(p for pattern in ("*.pt", "*.onnx", "*.cache")
                      for p in self.root.glob(pattern) if not p.name.endswith(".last.pt"))

    # ---------------------------------------------------------------------------------------- engines
    @property
    def engines_dir(self) -> Path:
        """`engines/<run name>/` unless given; the name is slugged as engine file names are, and `.`/`..`
        use the directory's real name."""
        if self.engines_root is not None:
            return Path(self.engines_root)
        name = self.root.name
        if name in ("", ".", ".."):
            name = Path(os.path.abspath(self.root)).name
        return Path("engines") / slug(name)

    def engine(self, model: str, precision: str, cc: str, trt_version: str | TrtVersion) -> Path:
        return self.engines_dir / engine_filename(model, precision, cc, trt_version)

    def engines(self) -> list[Path]:
        """The engines present (their manifests not included)."""
        folder = self.engines_dir
        return sorted(folder.glob("*.engine")) if folder.is_dir() else []

    def engine_files(self) -> list[Path]:
        """The engines and their manifests: what a bench of them depends on."""
        return sorted(p for engine in self.engines() for p in (engine, sidecar(engine)) if p.is_file())

    # ------------------------------------------------------------------------------------ bench, run
    def report(self, kind: str, directory: Path | None = None) -> Path:
        return (directory or self.root) / f"report{REPORT_SUFFIXES[kind]}"

    def stage_manifest(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"
