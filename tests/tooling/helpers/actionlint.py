"""actionlint on a GitHub Actions workflow (the tools venv installs it)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def actionlint() -> str:
    beside = Path(sys.executable).parent / "actionlint"  # installed into the tools venv
    found = str(beside) if beside.exists() else shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint missing: install tests/requirements-tools.txt")
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-no-color", str(path)], capture_output=True,
                          text=True)
