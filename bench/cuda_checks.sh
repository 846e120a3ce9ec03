#!/usr/bin/env bash
# What kd2trt can prove on a CUDA machine without TensorRT (and, with TensorRT, the engine tests too):
#   1. the `cuda` and `trt` tests (the trt ones skip with the probe's reason where TensorRT is absent);
#   2. the default recipe end to end on the GPU -- AMP distillation, export, bench with CUDA-event timing and
#      its parity gates (every form of the student vs the FP32 student; a failed gate fails the step);
#   3. code paths the CPU CI cannot reach: a timm teacher, the TensorBoard writer, and the torchrun launch path
#      on CUDA (one process: no process group is created).
# Usage: bench/cuda_checks.sh OUT_DIR   (python: $PYTHON, default python3; kd2trt importable from it)
# Results land in OUT_DIR: pytest logs, the run's distill.json / report.{md,json,png}, one log per check.
set -uo pipefail
out=${1:?usage: bench/cuda_checks.sh OUT_DIR}
py=${PYTHON:-python3}
mkdir -p "$out"
work=$(mktemp -d)
status=0
step() {  # step NAME CMD...: run, log to OUT_DIR/NAME.log, remember a failure, go on
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    if "$@" >"$out/$name.log" 2>&1; then echo "   ok ($((SECONDS - t0)) s)"; else echo "   FAILED ($((SECONDS - t0)) s)"; tail -20 "$out/$name.log"; status=1; fi
}

nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv >"$out/gpu.txt" 2>&1
step pytest_cuda "$py" -m pytest -q -rs -m "cuda or trt" -p no:cacheprovider
step pipeline "$py" -m kd2trt run pipeline/digits.yaml --out "$work/digits" --set device=cuda
for f in distill.json report.md report.json report.png; do cp "$work/digits/$f" "$out/" 2>/dev/null; done
for i in 1 2 3; do  # the same engines and models benched again: how far apart repeated measurements land
    step "bench_repeat$i" "$py" -m kd2trt bench "$work/digits" --out "$work/repeat$i" --device cuda
    cp "$work/repeat$i/report.json" "$out/report_repeat$i.json" 2>/dev/null
done
tiny=(--set teacher.train.epochs=2 --set student.train.epochs=2 --set distill.baseline=false)
step timm_tensorboard "$py" -m kd2trt distill --out "$work/timm" --set teacher.arch=timm:resnet18 --set teacher.channels=null \
    --set teacher.feature_tap=null --set student.feature_tap=null --set tensorboard=true --set device=cuda "${tiny[@]}"
step timm_tensorboard_events bash -c "ls -R '$work/timm' | grep -q 'events.out.tfevents'"
step torchrun_cuda "$py" -m torch.distributed.run --standalone --nproc-per-node 1 -m kd2trt distill \
    --out "$work/ddp" --set device=cuda "${tiny[@]}"
rm -rf "$work"
exit $status
