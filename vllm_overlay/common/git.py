"""The one git runner: fixed identity, no system or user config, a clear error on failure."""

import os
import subprocess
from pathlib import Path

from vllm_overlay.common.errors import OverlayError

IDENTITY = {"GIT_AUTHOR_NAME": "upstream", "GIT_AUTHOR_EMAIL": "upstream@invalid",
            "GIT_COMMITTER_NAME": "vllm-overlay", "GIT_COMMITTER_EMAIL": "overlay@invalid"}


def git(repo: Path, *args: str, check: bool = True, env: dict | None = None,
        ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **IDENTITY, "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": os.devnull, **(env or {})}
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env=full_env)
    if check and proc.returncode:
        raise OverlayError(f"git {' '.join(args)} failed in {repo}:\n"
                           f"{proc.stdout}{proc.stderr}".rstrip())
    return proc


def git_value(repo: Path, *args: str) -> str:
    """A query's output, or "" when git fails (not a checkout, no such config)."""
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""
