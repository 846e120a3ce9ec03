"""kd2trt bench: runners, accuracy, latency, telemetry, report and gates."""
