"""What the benchmarks share: the repository on sys.path, a scratch copy of the build's inputs,
and the --smoke flag (CI: tests/tooling/test_bench_smoke.py).

Each benchmark is a script (`python3 benchmarks/<name>.py`), so this module is imported by
its plain name (the script's own folder is sys.path[0]).
"""

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Everything of the repository that a build reads (pin, series, the hash-locked runtime that
# the SBOM and the constraints beside the wheel are made from). A clean clone has all four.
BUILD_INPUTS = ("VERSION", "upstream.lock.json", "patches", "locks")
BUILD_OUTPUTS = ("wheelhouse", "work")  # what a build writes under its repo


def scratch_repo(root: Path, repo: Path = REPO, keep_builds: bool = False) -> Path:
    """A fresh copy of the build's inputs at `root`, so the bench's builds are its own.

    keep_builds: keep what earlier builds left at `root` (its wheelhouse/ and work/, the
    build tree), so an unchanged series is a no-op `make wheel` there; all else is replaced.
    """
    if not keep_builds:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.name in BUILD_OUTPUTS:
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    for name in BUILD_INPUTS:
        src, dest = repo / name, root / name
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copy(src, dest)
    return root


def parser(doc: str, smoke_help: str) -> argparse.ArgumentParser:
    """The common command line: --smoke runs one quick pass (smallest cases, one repetition)
    that CI runs to prove the benchmark still works; its figures mean little."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help=smoke_help)
    return p
