"""Fixtures of the tooling tests: a synthetic upstream release per test (helpers/synthetic.py:
a small sdist, a wheel, a repo, patches), and the once_per_inputs hooks
(helpers/once_per_inputs.py).

Everything is built by the tests themselves; nothing is downloaded (the `network` marker
selects the few tests that use the real pinned artifacts).
"""

import json
from pathlib import Path

import pytest

# The once_per_inputs marker: its hooks (the module says what a test's inputs are).
from tests.tooling.helpers.once_per_inputs import (  # noqa: F401
    pytest_runtest_makereport, pytest_runtest_setup)
from tests.tooling.helpers.synthetic import (SYNTH_LOCK, UPSTREAM, VERSION, WHEEL_NAME, Synth,
                                             artifact, link_supply_venv, make_sdist, make_wheel,
                                             visible_files)


@pytest.fixture(scope="session")
def supply_venv() -> Path:
    """The real cache's supply venv (the SBOM library; created once), for test caches."""
    from vllm_overlay.wheelbuild import supplyenv

    return supplyenv.bin_dir().parent


@pytest.fixture(autouse=True)
def real_wheelhouse_untouched():
    """No test may write into the repository's wheelhouse/: `make publish` uploads every
    wheel SHA256SUMS lists there. Tests build into a temporary wheelhouse."""
    house = Path(__file__).resolve().parents[2] / "wheelhouse"
    before = visible_files(house)
    yield
    assert visible_files(house) == before, \
        f"this test changed {house} (use a temporary wheelhouse)"


@pytest.fixture
def synth(tmp_path, monkeypatch, supply_venv) -> Synth:
    cache = tmp_path / "cache"
    link_supply_venv(cache, supply_venv)
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(cache))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    dist, repo = tmp_path / "dist", tmp_path / "repo"
    dist.mkdir()
    (repo / "patches").mkdir(parents=True)
    make_sdist(dist / f"vllm-{UPSTREAM}.tar.gz")
    make_wheel(dist / WHEEL_NAME)
    (repo / "VERSION").write_text(VERSION + "\n")
    lock = {"project": "vllm", "version": UPSTREAM, "released": "2024-01-02T03:04:05Z",
            "artifacts": {"sdist": artifact(dist / f"vllm-{UPSTREAM}.tar.gz"),
                          "wheel-x86_64": artifact(dist / WHEEL_NAME)}}
    (repo / "upstream.lock.json").write_text(json.dumps(lock, indent=2))
    (repo / "patches" / "series").write_text("# empty\n")
    (repo / "locks").mkdir()
    (repo / "locks" / "runtime-x86_64.txt").write_text(SYNTH_LOCK)
    return Synth(tmp_path, repo, dist, cache)
