"""What a stage of `kd2trt run` hands back: its output files, a one-line summary, and what it recorded.

The stages meet in files (see :mod:`kd2trt.layout`); these objects only carry a finished stage's outcome to
the pipeline, which hashes the outputs into the stage manifest, and to the command line, which prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["BenchRecord", "GateResult", "StageResult"]


@dataclass
class StageResult:
    """One stage's outcome. `report` is the stage's own summary (what distill.json, <model>.export.json or
    report.json hold); `record` is what the stage manifest keeps and returns while the stage is up to date."""

    outputs: list[Path] = field(default_factory=list)
    summary: str = ""
    skipped_reason: str | None = None
    report: dict[str, Any] | None = None
    record: dict[str, Any] | None = None

    @classmethod
    def skipped(cls, reason: str) -> StageResult:
        return cls(skipped_reason=reason)


class GateResult(BaseModel):
    """One CI gate checked on one bench row."""

    model_config = ConfigDict(extra="forbid")

    gate: str
    row: str
    value: float | None
    limit: float
    passed: bool
    message: str


class BenchRecord(BaseModel):
    """What the bench stage's manifest keeps: the gates' verdicts and where the report went, so that an up-to-date
    bench still fails a run whose gate failed."""

    model_config = ConfigDict(extra="forbid")

    gates: list[GateResult]
    files: dict[str, str]
