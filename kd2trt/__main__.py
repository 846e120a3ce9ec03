"""`python -m kd2trt …` (also what `torchrun -m kd2trt distill …` runs in every process)."""

from kd2trt.cli import run

run()
