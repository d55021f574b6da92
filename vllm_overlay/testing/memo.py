"""Test stages that rerun only when their inputs changed, as a build cache does for tests.

A stage that passed is recorded under the sha256 of its inputs; a later run with the same
inputs reports it as skipped, with the date of that pass, instead of running it again.
Any change to an input (one byte of the checkout for the tooling tests; the wheels, the
locked runtime, the tests or the harness for the others) runs it again, and
VLLM_OVERLAY_RERUN=1 runs every stage whatever was recorded.
"""

import datetime
import hashlib
import json
import os
import subprocess
from pathlib import Path

from vllm_overlay.common.fs import atomic_write
from vllm_overlay.common.paths import cache_dir

RERUN = "VLLM_OVERLAY_RERUN"


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def files_digest(root: Path, paths: list[str]) -> str:
    """sha256 over the names and bytes of `paths` (relative to root; folders: their files)."""
    files = []
    for name in paths:
        path = root / name
        files += [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    sha = hashlib.sha256()
    for file in files:
        sha.update(os.path.relpath(file, root).encode() + b"\0" + file.read_bytes() + b"\0")
    return sha.hexdigest()


def checkout_digest(repo: Path) -> str | None:
    """Every file of the checkout git does not ignore, by name and bytes (None outside git:
    then nothing is ever skipped)."""
    proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          cwd=repo, capture_output=True)
    if proc.returncode:
        return None
    names = sorted({n for n in proc.stdout.decode().split("\0") if n and (repo / n).is_file()})
    return files_digest(repo, names)


def _marker(stage: str, key: str) -> Path:
    return cache_dir() / "passed-stages" / f"{stage.replace(' ', '-')}-{key[:24]}.json"


def passed(stage: str, key: str | None) -> str | None:
    """When `stage` passed with inputs `key` on this machine (None: never, or rerun asked)."""
    if key is None or os.environ.get(RERUN):
        return None
    marker = _marker(stage, key)
    return json.loads(marker.read_text())["passed"] if marker.is_file() else None


def record(stage: str, key: str | None) -> None:
    if key is None:
        return
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    marker = _marker(stage, key)
    marker.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(marker, json.dumps({"stage": stage, "key": key, "passed": when}) + "\n")
