"""Where things live: the repository, the download/venv cache, the wheelhouse."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_TREES = Path("work") / "build"  # where make wheel applies the series, relative to REPO
DEV_TREE = REPO / "work" / "tree"
REPORTS = REPO / "reports"  # make test, status, bisect and rebase write their reports here  # make apply / export-patches: the tree a person edits


def cache_dir() -> Path:
    """Cache for large downloads and environments, outside the repository.

    VLLM_OVERLAY_CACHE overrides; else $XDG_CACHE_HOME/vllm-overlay or ~/.cache/vllm-overlay.
    """
    if env := os.environ.get("VLLM_OVERLAY_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vllm-overlay"
