"""The supply venv: the third-party tools of the supply-chain outputs, run as subprocesses.

The pipeline itself stays stdlib-only; the CycloneDX library (cdx.py) and uv (`make lock`)
run in a venv the project creates in the cache from requirements-supply.txt (seconds,
once per machine).
"""

import os
import subprocess
from pathlib import Path

from vllm_overlay.common import venvs
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO
from vllm_overlay.common.requirements import requirement_lines

REQUIREMENTS = Path(__file__).with_name("requirements-supply.txt")


def bin_dir() -> Path:
    reqs = requirement_lines(REQUIREMENTS.read_text())
    return venvs.python_of(venvs.ensure_venv("supply", reqs)).parent


def run_module(module: str, args: list[str], stdin: str) -> subprocess.CompletedProcess:
    """`python -m <this package>.<module> args` in the supply venv, text in and out."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([str(bin_dir() / "python"), "-m", f"{__package__}.{module}", *args],
                          input=stdin, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode not in (0, 1):
        raise OverlayError(f"{module} {' '.join(args)} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr.strip()}")
    return proc
