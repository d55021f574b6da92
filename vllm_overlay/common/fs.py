"""File system: sha256 of a file, a lock file, and write-then-rename (nothing half-written)."""

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from pathlib import Path

_CHUNK = 1 << 20
_MUTEXES: dict[str, threading.Lock] = {}
_MUTEXES_GUARD = threading.Lock()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _thread_lock(path: Path) -> threading.Lock:
    with _MUTEXES_GUARD:
        return _MUTEXES.setdefault(str(path), threading.Lock())


@contextlib.contextmanager
def file_lock(path: Path, log: logging.Logger | None = None):
    """Exclusive lock across processes (and, via a per-path mutex, across our threads).
    With `log`, say so when another holder makes us wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _thread_lock(path), open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log.info(f"waiting for another build holding {path}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def replace(tmp: Path, dest: Path) -> None:
    """Rename a finished temp file into place (atomic on one file system)."""
    fault = os.environ.get("VLLM_OVERLAY_FAULT")
    if fault == f"before-rename:{dest.name}":
        os._exit(137)  # fault injection for tests: die like a killed process
    os.replace(tmp, dest)
    if fault == f"after-rename:{dest.name}":
        os._exit(137)


def temp_name(dest: Path, tmp_dir: Path | None = None) -> Path:
    """A temp path beside `dest` (or in tmp_dir), unique per process and thread."""
    return (tmp_dir or dest.parent) / f".tmp-{dest.name}.{os.getpid()}.{threading.get_ident()}"


def atomic_write(dest: Path, data: str | bytes, tmp_dir: Path | None = None,
                 mode: int | None = None) -> None:
    """Write `data` to a temp file, then rename it onto `dest`: readers see old or new."""
    tmp = temp_name(dest, tmp_dir)
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        if mode is not None:
            os.chmod(tmp, mode)
        replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
