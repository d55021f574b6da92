"""The blob cache: downloads kept under their sha256 (<cache>/sha256/<sha256>), verified
before any use.

A download is streamed into a `.part<pid>.<thread>` file beside its destination, checked,
made read-only and renamed into place: a reader never sees half a file, and a part left by
a killed process is removed by the next fetch of that blob. A cached file is trusted only
after its size and sha256 were checked; the check is remembered per (size, mtime, inode)
so a warm cache is not re-hashed.
"""

import os
import threading
from pathlib import Path
from typing import Callable

from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import sha256_file
from vllm_overlay.common.http import Progress, download
from vllm_overlay.common.paths import cache_dir
from vllm_overlay.common.pin import Artifact


def blobs_dir() -> Path:
    return cache_dir() / "sha256"


def blob_path(sha256: str) -> Path:
    return blobs_dir() / sha256


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def verify_file(path: Path, art: Artifact) -> None:
    """Raise unless `path` has the artifact's size and sha256."""
    size = path.stat().st_size
    if size != art.size:
        raise OverlayError(
            f"{art.filename}: size {size} != pinned {art.size} ({path})")
    got = sha256_file(path)
    if got != art.sha256:
        raise OverlayError(
            f"{art.filename}: sha256 {got} != pinned {art.sha256} ({path})")


def cached(art: Artifact, rehash: bool = False) -> Path | None:
    """The verified cached file, or None if absent. A corrupt entry is an error.
    With rehash, the file is hashed in full whatever its marker says (an in-place write can
    keep size, mtime and inode)."""
    path = blob_path(art.sha256)
    if not path.exists():
        return None
    marker = path.with_name(path.name + ".verified")
    if not rehash and marker.exists() and marker.read_text() == _stat_key(path):
        return path
    try:
        verify_file(path, art)
    except OverlayError as exc:
        raise OverlayError(f"corrupt cache entry: {exc}; delete {path} to fetch again") from exc
    try:
        marker.write_text(_stat_key(path))
    except OSError:
        pass  # a read-only cache: verified now, and again next time
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_dead_parts(dest: Path) -> None:
    """The .part files of `dest` that a killed download left (a live process keeps its own)."""
    for part in dest.parent.glob(dest.name + ".part*"):
        pid = part.name.rpartition(".part")[2].split(".")[0]
        if not (pid.isdigit() and _alive(int(pid))):
            part.unlink(missing_ok=True)


def write(url: str, label: str, advance: Callable[[int], None],
          check: Callable[[str, int], None], dest: Path | None = None) -> tuple[Path, str, int]:
    """Stream `url` into a .part file beside `dest` (default: the blob of its sha256, named
    `label` while it downloads), refuse it unless check(sha256, size) returns, then rename
    it read-only into place: (path, sha256, size)."""
    if dest is None:
        blobs_dir().mkdir(parents=True, exist_ok=True)
    part = dest or blobs_dir() / label
    part = part.with_name(f"{part.name}.part{os.getpid()}.{threading.get_ident()}")
    try:
        sha256, size = download(url, part, label, advance)
        check(sha256, size)
        os.chmod(part, 0o444)
        dest = dest or blob_path(sha256)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest, sha256, size


def download_pinned(url: str, dest: Path, art: Artifact) -> None:
    """Stream `url` into dest (via a .part file), verifying size and sha256 before rename."""
    def check(sha256: str, size: int) -> None:
        if size < art.size:
            raise OverlayError(f"{art.filename}: download from {url} truncated: got {size} "
                               f"of {art.size} bytes ({art.size - size} missing); try again")
        if size != art.size or sha256 != art.sha256:
            raise OverlayError(
                f"{art.filename}: downloaded from {url} but got size {size}, sha256 "
                f"{sha256}; pinned size {art.size}, sha256 {art.sha256}")

    write(url, art.filename, Progress(art.filename, art.size).advance, check, dest)
