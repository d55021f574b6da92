"""An sdist's files into a git store as one commit, read from the .tar.gz as a stream.

`git fast-import` writes one pack: nothing is unpacked on disk, no work tree is hashed,
and a blob the store already has packed (another release's same file) is not written
again. The commit holds what `GitTree.unpack` + `init_base` commit from the same sdist
(the files under the top folder, executable bits and symlinks kept): the same tree.
"""

import subprocess
import tarfile
from datetime import datetime
from pathlib import Path

from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.git import IDENTITY, environment

MESSAGE = b"upstream sdist\n"


def import_sdist(sdist: Path, repo: Path, ref: str, date: str) -> None:
    """Commit the sdist's files to `ref` of the (bare) repo."""
    proc = subprocess.Popen(["git", "-C", str(repo), "fast-import", "--quiet",
                             "--date-format=raw"], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=environment())
    try:
        _write_commit(proc.stdin, sdist, ref, _raw_date(date))
        proc.stdin.close()
    except (tarfile.TarError, OSError) as exc:
        proc.kill()
        proc.wait()
        raise OverlayError(f"{sdist}: cannot import sdist: {exc}") from exc
    error = proc.stderr.read().decode(errors="replace")
    if proc.wait():
        raise OverlayError(f"git fast-import of {sdist} failed in {repo}:\n{error}".rstrip())


def _raw_date(date: str) -> bytes:
    """An ISO date (the pin's `released`) as git's raw `<seconds> +0000`."""
    stamp = datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp()
    return f"{int(stamp)} +0000".encode()


def _write_commit(out, sdist: Path, ref: str, date: bytes) -> None:
    who = {role: f"{IDENTITY[f'GIT_{role}_NAME']} <{IDENTITY[f'GIT_{role}_EMAIL']}>".encode()
           for role in ("AUTHOR", "COMMITTER")}
    out.write(b"commit " + ref.encode() + b"\n"
              + b"author " + who["AUTHOR"] + b" " + date + b"\n"
              + b"committer " + who["COMMITTER"] + b" " + date + b"\n"
              + b"data %d\n" % len(MESSAGE) + MESSAGE)
    with tarfile.open(sdist, "r|*") as tar:  # a stream: members in order, read once
        for member in tar:
            path = _inner_path(member.name)
            if path is None or member.isdir():
                continue
            if member.issym():
                _file(out, b"120000", path, member.linkname.encode())
            elif member.islnk():  # a hard link: a copy of a file already written
                out.write(b"C " + _quoted(_inner_path(member.linkname) or "") + b" "
                          + _quoted(path) + b"\n")
            elif member.isfile():
                mode = b"100755" if member.mode & 0o100 else b"100644"
                _file(out, mode, path, tar.extractfile(member).read())
            else:
                raise OverlayError(f"{sdist}: {member.name}: not a file, link or folder")
    out.write(b"\n")


def _inner_path(name: str) -> str | None:
    """The member's path under the sdist's top folder (None: the top folder itself)."""
    parts = name.split("/", 1)
    inner = parts[1].strip("/") if len(parts) == 2 else ""
    if not inner:
        return None
    if name.startswith("/") or ".." in inner.split("/"):
        raise OverlayError(f"sdist member {name!r} points outside the sdist")
    return inner


def _file(out, mode: bytes, path: str, data: bytes) -> None:
    out.write(b"M " + mode + b" inline " + _quoted(path) + b"\n"
              + b"data %d\n" % len(data) + data + b"\n")


def _quoted(path: str) -> bytes:
    """A path in fast-import's C-style quotes (any byte may follow; these must be escaped)."""
    raw = path.encode("utf-8", "surrogateescape")
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n") \
        + b'"'
