"""wheelhouse/simple/: the PEP 503 index that `make wheel` writes from SHA256SUMS."""

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.tooling.helpers.deploy import (build_wheel, make_venv, pip, sha256, site_packages,
                                          write_sums)
from tests.tooling.helpers.synthetic import SYNTH_LOCK, link_supply_venv
from vllm_overlay.common import index
from vllm_overlay.wheelbuild import overlay_mode
from vllm_overlay.publishing.in_image.image_check import installed_problems
from vllm_overlay.common.paths import REPO

VERSION = "0.19.1+test.1"


@pytest.fixture
def house(tmp_path):
    house = tmp_path / "wheelhouse"
    house.mkdir()
    wheel = build_wheel(house, VERSION)
    write_sums(house, wheel)
    return house


def pip_install_from(python: Path, index_url: str) -> subprocess.CompletedProcess:
    return pip(python, "install", "--no-deps", "--no-cache-dir", "--index-url", index_url,
               "vllm==0.19.1")


def test_file_index_installs_the_local_version(house, tmp_path):
    # a file listed in SHA256SUMS but gone from the wheelhouse must not be linked
    with open(house / "SHA256SUMS", "a") as sums:
        sums.write(f"{'0' * 64}  vllm-0.19.1+gone.1-cp38-abi3-manylinux_2_31_x86_64.whl\n")
    assert index.sync(house) is True
    page = (house / "simple" / "vllm" / "index.html").read_text()
    wheel = next(house.glob("*.whl"))
    assert f"#sha256={sha256(wheel)}" in page and "gone" not in page
    assert 'href="vllm/"' in (house / "simple" / "index.html").read_text()
    python = make_venv(tmp_path / "venv")
    proc = pip_install_from(python, (house / "simple").as_uri())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert installed_problems(site_packages(python), VERSION) == []


def test_pip_checks_the_sha256_fragment(house, tmp_path):
    index.sync(house)
    wheel = next(house.glob("*.whl"))
    with zipfile.ZipFile(wheel, "a") as zf:  # the file changes after the index was written
        zf.writestr("vllm/extra.py", "x = 1\n")
    proc = pip_install_from(make_venv(tmp_path / "venv"), (house / "simple").as_uri())
    assert proc.returncode != 0
    assert "hash" in (proc.stdout + proc.stderr).lower()


def test_sync_writes_only_changes_and_is_atomic(house):
    assert index.sync(house) is True
    page = house / "simple" / "vllm" / "index.html"
    before = page.stat().st_mtime_ns, page.read_text()
    assert index.sync(house) is False
    assert (page.stat().st_mtime_ns, page.read_text()) == before
    # a second wheel, and the sync dies just before its rename: the old page stays whole
    second = build_wheel(house, "0.19.1+test.2")
    write_sums(house, next(house.glob("*test.1*.whl")), second)
    proc = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                           "from vllm_overlay.common import index; index.sync(Path(sys.argv[1]))",
                           str(house)], cwd=REPO,
                          env={**os.environ, "VLLM_OVERLAY_FAULT": "before-rename:index.html"})
    assert proc.returncode == 137
    assert page.read_text() == before[1]
    assert index.sync(house) is True
    assert second.name in page.read_text()
    assert not list(house.glob("simple/**/.tmp-*"))


def test_bad_sha256sums_line_is_named(house):
    (house / "SHA256SUMS").write_text("not-a-hash  vllm.whl\n")
    with pytest.raises(Exception, match=r"SHA256SUMS:1: not a `<sha256>  <filename>` line"):
        index.sync(house)


# --- the hook in wheelhouse.store, on a small synthetic upstream --------------------

def synthetic_upstream(root: Path, cache: Path) -> None:
    """VERSION + lock naming a tiny sdist and wheel, placed in the sha256 cache."""
    files = {"vllm/__init__.py": b"from ._version import __version__\n",
             "vllm/_version.py": b"__version__ = version = '0.19.1'\n"}
    upstream = build_wheel(root, "0.19.1", files=files, requires=())  # SYNTH_LOCK: no runtime
    sdist = root / "vllm-0.19.1.tar.gz"
    src = root / "src" / "vllm-0.19.1"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(src, arcname="vllm-0.19.1")
    artifacts = {}
    for key, path in (("sdist", sdist), ("wheel-x86_64", upstream)):
        digest = sha256(path)
        (cache / "sha256").mkdir(parents=True, exist_ok=True)
        path.rename(cache / "sha256" / digest)
        artifacts[key] = {"filename": path.name, "size": (cache / "sha256" / digest).stat().st_size,
                          "sha256": digest}
    (root / "VERSION").write_text("0.19.1+test.1\n")
    (root / "upstream.lock.json").write_text(json.dumps(
        {"project": "vllm", "version": "0.19.1", "released": "2026-04-18T00:00:00Z",
         "artifacts": artifacts}))
    (root / "patches").mkdir()
    (root / "patches" / "series").write_text("")


def test_make_wheel_writes_and_restores_the_index(tmp_path, monkeypatch, supply_venv):
    root, cache = tmp_path / "repo", tmp_path / "cache"
    root.mkdir()
    synthetic_upstream(root, cache)
    link_supply_venv(cache, supply_venv)
    (root / "locks").mkdir()
    (root / "locks" / "runtime-x86_64.txt").write_text(SYNTH_LOCK)
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(cache))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1776470400")
    house = root / "wheelhouse"
    built = overlay_mode.build_overlay_wheel("x86_64", house, root / "patches", root)
    page = house / "simple" / "vllm" / "index.html"
    assert f"{index.read_sums(house)[built.name]}" in page.read_text()
    assert built.name.replace("+", "%2B") in page.read_text()
    # the no-op path (nothing changed) puts a missing index back
    (house / "simple" / "index.html").unlink()
    page.unlink()
    assert overlay_mode.build_overlay_wheel("x86_64", house, root / "patches", root) == built
    assert page.is_file() and (house / "simple" / "index.html").is_file()
    python = make_venv(tmp_path / "venv")
    proc = pip(python, "install", "--no-deps", "--index-url", (house / "simple").as_uri(),
               "vllm==0.19.1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Successfully installed vllm-0.19.1+test.1" in proc.stdout
