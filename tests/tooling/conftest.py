"""Fixtures of the tooling tests: a synthetic upstream release per test (helpers/synthetic.py:
a small sdist, a wheel, a repo, patches), and the once_per_inputs hooks
(helpers/once_per_inputs.py).

Everything is built by the tests themselves; nothing is downloaded (the `network` marker
selects the few tests that use the real pinned artifacts).
"""

import json
import os
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


@pytest.fixture(scope="session")
def sbom_renders(tmp_path_factory) -> Path:
    """Where this process keeps the `cdx render` outputs it made (helpers/sbom_reuse.py);
    under xdist each worker has its own."""
    return tmp_path_factory.mktemp("sbom-renders")


@pytest.fixture(autouse=True)
def sbom_rendered_once_per_input(request, monkeypatch):
    """Each distinct SBOM input rendered once for real (sbom_reuse.py), but in the tests
    marked `real_sbom_render` (determinism, the supply venv's own failure paths)."""
    from tests.tooling.helpers import sbom_reuse
    from vllm_overlay.wheelbuild import supplyenv

    if request.node.get_closest_marker("real_sbom_render"):
        monkeypatch.delenv(sbom_reuse.ENV, raising=False)
        return
    folder = request.getfixturevalue("sbom_renders")
    monkeypatch.setenv(sbom_reuse.ENV, str(folder))
    monkeypatch.setattr(supplyenv, "run_module", sbom_reuse.reusing(supplyenv.run_module, folder))


# `pip config list` (pipindex.pip_index_urls: pip's index URLs) costs a pip start, ~0.2 s of
# CPU, and the rebase, status and lock code asks it hundreds of times a session with the same
# answer. Its answer depends only on the environment (PIP_*, HOME, XDG_*, VIRTUAL_ENV ...)
# and pip's configuration files: each test process asks pip once per distinct pair of those.
_PIP_INDEXES: dict[tuple, list[str]] = {}


def _pip_config_files() -> tuple:
    import sys

    home = Path.home()
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    dirs = os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    paths = [*(Path(d) / "pip" / "pip.conf" for d in dirs.split(":")), Path("/etc/pip.conf"),
             home / ".pip" / "pip.conf", Path(xdg) / "pip" / "pip.conf",
             Path(sys.prefix) / "pip.conf"]
    stats = []
    for path in paths:
        try:
            st = path.stat()
            stats.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            stats.append((str(path), None))
    return tuple(stats)


@pytest.fixture(autouse=True)
def pip_config_read_once_per_environment(monkeypatch):
    from vllm_overlay.common import pipindex

    real = pipindex.pip_index_urls

    def pip_index_urls() -> list[str]:
        key = (tuple(sorted(os.environ.items())), _pip_config_files())
        if key not in _PIP_INDEXES:
            _PIP_INDEXES[key] = real()
        return list(_PIP_INDEXES[key])

    monkeypatch.setattr(pipindex, "pip_index_urls", pip_index_urls)


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
