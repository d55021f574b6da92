"""`pytest`: run pytest in the cached tools venv (created on first use)."""

import argparse
import subprocess

from vllm_overlay.common import venvs
from vllm_overlay.common.paths import REPO
from vllm_overlay.common.requirements import requirement_lines

TOOLS_REQUIREMENTS = REPO / "tests" / "requirements-tools.txt"


def add(sub) -> None:
    p = sub.add_parser("pytest", help="run pytest in the tools venv (tooling tests)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def run(args) -> int:
    venv = venvs.ensure_venv("tools", requirement_lines(TOOLS_REQUIREMENTS.read_text()))
    return subprocess.run([str(venvs.python_of(venv)), "-m", "pytest", *args.pytest_args],
                          cwd=REPO).returncode
