#!/usr/bin/env bash
# Checks one candidate floor of one dependency: does kd2trt's export really work with PACKAGE==VERSION?
#     scripts/check_dependency_floor.sh onnxruntime 1.27.0
# A scratch venv outside the repository gets only PACKAGE==VERSION (plus any of its own requirements the base
# venv does not meet); everything else comes from the project's venv, put on the path *after* the scratch
# site-packages, so exactly one package differs from the tested setup and torch is not reinstalled (5.9 GB).
# Then it runs the export tests (TESTS overrides). Exit status: that of pytest (0 = the version works).
#   BASE_VENV  the project's venv (default: .venv in the repository; its Python is the one used)
#   SCRATCH    where the scratch venv goes (default: /tmp/kd2trt-floor-PACKAGE-VERSION; reused if present)
#   TESTS      pytest arguments (default: tests/test_export.py -x)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 PACKAGE VERSION   (e.g. $0 onnxruntime 1.27.0)" >&2; exit 2; }
PKG="$1" VER="$2"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BASE_VENV="$(realpath -m "${BASE_VENV:-$REPO/.venv}")"
SCRATCH="$(realpath -m "${SCRATCH:-/tmp/kd2trt-floor-$PKG-$VER}")"
case "$SCRATCH" in "$REPO"|"$REPO"/*) echo "SCRATCH must be outside the repository" >&2; exit 2;; esac
[ -x "$BASE_VENV/bin/python" ] || { echo "no venv at $BASE_VENV (run scripts/bootstrap.sh or set BASE_VENV)" >&2; exit 2; }
# From the repository root: `python -m` puts the working directory first on sys.path, so this checkout's
# kd2trt is the one imported (not an editable install elsewhere).
cd "$REPO"

# The scratch venv uses the base venv's interpreter: the base's compiled packages must fit its Python ABI.
[ -x "$SCRATCH/bin/python" ] || "$BASE_VENV/bin/python" -m venv "$SCRATCH"
site_of() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
SCRATCH_SITE="$(site_of "$SCRATCH")" BASE_SITE="$(site_of "$BASE_VENV")"
export PYTHONPATH="$REPO:$SCRATCH_SITE:$BASE_SITE"

# --no-deps: pip must not reinstall numpy/protobuf/... into the scratch venv (they would shadow the base's).
"$SCRATCH/bin/python" -m pip install --quiet --no-deps "$PKG==$VER"
# Requirements of PACKAGE that nothing on the combined path meets (e.g. coloredlogs for old onnxruntime, or a
# numpy range): install those too, also without deps, until none is left. Printed, because they also differ.
for _ in 1 2 3 4; do
    unmet="$("$SCRATCH/bin/python" - "$PKG" <<'EOF'
import sys
from importlib import metadata

from packaging.requirements import Requirement

todo, seen = [sys.argv[1]], set()
while todo:
    name = todo.pop()
    if name in seen:
        continue
    seen.add(name)
    for text in metadata.requires(name) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            print(f"{req.name}{req.specifier}")
            continue
        if not req.specifier.contains(version, prereleases=True):
            print(f"{req.name}{req.specifier}")
        todo.append(req.name)
EOF
)"
    [ -z "$unmet" ] && break
    echo "unmet requirements, installed into the scratch venv too: $(echo $unmet)"
    # shellcheck disable=SC2086
    "$SCRATCH/bin/python" -m pip install --quiet --no-deps $unmet
done

# Prove which versions are really imported (the scratch one must win over the base venv's).
"$SCRATCH/bin/python" - "$PKG" "$VER" <<'EOF'
import importlib
import platform
import sys
from importlib import metadata

pkg, ver = sys.argv[1], sys.argv[2]
module = importlib.import_module(pkg)
found = getattr(module, "__version__", None) or metadata.version(pkg)
print(f"python {platform.python_version()} {platform.machine()}; {pkg} {found} from {module.__file__}")
for other in ("onnx", "onnxruntime", "onnxslim", "numpy", "torch"):
    if other != pkg:
        print(f"  {other} {metadata.version(other)}")
print(f"  kd2trt from {importlib.import_module('kd2trt').__file__}")
if found != ver:
    sys.exit(f"{pkg} {found} was imported, not {ver}: the scratch venv did not take precedence")
EOF

# shellcheck disable=SC2086
exec "$SCRATCH/bin/python" -m pytest -q -p no:cacheprovider ${TESTS:-tests/test_export.py -x}
