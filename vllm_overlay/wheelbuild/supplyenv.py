"""The supply venv: the third-party tools of the supply-chain outputs, run as subprocesses.

The pipeline itself stays stdlib-only; the CycloneDX library (cdx.py) and uv (`make lock`)
run in a venv the project creates in the cache from requirements-supply.lock (the tools of
requirements-supply.txt and all they need, hash-locked by `make lock`; seconds, once per
machine).
"""

import os
import subprocess
from pathlib import Path

from vllm_overlay.common import log, venvs
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO

REQUIREMENTS = Path(__file__).with_name("requirements-supply.txt")  # the tools, pinned
LOCK = Path(__file__).with_name("requirements-supply.lock")  # all they need, with hashes


# The exit status with which a tool says "the input has problems" (an invalid SBOM, a lock
# that is not closed). Anything else that is not 0 (1: an uncaught exception, such as the
# ImportError of a broken venv) means the tool did not run: never read as a verdict.
INVALID = 3
_log = log.stage("supply")


def venv(rebuild: bool = False) -> Path:
    """The supply venv: exactly the hash-locked LOCK (so the SBOM bytes do not depend on
    what the index holds on the day the venv is made)."""
    return venvs.ensure_locked_venv("supply", [LOCK], rebuild=rebuild)


def bin_dir() -> Path:
    return venvs.python_of(venv()).parent


def _run(python: Path, args: list[str], stdin: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        return subprocess.run([str(python), *args], input=stdin, capture_output=True, text=True,
                              env=env, cwd=REPO)
    except OSError as exc:  # the venv's interpreter is gone (its base Python was removed)
        return subprocess.CompletedProcess(args, 127, "", f"{python}: {exc}")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def broken(venv: Path, module: str) -> str | None:
    """Why the venv cannot run the tool `module` (its interpreter does not start, or the tool
    does not import: a package missing or damaged), or None when it can."""
    proc = _run(venvs.python_of(venv), ["-c", f"import {__package__}.{module}"], None)
    return None if proc.returncode == 0 else _last_line(proc.stderr)


def run_module(module: str, args: list[str], stdin: str) -> subprocess.CompletedProcess:
    """`python -m <this package>.<module> args` in the supply venv, text in and out; its
    returncode is 0 or INVALID. A venv that cannot run the tool is named and rebuilt once; a
    tool that fails otherwise is an error naming the venv, never an answer about the input."""
    for attempt in (1, 2):
        where = venv()
        proc = _run(venvs.python_of(where), ["-m", f"{__package__}.{module}", *args], stdin)
        if proc.returncode in (0, INVALID):
            return proc
        why = broken(where, module)
        if why is None:
            raise OverlayError(f"{module} {' '.join(args)} failed (exit {proc.returncode}) in "
                               f"the supply venv {where}: {_last_line(proc.stderr)}")
        if attempt == 2:
            raise OverlayError(f"the supply venv {where} is still broken after rebuilding it "
                               f"({module} does not run: {why}); delete it and check {LOCK}")
        _log.warning(f"the supply venv {where} is broken ({module} does not run: {why}); "
                     f"rebuilding it")
        venv(rebuild=True)
    raise AssertionError("unreachable")
