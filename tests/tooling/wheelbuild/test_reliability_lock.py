"""`make lock` (issue 27, case 4): it hashes the upstream wheel whose METADATA it reads, and
runs uv with pip's index settings and its cache inside VLLM_OVERLAY_CACHE. No network: uv
is a stand-in script that records its command line and environment."""

import argparse
import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from vllm_overlay.common import blobcache
from vllm_overlay.wheelbuild import constraints, fetch, lockmeta, supplyenv
from vllm_overlay.commands import lock as lock_command
from vllm_overlay.common import pin
from vllm_overlay.common.errors import OverlayError
from tests.tooling.helpers.synthetic import UPSTREAM, WHEEL_NAME


def wheel_with(path: Path, requirement: str) -> Path:
    """A wheel whose METADATA (stored, not compressed) names `requirement`: two of these
    with requirements of one length have the same size, member for member."""
    info = f"vllm-{UPSTREAM}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in {"vllm/__init__.py": b"", f"{info}/METADATA": (
                f"Metadata-Version: 2.1\nName: vllm\nVersion: {UPSTREAM}\n"
                f"Requires-Dist: {requirement}\n").encode(), f"{info}/RECORD": b""}.items():
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 2, 3, 4, 6)), data)
    return path


def test_lock_hashes_the_wheel_it_reads_not_the_verified_marker(synth, monkeypatch, tmp_path):
    good = wheel_with(tmp_path / "good.whl", "torch==2.10.0")
    evil = wheel_with(tmp_path / "evil.whl", "evilx==2.10.0")
    assert good.stat().st_size == evil.stat().st_size
    lock_file = synth.repo / "upstream.lock.json"
    data = json.loads(lock_file.read_text())
    data["artifacts"]["wheel-x86_64"] = {"filename": WHEEL_NAME, "size": good.stat().st_size,
                                         "sha256": hashlib.sha256(good.read_bytes()).hexdigest()}
    lock_file.write_text(json.dumps(data))
    the_pin = pin.load(synth.repo)
    blob = blobcache.blob_path(the_pin.wheel("x86_64").sha256)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(good.read_bytes())
    assert fetch.fetch(the_pin.wheel("x86_64")) == blob  # hashed once: the marker is written
    before = blob.stat()
    with open(blob, "r+b") as fp:  # in place: same size, same inode, mtime put back
        fp.write(evil.read_bytes())
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert blobcache.cached(the_pin.wheel("x86_64")) == blob  # the marker still says verified
    seen = []
    monkeypatch.setattr(pin, "load", lambda repo=None: the_pin)
    monkeypatch.setattr(constraints, "make_lock", lambda arch, wheel, name, version: seen.append(
        constraints.requires_dist(wheel, version, name)))
    monkeypatch.setattr(lockmeta, "record", lambda arch: None)
    with pytest.raises(OverlayError, match=f"corrupt cache entry: {WHEEL_NAME}: sha256 "):
        lock_command.run(argparse.Namespace(arch="x86_64"))
    assert seen == []  # nothing was resolved from the changed METADATA ("evilx")


@pytest.fixture
def fake_uv(tmp_path, monkeypatch):
    """supply venv's bin/ with a `uv` that records argv + environment and writes the lock."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "uv-call.json"
    uv = bin_dir / "uv"
    uv.write_text("#!/usr/bin/env python3\nimport json, os, sys\n"
                  f"json.dump({{'argv': sys.argv[1:], 'env': dict(os.environ)}}, "
                  f"open({str(record)!r}, 'w'))\n"
                  "out = sys.argv[sys.argv.index('--output-file') + 1]\n"
                  "open(out, 'w').write('# locked\\n')\n")
    uv.chmod(uv.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(supplyenv, "bin_dir", lambda: bin_dir)
    return record


def test_lock_runs_uv_with_pips_index_settings_and_its_cache_in_ours(fake_uv, tmp_path,
                                                                      monkeypatch, capfd):
    cache = tmp_path / "cache"
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(cache))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://user:pw-secret@127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "http://127.0.0.2:9/a http://127.0.0.2:9/b")
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.3:9/not-pips")
    monkeypatch.delenv("UV_CACHE_DIR", raising=False)
    text = constraints.compile_lock(["runtime-x86_64.in"], "runtime-x86_64.txt", "x86_64",
                                    tmp_path)
    assert text == "# locked\n"
    call = json.loads(fake_uv.read_text())
    argv = call["argv"]
    assert argv[argv.index("--index-url") + 1] == "http://user:pw-secret@127.0.0.1:9/simple"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--extra-index-url"] == \
        ["http://127.0.0.2:9/a", "http://127.0.0.2:9/b"]
    # pip's best match over all its indexes, not uv's first index that has the package
    assert argv[argv.index("--index-strategy") + 1] == "unsafe-best-match"
    assert "UV_INDEX_URL" not in call["env"]  # pip's settings decide, not a stray uv one
    assert Path(call["env"]["UV_CACHE_DIR"]) == cache / "uv"
    assert "pw-secret" not in capfd.readouterr().err  # the echoed command is redacted
