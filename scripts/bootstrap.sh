#!/usr/bin/env bash
# Creates .venv and installs kd2trt with its test tools. Idempotent; safe to re-run.
# torch/torchvision are pinned and installed first: on this machine kind pip takes them from local
# disk, and a bare `torch` requirement would otherwise download a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "$(uname -m)" = "aarch64" ]; then TORCH="torch==2.9.1 torchvision==0.24.1"; else TORCH="torch==2.14.1 torchvision==0.29.1"; fi
.venv/bin/python -c "import torch, torchvision" 2>/dev/null || .venv/bin/python -m pip install --quiet $TORCH
.venv/bin/python -m pip install --quiet -e '.[dev,qat]'   # qat: nvidia-modelopt (plain), for the QAT tests
