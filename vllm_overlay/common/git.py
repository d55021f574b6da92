"""The one git runner: fixed identity, no system or user config, a clear error on failure."""

import os
import subprocess
from pathlib import Path

from vllm_overlay.common.errors import OverlayError

IDENTITY = {"GIT_AUTHOR_NAME": "upstream", "GIT_AUTHOR_EMAIL": "upstream@invalid",
            "GIT_COMMITTER_NAME": "vllm-overlay", "GIT_COMMITTER_EMAIL": "overlay@invalid"}


def environment(more: dict | None = None) -> dict:
    """The environment every git command runs in: the identity, no system or user config."""
    return {**os.environ, **IDENTITY, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull, **(more or {})}


def git(repo: Path, *args: str, check: bool = True, env: dict | None = None,
        input: str | bytes | None = None) -> subprocess.CompletedProcess:
    """Run git in repo; bytes input gives bytes output (stdout and stderr)."""
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                          text=not isinstance(input, bytes), env=environment(env), input=input)
    if check and proc.returncode:
        said = proc.stdout + proc.stderr
        said = said.decode(errors="replace") if isinstance(said, bytes) else said
        raise OverlayError(f"git {' '.join(args)} failed in {repo}:\n{said}".rstrip())
    return proc


def git_query(repo: Path, *args: str) -> str | None:
    """A query on a person's checkout, with their git config (safe.directory and the
    like); its output, or None when git fails (not a checkout, no such config, no git)."""
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_value(repo: Path, *args: str) -> str:
    """A query's output, or "" when git fails (not a checkout, no such config)."""
    return git_query(repo, *args) or ""


def version() -> str:
    """`git --version` (part of cache keys: another git may merge differently)."""
    proc = subprocess.run(["git", "--version"], capture_output=True, text=True)
    return proc.stdout.strip()
