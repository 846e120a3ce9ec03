#!/usr/bin/env python3
"""Mutation proof for the TensorRT layer's CPU tests: plant known bugs in a copy, check the tests catch each.

Each mutant is one exact text replacement in one file of a temporary copy of the repository (kd2trt/, tests/,
pyproject.toml, plus scripts/check_trt_api.py and bench/results/trt_api_surface.json, which the TensorRT tests
read). A replacement whose anchor text is not found exactly once fails loudly: the mutant must be the bug it
claims to be, not a silent no-op. The unmutated copy is run first and must pass, so that a failure is the
mutant's doing. Then, per mutant, ``python -m pytest -q -x tests/test_trt_*.py`` runs in the copy with
PYTHONPATH set to it; the mutant is *killed* if the tests fail. Exit status 1 if any mutant survives.

The bugs are the three of issue #13, in the code's current shape:

(a) the engines stage builds without the recipe's build options per precision: the DLA core reaches the
    FP32 build (and, a2, the recipe's build section is not used at all);
(b) the FP16 builder flag is taken from the plan's INT8 flag;
(c) probe() reports EXPLICIT_BATCH as needed on TensorRT 10.x.

    python scripts/mutants.py            # -x: the first test that catches each
    python scripts/mutants.py --all      # every test that catches each
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = ("kd2trt", "tests", "pyproject.toml", "scripts/check_trt_api.py", "bench/results/trt_api_surface.json")


@dataclass(frozen=True)
class Mutant:
    key: str
    bug: str
    file: str
    anchor: str
    replacement: str


MUTANTS = (
    Mutant("a", "the stage's options per precision put the DLA core on the FP32 build",
           "kd2trt/trt/stage.py",
           '    on_dla = build.dla_core is not None and precision != "fp32"\n',
           "    on_dla = build.dla_core is not None\n"),
    Mutant("a2", "the stage plans every engine without the recipe's build section (defaults instead)",
           "kd2trt/trt/stage.py",
           "settings = plan_build(plan, engine_build_options(precision, config.build), caps,",
           "settings = plan_build(plan, engine_build_options(precision, type(config.build)()), caps,"),
    Mutant("b", "BuilderFlag.FP16 is taken from the plan's INT8 flag",
           "kd2trt/trt/wiring.py",
           '    if plan.fp16_flag:\n        builder_flags.append("FP16")\n',
           '    if plan.int8_flag:\n        builder_flags.append("FP16")\n'),
    Mutant("c", "probe() says EXPLICIT_BATCH is needed on TensorRT 10.x",
           "kd2trt/trt/capabilities.py",
           "        and version.major < 10,\n",
           "        and version.major < 11,\n"),
)


def copy_repository(target: Path) -> Path:
    """The files the TensorRT tests need, copied under ``target/repo`` (with ``shared/`` beside it, linked)."""
    repo = target / "repo"
    for item in COPIED:
        source = REPO / item
        destination = repo / item
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, destination)
    shared = REPO.parent / "shared"
    if shared.is_dir():  # tests/conftest.py's SHARED: the real calibration caches and other fixtures
        (target / "shared").symlink_to(shared, target_is_directory=True)
    return repo


def plant(repo: Path, mutant: Mutant) -> None:
    path = repo / mutant.file
    text = path.read_text()
    count = text.count(mutant.anchor)
    if count != 1:
        raise SystemExit(f"mutant {mutant.key}: the anchor text occurs {count} times in {mutant.file} (expected "
                         f"exactly once); the code changed shape, update the mutant:\n{mutant.anchor}")
    path.write_text(text.replace(mutant.anchor, mutant.replacement))


def run_tests(repo: Path, stop_first: bool) -> tuple[int, list[str], str]:
    env = dict(os.environ, PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1")
    tests = sorted(str(p.relative_to(repo)) for p in (repo / "tests").glob("test_trt_*.py"))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(["-x"] if stop_first else []),
               *tests]
    proc = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)
    return proc.returncode, failed, output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="run every test per mutant (no -x): list all that fail")
    args = parser.parse_args(argv)
    survivors = []
    with tempfile.TemporaryDirectory(prefix="kd2trt-mutants-") as tmp:
        baseline = copy_repository(Path(tmp) / "baseline")
        code, failed, output = run_tests(baseline, stop_first=True)
        if code != 0:
            print(output[-4000:])
            print(f"the unmutated copy fails ({', '.join(failed) or f'exit {code}'}): fix that first")
            return 2
        print("baseline (no mutant): tests pass")
        for mutant in MUTANTS:
            repo = copy_repository(Path(tmp) / f"mutant-{mutant.key}")
            plant(repo, mutant)
            code, failed, output = run_tests(repo, stop_first=not args.all)
            if code == 0:
                survivors.append(mutant.key)
                print(f"mutant ({mutant.key}) SURVIVED: {mutant.bug} [{mutant.file}]")
            elif not failed:
                print(output[-3000:])
                print(f"mutant ({mutant.key}): pytest exit {code} without a failing test (collection error?)")
                survivors.append(mutant.key)
            else:
                print(f"mutant ({mutant.key}) killed: {mutant.bug} [{mutant.file}]")
                for test in failed:
                    print(f"    caught by {test}")
    print(f"{len(MUTANTS) - len(survivors)} of {len(MUTANTS)} mutants killed"
          + (f"; surviving: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
