"""kd2trt: knowledge distillation to TensorRT engines, with proof that the result is still good."""

__version__ = "0.1.0"
