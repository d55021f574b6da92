"""requirements.txt text: the one parser for build, runtime and tools requirements, and
for the compiled (hash-locked) locks made from them."""

import re
from pathlib import Path

from vllm_overlay.common.errors import OverlayError

LOCK_ENTRY_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)")
LOCK_HASH_RE = re.compile(r"--hash=sha256:([0-9a-f]{64})")


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


def lock_blocks(text: str) -> list[tuple[str | None, str | None, list[str]]]:
    """A compiled lock as blocks, lines kept whole: (name, version, lines) for an entry
    with its indented lines (hashes, `# via`), (None, None, [line]) for any other line."""
    blocks: list[tuple[str | None, str | None, list[str]]] = []
    for line in text.splitlines(keepends=True):
        if m := LOCK_ENTRY_RE.match(line):
            blocks.append((normalize_name(m[1]), m[3], [line]))
        elif line.startswith(" ") and blocks and blocks[-1][0]:
            blocks[-1][2].append(line)
        else:
            blocks.append((None, None, [line]))
    return blocks


def lock_entries(text: str) -> dict[str, str]:
    """name -> pinned version of a compiled lock (`name==version \\` lines)."""
    return {name: version for name, version, _ in lock_blocks(text) if name}


def lock_hashes(text: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (version, the sha256 of every locked file) of a compiled lock."""
    return {name: (version, set(LOCK_HASH_RE.findall("".join(lines))))
            for name, version, lines in lock_blocks(text) if name}


def drop_entries(text: str, names: set[str]) -> str:
    """The lock without the entries (and their hash / via lines) of `names`."""
    return "".join(line for name, _, lines in lock_blocks(text) if name not in names
                   for line in lines)


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
