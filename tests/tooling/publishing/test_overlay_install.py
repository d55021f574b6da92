"""overlay_install.py (the Dockerfile's install step) and image_check.py (its proof).

A synthetic upstream vllm 0.19.1 is pip-installed into a venv (as upstream's image has
it), the synthetic overlay wheel is installed over it: the result must equal a fresh pip
install of the overlay wheel, while only the files that differ were written.
"""

import subprocess
from pathlib import Path

import pytest

from tests.tooling.helpers.deploy import build_wheel, make_venv, package_files, pip, sha256, site_packages
from vllm_overlay.publishing.in_image import image_check
from vllm_overlay.common.paths import REPO

INSTALLER = REPO / "vllm_overlay/publishing/in_image" / "overlay_install.py"
CHECKER = REPO / "vllm_overlay/publishing/in_image" / "image_check.py"
NEW = "0.19.1+test.1"


def tree(site: Path) -> dict[str, str]:
    """Installed files of vllm (package and dist-info content), by relative path."""
    skip = ("INSTALLER", "RECORD", "REQUESTED", "direct_url.json")
    return {str(p.relative_to(site)): sha256(p) for p in site.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.name not in skip
            and p.relative_to(site).parts[0].startswith("vllm")}


@pytest.fixture
def wheels(tmp_path):
    old_files = package_files("0.19.1", with_symbol=False)
    old_files["vllm/removed_later.py"] = b"gone = True\n"
    old = build_wheel(tmp_path, "0.19.1", files=old_files)
    new_files = package_files(NEW, with_symbol=True)
    new_files["vllm/added.py"] = b"added = True\n"
    new = build_wheel(tmp_path, NEW, files=new_files)
    return old, new


@pytest.fixture
def upstream_venv(tmp_path, wheels):
    python = make_venv(tmp_path / "upstream")
    proc = pip(python, "install", "--no-deps", "--no-index", "--compile", str(wheels[0]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return python


def run(python: Path, script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), str(script), *args], capture_output=True, text=True,
                          timeout=120)


def test_overlay_install_equals_a_fresh_install_and_writes_only_changes(
        tmp_path, wheels, upstream_venv):
    site = site_packages(upstream_venv)
    binary_inode = (site / "vllm/_C.abi3.so").stat().st_ino
    proc = run(upstream_venv, INSTALLER, str(wheels[1]), "--sha256", sha256(wheels[1]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # changed: _version.py, compilation.py; added: added.py; removed: removed_later.py
    assert "3 file(s) written, 4 unchanged kept, 2 removed" in proc.stdout  # .py and its .pyc
    assert not list(site.glob("vllm/__pycache__/removed_later.*.pyc"))
    # bytecode stays for every module still shipped, fresh for the changed ones
    compiled = subprocess.run([str(upstream_venv), "-c", "import importlib.util as u, sys; "
                               "print(u.cache_from_source(sys.argv[1]))",
                               str(site / "vllm/config/compilation.py")],
                              capture_output=True, text=True).stdout.strip()
    assert Path(compiled).is_file()
    assert image_check.SERIES_SYMBOL[2].encode() in Path(compiled).read_bytes()
    assert (site / "vllm/_C.abi3.so").stat().st_ino == binary_inode  # untouched
    fresh = make_venv(tmp_path / "fresh")
    assert pip(fresh, "install", "--no-deps", "--no-index", str(wheels[1])).returncode == 0
    assert tree(site) == tree(site_packages(fresh))
    show = pip(upstream_venv, "show", "vllm")
    assert f"Version: {NEW}" in show.stdout
    # the console script of the old install is still there and still recorded
    assert (upstream_venv.parent / "vllm").exists()
    check = run(upstream_venv, CHECKER, "--version", NEW, "--import")
    assert check.returncode == 0, check.stdout + check.stderr
    assert pip(upstream_venv, "uninstall", "-y", "vllm").returncode == 0
    leftovers = [p for p in site.rglob("*") if p.is_file() and "vllm" in str(p.relative_to(site))]
    assert leftovers == [] and not (upstream_venv.parent / "vllm").exists()


def test_a_wrong_sha256_changes_nothing(wheels, upstream_venv):
    site = site_packages(upstream_venv)
    before = tree(site)
    proc = run(upstream_venv, INSTALLER, str(wheels[1]), "--sha256", "0" * 64)
    assert proc.returncode == 1 and "sha256 differs" in proc.stderr
    assert tree(site) == before


def test_image_check_refuses_upstream(upstream_venv):
    proc = run(upstream_venv, CHECKER, "--version", NEW, "--import")
    assert proc.returncode == 1
    assert f"expected only vllm-{NEW}.dist-info" in proc.stderr
    assert f"no {image_check.symbol_name()}" in proc.stderr


def test_image_check_import_mode_sees_a_wrong_runtime_version(tmp_path, upstream_venv):
    """Files say one thing, the imported module another: --import catches it."""
    wheel = build_wheel(tmp_path, NEW)
    assert run(upstream_venv, INSTALLER, str(wheel)).returncode == 0
    site = site_packages(upstream_venv)
    (site / "vllm/__init__.py").write_text("__version__ = '0.19.1'\n")
    assert run(upstream_venv, CHECKER, "--version", NEW).returncode == 0
    proc = run(upstream_venv, CHECKER, "--version", NEW, "--import")
    assert proc.returncode == 1 and "vllm.__version__ is '0.19.1'" in proc.stderr
