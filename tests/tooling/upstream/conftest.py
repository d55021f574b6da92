"""Fixtures of the status / bisect / rebase / drift tests: the synthetic upstream releases
(tests/tooling/helpers/upstream_releases.py says what they hold) and the faked resolver."""

import pytest

from tests.tooling.helpers.upstream_releases import (PRE, VERSIONS, NetworkLock, Upstream,
                                                     make_sdist, pinned_repo, release_files,
                                                     write_patches)
from vllm_overlay.wheelbuild import constraints, lockmeta
from vllm_overlay.common import pin


@pytest.fixture
def network_lock(monkeypatch) -> NetworkLock:
    fake = NetworkLock()
    monkeypatch.setattr(constraints, "compile_lock", fake.compile_lock)
    monkeypatch.setattr(lockmeta, "package_metadata", fake.package_metadata)
    return fake


@pytest.fixture(autouse=True)
def no_resolver_on_the_network(request):
    """No test but a network one resolves against a real index: `make lock`'s uv (and the
    installability check, which runs the same uv) is the fake NetworkLock."""
    if request.node.get_closest_marker("network") is None:
        request.getfixturevalue("network_lock")


@pytest.fixture
def synth_upstream(tmp_path, monkeypatch) -> Upstream:
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path / "cache"))
    dist = tmp_path / "dist"
    project_index = tmp_path / "index" / "vllm"
    project_index.mkdir(parents=True)
    dist.mkdir()
    links = []
    for i, version in enumerate(VERSIONS):
        make_sdist(dist / f"vllm-{version}.tar.gz", version, release_files(i))
    make_sdist(dist / f"vllm-{PRE}.tar.gz", PRE, release_files(len(VERSIONS)))
    for path in sorted(dist.iterdir()):
        links.append(f'<a href="{path.as_uri()}">{path.name}</a>')
    (project_index / "index.html").write_text("<html><body>\n" + "\n".join(links) + "\n</body>")
    repo, sdist = pinned_repo(tmp_path, dist / f"vllm-{VERSIONS[0]}.tar.gz", VERSIONS[0])
    write_patches(repo / "patches", sdist, tmp_path)
    return Upstream(tmp_path, (tmp_path / "index").as_uri(), dist, pin.load(repo),
                    repo / "patches")
