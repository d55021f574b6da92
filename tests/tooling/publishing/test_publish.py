"""`make publish` against a real pypiserver on 127.0.0.1 with upload authentication.

The server (pypiserver, htpasswd file written with passlib, upload needs a password,
no fallback to any public index) runs on a free loopback port for this module and is
always stopped by the fixture. twine runs from the project's own publish venv.
"""

import json
import urllib.request
from pathlib import Path

import pytest

from tests.tooling.helpers.deploy import make_venv, pip, sha256, site_packages
from tests.tooling.helpers.pypiserver import USER, Server, make_publish, wheelhouse_with
from vllm_overlay.publishing.in_image.image_check import installed_problems
from vllm_overlay.common.paths import REPO


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("pypiserver"))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.mark.once_per_inputs
def test_publish_then_pip_install_from_the_index(server, tmp_path):
    house, wheel = wheelhouse_with(tmp_path, "0.19.1+test.1")
    proc = make_publish(server, house)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "uploaded" in proc.stderr and "confirmed" in proc.stderr
    assert sha256(server.packages / wheel.name) == sha256(wheel)
    python = make_venv(tmp_path / "venv")
    installed = pip(python, "install", "--no-deps", "--no-cache-dir", "--index-url",
                    f"{server.url}/simple", "vllm==0.19.1")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "Successfully installed vllm-0.19.1+test.1" in installed.stdout
    assert installed_problems(site_packages(python), "0.19.1+test.1") == []


def test_republishing_the_same_file_is_a_no_op(server, tmp_path):
    house, wheel = wheelhouse_with(tmp_path, "0.19.1+test.2")
    assert make_publish(server, house).returncode == 0
    stored = server.packages / wheel.name
    before = stored.stat().st_mtime_ns
    proc = make_publish(server, house)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "already on" in proc.stderr and "nothing to do" in proc.stderr
    assert stored.stat().st_mtime_ns == before


def test_a_different_file_under_a_published_name_is_an_error(server, tmp_path):
    house, wheel = wheelhouse_with(tmp_path, "0.19.1+test.3")
    assert make_publish(server, house).returncode == 0
    published = sha256(wheel)
    other, other_wheel = wheelhouse_with(tmp_path / "other", "0.19.1+test.3",
                                         extra="# rebuilt with a change\n")
    assert other_wheel.name == wheel.name and sha256(other_wheel) != published
    proc = make_publish(server, other)
    assert proc.returncode != 0
    assert f"error: {wheel.name}: " in proc.stderr and "different file" in proc.stderr
    assert published in proc.stderr and sha256(other_wheel) in proc.stderr
    assert sha256(server.packages / wheel.name) == published


def test_wrong_password_is_refused(server, tmp_path):
    house, wheel = wheelhouse_with(tmp_path, "0.19.1+test.4")
    proc = make_publish(server, house, password="wrong")
    assert proc.returncode != 0
    assert f"error: {server.url}/ refuses the credentials of TWINE_USERNAME='{USER}' " \
        "(HTTP 403 Forbidden); nothing uploaded" in proc.stderr
    assert not (server.packages / wheel.name).exists()
    with urllib.request.urlopen(f"{server.url}/simple/vllm/", timeout=10) as resp:
        assert wheel.name not in resp.read().decode().replace("%2B", "+")


def test_tampered_wheel_and_missing_url_are_refused_before_upload(server, tmp_path):
    house, wheel = wheelhouse_with(tmp_path, "0.19.1+test.5")
    wheel.write_bytes(wheel.read_bytes() + b"\0")  # changed after SHA256SUMS was written
    proc = make_publish(server, house)
    assert proc.returncode != 0 and "SHA256SUMS" in proc.stderr
    assert not (server.packages / wheel.name).exists()
    proc = make_publish(server, house, INDEX_URL=None)
    assert proc.returncode == 2 and "needs INDEX_URL" in proc.stderr


def real_wheel() -> Path | None:
    manifest = REPO / "wheelhouse" / "manifest-x86_64.json"
    if not manifest.exists():
        return None
    wheel = REPO / "wheelhouse" / json.loads(manifest.read_text())["wheel"]["filename"]
    return wheel if wheel.exists() else None


@pytest.mark.slow
def test_publish_the_real_wheelhouse_wheel(server, tmp_path, request):
    """The 433 MB overlay wheel from `make wheel` through the same round trip."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow (uploads the 433 MB wheel): select with -m slow")
    wheel = real_wheel()
    if wheel is None:
        pytest.skip("no wheelhouse wheel: run `make wheel` first")
    manifest = json.loads((REPO / "wheelhouse" / "manifest-x86_64.json").read_text())
    proc = make_publish(server, REPO / "wheelhouse")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    python = make_venv(tmp_path / "venv")
    installed = pip(python, "install", "--no-deps", "--no-cache-dir", "--index-url",
                    f"{server.url}/simple", "vllm==0.19.1")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert installed_problems(site_packages(python), manifest["version"]) == []
