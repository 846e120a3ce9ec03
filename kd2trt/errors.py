"""User-facing errors: one line that names the file and the fix; the CLI prints it and exits with code 2."""


class Kd2trtError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


class TrtVersionError(Kd2trtError):
    """A TensorRT version or deployment target that kd2trt cannot interpret."""


class Kd2trtWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints it as one line)."""
