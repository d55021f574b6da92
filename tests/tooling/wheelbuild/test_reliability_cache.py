"""The cache under stress (issue 20): two cold runs creating one venv, a killed download's
.part file, a read-only cache and a full disk (the last two in a private mount namespace:
a read-only bind mount and a small tmpfs, since root ignores file modes)."""

import os
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.tooling.helpers import synthetic
from tests.tooling.helpers.synthetic import CHANGE_A
from vllm_overlay.common import blobcache
from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import pin
from vllm_overlay.common.paths import REPO


def test_two_cold_runs_create_one_venv_once(tmp_path):
    env = {**os.environ, "VLLM_OVERLAY_CACHE": str(tmp_path / "cache")}
    code = ("from vllm_overlay.common import venvs; v = venvs.ensure_venv('race', []); "
            "assert (v / '.complete').exists() and venvs.python_of(v).exists()")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                              stderr=subprocess.PIPE) for _ in range(3)]
    logs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], logs
    assert sum(log.count("venv: creating race environment") for log in logs) == 1, logs
    [venv] = (tmp_path / "cache" / "venvs").glob("race-*")
    assert subprocess.run([venv / "bin" / "python", "-c", "print(1)"]).returncode == 0


def file_index(synth, monkeypatch) -> None:
    index = synth.root / "index"
    (index / "vllm").mkdir(parents=True)
    links = "".join(f'<a href="{p.as_uri()}">{p.name}</a>\n' for p in synth.dist.iterdir())
    (index / "vllm" / "index.html").write_text(links)
    monkeypatch.setenv("PIP_INDEX_URL", index.as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")


def test_a_killed_downloads_part_file_is_removed_by_the_next_fetch(synth, monkeypatch):
    file_index(synth, monkeypatch)
    art = pin.load(synth.repo).sdist
    dead = subprocess.Popen(["true"])
    dead.wait()
    blob = blobcache.blob_path(art.sha256)
    blob.parent.mkdir(parents=True)
    part = blob.with_name(f"{blob.name}.part{dead.pid}")
    part.write_bytes(b"x" * 1000)  # what a SIGKILL in the middle of download() leaves
    with subprocess.Popen(["sleep", "60"]) as other:  # a download still running elsewhere
        busy = blob.with_name(f"{blob.name}.part{other.pid}")
        busy.write_bytes(b"y")
        assert fetch.fetch(art) == blob
        other.kill()
    assert not part.exists() and busy.exists()
    assert sorted(p.name for p in blob.parent.iterdir()) == sorted(
        [blob.name, blob.name + ".verified", busy.name])


def in_namespace(script: str, **env: str) -> subprocess.CompletedProcess:
    """Run a shell script as root of a private user + mount namespace (mounts vanish after)."""
    if shutil.which("unshare") is None or \
            subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -Urm (user and mount namespaces) for a private mount")
    return subprocess.run(["unshare", "-Urm", "sh", "-ec", script], cwd=REPO, text=True,
                          capture_output=True, env={**os.environ, **env}, timeout=300)


def cli_build(s) -> str:
    return shlex.join(synthetic.cli_build(s))


def test_a_read_only_cache_still_builds_and_an_empty_one_is_one_line(synth, monkeypatch):
    synth.seed_cache()  # blobs present, never verified: markers would be written now
    synth.write_series({"Change A": {"vllm/a.py": CHANGE_A}})
    cache = synth.cache
    ro = f"mount --bind {cache} {cache}; mount -o remount,bind,ro {cache}; "
    proc = in_namespace(ro + cli_build(synth))
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((cache / "sha256").glob("*.verified"))  # nothing could be remembered
    shutil.rmtree(synth.wheelhouse)
    for blob in (cache / "sha256").iterdir():
        blob.unlink()
    file_index(synth, monkeypatch)
    proc = in_namespace(ro + cli_build(synth))
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and "Read-only file system" in line, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_full_disk_during_the_wheel_write_is_one_line_and_leaves_nothing(synth):
    synth.seed_cache()
    synth.write_series({"Change A": {"vllm/a.py": CHANGE_A}})
    house = synth.wheelhouse
    house.mkdir()
    proc = in_namespace(f"mount -t tmpfs -o size=128k tmpfs {house}; "
                        f"{cli_build(synth)} || echo exit $? >&2; ls -A {house} >&2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    [error] = [ln for ln in lines if ln.startswith("error: ")]
    assert "No space left on device" in error and "temp files removed" in error
    assert "Traceback" not in proc.stderr
    assert lines[-2:] == ["exit 1", ".lock"]  # what ls saw: no .tmp, no partial wheel
