"""Per-wheel venvs (1.1 GB each) do not pile up in the cache, and a full disk is named."""

import os
import time

import pytest

from vllm_overlay.common.errors import OverlayError
from vllm_overlay.testing import testenv

HOUR = 3600


@pytest.fixture
def venvs(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path))
    root = tmp_path / "venvs"

    def make(name: str, idle_hours: float):
        marker = root / name / ".complete"
        marker.parent.mkdir(parents=True)
        marker.write_text("x\n")
        used = time.time() - idle_hours * HOUR
        os.utime(marker, (used, used))
        return marker.parent

    return make


def test_only_the_most_recently_used_are_kept(venvs):
    made = [venvs(f"vllm-{i:016x}-over-runtime-x", idle_hours=2 + i) for i in range(7)]
    testenv.prune_vllm_envs(keep=3)
    assert [venv.exists() for venv in made] == [True] * 3 + [False] * 4


def test_venvs_in_use_by_another_tree_are_never_removed(venvs):
    made = [venvs(f"vllm-{i:016x}-over-runtime-x", idle_hours=0.1 * i) for i in range(7)]
    testenv.prune_vllm_envs(keep=3)
    assert all(venv.exists() for venv in made)


def test_venvs_unused_for_days_go_even_under_the_bound(venvs):
    fresh, stale = venvs("vllm-a-over-b", idle_hours=1), venvs("vllm-c-over-b", idle_hours=80)
    other = venvs("runtime-0123", idle_hours=500)  # the base venv is not a per-wheel venv
    testenv.prune_vllm_envs()
    assert fresh.exists() and not stale.exists() and other.exists()


def test_a_full_disk_is_refused_before_the_install_with_the_cache_named(tmp_path):
    with pytest.raises(OverlayError, match=f"{tmp_path}: .* GB free, .*vllm-\\*-over-\\*"):
        testenv.check_free_space(tmp_path, needed=2**62)
    testenv.check_free_space(tmp_path, needed=1)
