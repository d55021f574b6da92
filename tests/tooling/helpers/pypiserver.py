"""A real pypiserver on a free loopback port with upload authentication (htpasswd written
with passlib, no fallback to any public index unless asked), and `make publish` against it."""

import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

with warnings.catch_warnings():  # passlib 1.7.4 imports the stdlib `crypt` (deprecated)
    warnings.simplefilter("ignore", DeprecationWarning)
    from passlib.apache import HtpasswdFile

from tests.tooling.helpers.deploy import build_wheel, clean_env, write_sums
from vllm_overlay.common.paths import REPO

USER, PASSWORD = "uploader", "s3cret-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, root: Path, fallback: str | None = None):
        self.fallback = fallback  # the index pypiserver redirects unknown projects to
        self.packages = root / "packages"
        self.packages.mkdir()
        self.htpasswd = root / "htpasswd"
        ht = HtpasswdFile(str(self.htpasswd), new=True)
        ht.set_password(USER, PASSWORD)
        ht.save()
        self.log = root / "server.log"
        self.proc = None

    def start(self) -> None:
        for _ in range(3):  # the free port can be taken between probe and bind: retry
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            with open(self.log, "w") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1",
                     "-p", str(self.port), "-P", str(self.htpasswd), "-a", "update",
                     *(["--fallback-url", self.fallback] if self.fallback
                       else ["--disable-fallback"]),
                     "--hash-algo", "sha256", str(self.packages)],
                    stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with urllib.request.urlopen(self.url + "/health", timeout=2):
                        return
                except OSError:
                    time.sleep(0.2)
            self.stop()
        raise RuntimeError(f"pypiserver did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def make_publish(server: Server, house: Path, password: str = PASSWORD,
                 **make_vars: str) -> subprocess.CompletedProcess:
    variables = {"INDEX_URL": server.url + "/", "WHEELHOUSE": str(house), **make_vars}
    env = clean_env(TWINE_USERNAME=USER, TWINE_PASSWORD=password)
    return subprocess.run(["make", "-C", str(REPO), "publish",
                           *(f"{k}={v}" for k, v in variables.items() if v is not None)],
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                          timeout=600)


def wheelhouse_with(tmp_path: Path, version: str, **kwargs) -> tuple[Path, Path]:
    house = tmp_path / f"house-{version}"
    house.mkdir(parents=True)
    wheel = build_wheel(house, version, **kwargs)
    write_sums(house, wheel)
    return house, wheel
