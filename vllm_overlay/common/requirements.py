"""requirements.txt text: the one parser for build, runtime and tools requirements, and
for the compiled (hash-locked) locks made from them."""

import re
from pathlib import Path

from vllm_overlay.common.errors import OverlayError

LOCK_ENTRY_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)")


def requirement_lines(text: str) -> list[str]:
    """Requirement lines without comments and blanks ('-r x' lines kept as they are)."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].split("\t#", 1)[0]
        line = "" if line.lstrip().startswith("#") else line.strip()
        if line:
            lines.append(line)
    return lines


def requirement_names(text: str) -> list[str]:
    """Only the requirements themselves: option lines (-r, --extra-index-url ...) left out."""
    return [line for line in requirement_lines(text) if not line.startswith("-")]


def normalize_name(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries(text: str) -> dict[str, str]:
    """name -> pinned version of a compiled lock (`name==version \\` lines)."""
    return {normalize_name(m[1]): m[3] for line in text.splitlines()
            if (m := LOCK_ENTRY_RE.match(line))}


def read_lock(path: Path) -> tuple[str, dict[str, str]]:
    """(text, name -> version); a missing or unpinned lock is an error naming the fix."""
    if not path.is_file():
        raise OverlayError(f"{path}: no runtime lock for this arch: run `make lock "
                           f"ARCH={path.stem.split('-', 1)[-1]}`")
    text = path.read_text()
    for line in text.splitlines():
        if line and not line.startswith(("#", " ")) and not LOCK_ENTRY_RE.match(line):
            raise OverlayError(f"{path}: not a pinned `name==version` entry: {line!r}")
    return text, lock_entries(text)
