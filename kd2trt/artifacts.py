"""Atomic writes and content hashes for every artifact kd2trt produces (no torch, no onnx: the bottom layer).

A run killed at any moment (Ctrl-C, kill -9, out of memory on a Jetson) must never leave a
half-written checkpoint, ONNX file or cache at its final path: the next run would trust it.
Everything is therefore written to a temporary file in the same directory, flushed to disk and
renamed over the target, which POSIX guarantees to be atomic.

A write that fails (a full disk, a read-only or unwritable directory, a directory where the file should be)
is a :class:`Kd2trtError` naming the target and the cause, and leaves no temporary file. A process killed
with SIGKILL cannot clean up, so temporary names carry the writer's pid -- ``.<name>.<pid>.<random>.tmp``,
``kd2trt-<kind>-<pid>-<random>/`` -- and :func:`remove_stale_temp_files` / :func:`remove_stale_temp_dirs`
remove those whose writer is no longer alive (never a running process's, so concurrent runs are safe).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from kd2trt.errors import Kd2trtError

#: ``.<name>.<pid>.<8 random characters>.tmp``: what :func:`atomic_path` creates (tempfile's random part)
_TEMP_FILE = re.compile(r"^\..+\.(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp$")
#: ``kd2trt-<kind>-<pid>-<8 random characters>``: what :func:`temp_directory` creates
_TEMP_DIR = re.compile(r"^kd2trt-[a-z0-9]+-(?P<pid>\d+)-[a-z0-9_]{8}$")
_HINTS = {
    errno.ENOSPC: "free disk space or choose another output directory (--out)",
    errno.EDQUOT: "free disk space (quota exceeded) or choose another output directory (--out)",
    errno.EISDIR: "remove that directory or choose another output directory (--out)",
    errno.EACCES: "check the directory's permissions or choose another output directory (--out)",
    errno.EPERM: "check the directory's permissions or choose another output directory (--out)",
}
_DEFAULT_HINT = "choose another output directory (--out)"


def write_error(path: str | os.PathLike[str], cause: OSError | str) -> Kd2trtError:
    """``<path>: cannot be written (<cause>); <fix>`` -- one line, the fix chosen by the cause's errno."""
    if isinstance(cause, OSError):
        hint = _HINTS.get(cause.errno or 0, _DEFAULT_HINT)
        cause = cause.strerror or str(cause)
    else:
        hint = _DEFAULT_HINT
    return Kd2trtError(f"{path}: cannot be written ({cause}); {hint}")


def ensure_directory(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p path``; a directory that cannot be created is a one-line error naming it and the cause."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise Kd2trtError(f"{directory}: exists and is not a directory; remove it or choose another output "
                          "directory (--out)") from None
    except OSError as exc:
        hint = _HINTS.get(exc.errno or 0, _DEFAULT_HINT)
        raise Kd2trtError(f"{directory}: cannot create the directory ({exc.strerror or exc}); {hint}") from None
    return directory


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure remove it.

    The file keeps the permission bits of the one it replaces (a new one gets 0644 under the umask,
    not mkstemp's 0600), and the directory is fsynced so that the rename itself survives a crash.
    An OSError while creating, writing (an error without a file name, or naming the temporary file) or
    renaming it becomes :func:`write_error` for `path`; the temporary file is removed in every case.
    """
    target = Path(path)
    if target.is_dir():
        raise Kd2trtError(f"{target}: is a directory, so it cannot be written; remove that directory or choose "
                          "another output directory (--out)")
    ensure_directory(target.parent)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise write_error(target, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.filename is not None and str(exc.filename) not in (str(tmp), str(target)):
                raise  # about another file (an input read by the writer): not this write's failure
            raise write_error(target, exc) from None
        try:
            with open(tmp, "rb+") as handle:
                os.fchmod(handle.fileno(), mode)
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            raise write_error(target, exc) from None
        _fsync_directory(target.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (another user's counts: only its owner could tell it is ours)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def remove_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` left in `directory` when its process was killed.

    Only names of kd2trt's own form whose pid is no longer running are touched, so a concurrent run
    writing into the same directory keeps its files. Best effort: what cannot be removed stays.
    """
    removed = []
    with contextlib.suppress(OSError):
        for path in Path(directory).glob(".*.tmp"):
            match = _TEMP_FILE.match(path.name)
            if match is None or _alive(int(match["pid"])) or not path.is_file():
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def temp_directory(kind: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary directory ``kd2trt-<kind>-<pid>-<random>`` under the temp root, removed on exit."""
    return tempfile.TemporaryDirectory(prefix=f"kd2trt-{kind}-{os.getpid()}-")


def remove_stale_temp_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the :func:`temp_directory` directories under `root` (default: the temp root) of dead processes."""
    removed = []
    with contextlib.suppress(OSError):
        for path in Path(root or tempfile.gettempdir()).iterdir():
            match = _TEMP_DIR.match(path.name)
            if match is None or _alive(int(match["pid"])) or path.is_symlink() or not path.is_dir():
                continue
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _fsync_directory(directory: Path) -> None:
    """Persist a rename; best effort, since some file systems refuse to open directories."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: str | os.PathLike[str], mode: str, write: Callable[[IO[Any]], None]) -> Path:
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        write(handle)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return _atomic_write(path, "w", lambda handle: handle.write(text))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return _atomic_write(path, "wb", lambda handle: handle.write(data))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write `obj` as indented JSON (keys in insertion order) to `path` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, streamed so that large engines do not need to fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
