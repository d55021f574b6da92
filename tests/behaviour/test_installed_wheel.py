"""The vLLM these behaviour tests import is the installed overlay wheel, not a source tree.

Run by `make test` in the overlay's test venv, which passes the wheel it installed in
VLLM_OVERLAY_WHEEL and the overlay version (the repository's VERSION) in VLLM_OVERLAY_VERSION.
"""

import base64
import csv
import hashlib
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import vllm

WHEEL = os.environ.get("VLLM_OVERLAY_WHEEL")
VERSION = os.environ.get("VLLM_OVERLAY_VERSION")
needs_make_test = pytest.mark.skipif(not (WHEEL and VERSION),
                                     reason="run by `make test` (VLLM_OVERLAY_WHEEL unset)")


@needs_make_test
def test_version_is_the_overlay_version():
    assert vllm.__version__ == VERSION
    assert importlib.metadata.version("vllm") == VERSION


def test_imported_from_site_packages():
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    location = Path(vllm.__file__).resolve()
    assert location.is_relative_to(site), f"vllm imported from {location}, not {site}"
    assert not (location.parent.parent / "setup.py").exists(), "a source tree, not an install"


# `vllm --version` builds every sub-command's parser, and those build a DeviceConfig, which
# fails on a machine without a GPU ("Failed to infer device type"). So the installed entry
# point script runs as it is, after selecting vLLM's CPU platform object.
_RUN_ON_CPU = """
import runpy, sys
import vllm.platforms
from vllm.platforms.cpu import CpuPlatform
vllm.platforms.current_platform = CpuPlatform()
sys.argv = [sys.argv[1], "--version"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@needs_make_test
def test_cli_prints_the_version():
    exe = shutil.which("vllm", path=str(Path(sys.executable).parent))
    assert exe, f"no `vllm` entry point beside {sys.executable}"
    assert Path(exe).read_text().startswith(f"#!{sys.executable}\n")
    out = subprocess.run([sys.executable, "-c", _RUN_ON_CPU, exe], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == VERSION


@needs_make_test
def test_installed_files_equal_the_wheel_record():
    with zipfile.ZipFile(WHEEL) as zf:
        info = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        rows = list(csv.reader(io.StringIO(zf.read(info).decode())))
    dist = importlib.metadata.distribution("vllm")
    root = Path(dist.locate_file(""))
    checked = 0
    for name, digest, _size in rows:
        if not digest:  # RECORD itself
            continue
        algo, _, expected = digest.partition("=")
        got = hashlib.new(algo, (root / name).read_bytes()).digest()
        assert base64.urlsafe_b64encode(got).rstrip(b"=").decode() == expected, name
        checked += 1
    assert checked > 1000  # the whole wheel, not a handful of files
