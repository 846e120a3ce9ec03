"""User-facing errors: one line that names the file and the fix; the CLI prints it and exits non-zero."""


class Kd2trtError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""
