"""The patch series: patches/series (quilt format) and the DEP-3 headers of each patch."""

import hashlib
import re
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO

PATCHES = REPO / "patches"

# Trailers every patch may carry (DEP-3 keys plus our Risk and Probe lines).
TRAILER_KEYS = ("Origin", "Bug", "Forwarded", "Applied-Upstream", "Risk", "Probe")
_TRAILER_RE = re.compile(r"^(%s):\s*(.*\S)\s*$" % "|".join(TRAILER_KEYS))
_DIFF_RE = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.M)
_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")


@dataclass
class Hunk:
    old_start: int
    old_len: int
    header: str  # the full "@@ ... @@ context" line


@dataclass
class Patch:
    name: str
    path: Path
    subject: str
    date: str
    trailers: dict[str, list[str]] = field(default_factory=dict)
    hunks: dict[str, list[Hunk]] = field(default_factory=dict)  # file -> hunks

    @property
    def files(self) -> list[str]:
        return list(self.hunks)

    @property
    def origin(self) -> str:
        return (self.trailers.get("Origin") or ["(missing)"])[0]

    @property
    def probes(self) -> list[str]:
        return self.trailers.get("Probe", [])

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def locate(self, file: str, line: int | None) -> str:
        """Describe the hunk of `file` that covers old line `line` (as git reports it)."""
        hunks = self.hunks.get(file, [])
        for number, hunk in enumerate(hunks, 1):
            if line is None or hunk.old_start <= line <= hunk.old_start + max(hunk.old_len, 1):
                return f"hunk #{number} of {len(hunks)}: {hunk.header.strip()}"
        return f"{len(hunks)} hunk(s)"


def parse_patch(path: Path) -> Patch:
    text = path.read_text(encoding="utf-8", errors="replace")
    head, sep, body = text.partition("\n\n")
    if not sep or "\nSubject:" not in "\n" + head:
        raise OverlayError(f"{path}: not a git format-patch file (no mail header with Subject)")
    headers = HeaderParser().parsestr(head + "\n\n")
    subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", " ".join(headers["Subject"].split()))
    first_diff = _DIFF_RE.search(body)
    split = first_diff.start() if first_diff else len(body)
    message, diff = body[:split].split("\n---\n")[0], body[split:]
    patch = Patch(path.name, path, subject, headers.get("Date", ""))
    for line in message.splitlines():
        if m := _TRAILER_RE.match(line):
            patch.trailers.setdefault(m[1], []).append(m[2])
    current = None
    for line in diff.splitlines():
        if m := _DIFF_RE.match(line):
            current = m[2]
            patch.hunks.setdefault(current, [])
        elif current and (m := _HUNK_RE.match(line)):
            patch.hunks[current].append(Hunk(int(m[1]), int(m[2] or 1), line))
    if not patch.hunks:
        raise OverlayError(f"{path}: patch contains no diff (it would apply empty)")
    return patch


def read_series(patches_dir: Path = PATCHES) -> list[Patch]:
    """Patches named by `series`, in order. quilt format: one name a line, '#' comments."""
    series_file = patches_dir / "series"
    if not series_file.exists():
        raise OverlayError(f"{series_file}: missing series file")
    patches, seen = [], set()
    for number, raw in enumerate(series_file.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split()[0]  # quilt allows options after the name (-p1); we use none
        if name in seen:
            raise OverlayError(f"{series_file}:{number}: {name} is listed twice")
        seen.add(name)
        path = patches_dir / name
        if not path.is_file():
            raise OverlayError(f"{series_file}:{number}: names {name}, which does not exist "
                               f"in {patches_dir}")
        patches.append(parse_patch(path))
    return patches


def series_digest(patches: list[Patch], patches_dir: Path = PATCHES,
                  hashes: dict[str, str] | None = None) -> str:
    """One hash over the series file and every patch it names (`hashes`: patch name ->
    sha256, when the caller hashed them already)."""
    digest = hashlib.sha256((patches_dir / "series").read_bytes())
    for patch in patches:
        sha256 = hashes[patch.name] if hashes else patch.sha256()
        digest.update(patch.name.encode() + b"\0" + sha256.encode())
    return digest.hexdigest()
