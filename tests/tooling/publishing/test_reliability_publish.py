"""`make publish` reliability (issue 20, cases 2 and 3, and the credentials check), against
real pypiservers on loopback, as in test_publish.py."""

import base64
import hashlib
import http.server
import os
import random
import signal
import socket
import subprocess
import threading
import time

import pytest

from tests.tooling.helpers.deploy import build_wheel, clean_env, package_files, write_sums
from tests.tooling.helpers.pypiserver import (PASSWORD, USER, Server, make_publish,
                                              wheelhouse_with)
from vllm_overlay.common.paths import REPO


class Logger(http.server.BaseHTTPRequestHandler):
    """Another host (127.0.0.2): records every request's path and headers, answers 404."""

    seen: list = []

    def do_GET(self):
        Logger.seen.append((self.path, dict(self.headers)))
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def other_host():
    try:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Logger)
    except OSError as exc:
        pytest.fail(f"cannot bind 127.0.0.2 (a second loopback address): {exc}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.2:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server_with_fallback(tmp_path_factory, other_host):
    srv = Server(tmp_path_factory.mktemp("pypiserver-fallback"), fallback=other_host + "/simple/")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def test_credentials_never_follow_a_redirect_to_another_host(server_with_fallback, tmp_path):
    """Case 2: pypiserver redirects the unknown project's page to its fallback index."""
    Logger.seen.clear()
    house, wheel = wheelhouse_with(tmp_path, "0.19.1+fallback.1")
    proc = make_publish(server_with_fallback, house)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (server_with_fallback.packages / wheel.name).exists()
    assert [path for path, _ in Logger.seen] == ["/simple/vllm/"]  # the redirect happened
    assert [h for _, h in Logger.seen if "Authorization" in h] == []
    assert PASSWORD not in str(Logger.seen)


def test_a_simple_url_that_does_not_answer_is_refused_before_upload(server_with_fallback,
                                                                    tmp_path):
    """Case 3: a typo in SIMPLE_URL must not read as "nothing published"."""
    house, wheel = wheelhouse_with(tmp_path, "0.19.1+typo.1")
    typo = server_with_fallback.url + "/simpel/"
    proc = make_publish(server_with_fallback, house, SIMPLE_URL=typo)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert f"error: SIMPLE_URL {typo} does not answer as a simple index (HTTP 404" in proc.stderr
    assert not (server_with_fallback.packages / wheel.name).exists()
    proc = make_publish(server_with_fallback, house, SIMPLE_URL="http://127.0.0.1:9/simple/")
    assert proc.returncode != 0
    assert "error: SIMPLE_URL http://127.0.0.1:9/simple/ does not answer (" in proc.stderr


def test_a_wrong_password_is_refused_before_twine_sends_the_wheel(server_with_fallback,
                                                                   tmp_path):
    house, wheel = wheelhouse_with(tmp_path, "0.19.1+password.1")
    proc = make_publish(server_with_fallback, house, password="wrong")
    assert proc.returncode != 0
    assert "refuses the credentials" in proc.stderr
    assert "Uploading" not in proc.stdout + proc.stderr  # twine never started the upload
    assert not (server_with_fallback.packages / wheel.name).exists()



# --- issue 27, case 8: a password inside INDEX_URL / SIMPLE_URL ------------------------------
SECRET = "pw-never-in-logs"


@pytest.mark.parametrize(("variable", "url"), [
    ("INDEX_URL", f"http://uploader:{SECRET}@127.0.0.1:9/"),
    ("INDEX_URL", f"ftp://uploader:{SECRET}@127.0.0.1:9/"),
    ("SIMPLE_URL", f"http://uploader:{SECRET}@127.0.0.1:9/simple/"),
], ids=["index", "index-not-http", "simple"])
def test_a_password_inside_the_url_is_never_echoed(tmp_path, variable, url):
    house, wheel = wheelhouse_with(tmp_path, "0.19.1+secret.1")
    variables = {"INDEX_URL": "http://127.0.0.1:9/", "WHEELHOUSE": str(house), variable: url}
    proc = subprocess.run(["make", "-C", str(REPO), "publish",
                           *(f"{k}={v}" for k, v in variables.items())],
                          capture_output=True, text=True, env=clean_env(),
                          stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode != 0
    assert SECRET not in proc.stdout + proc.stderr  # not in make's echo, not in the error
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert f"{variable} " in line and "***@127.0.0.1:9" in line, line


# --- issue 27, case 3: every network wait of publish is bounded, and names the host ----------
# A scripted index on 127.0.0.1 (pypiserver cannot be told to hang): its simple pages answer,
# an empty POST (the credentials check) gets pypiserver's 400, and the upload POST hangs,
# fails with HTTP 500, or succeeds while the page read back afterwards fails.
WAIT = "3"  # VLLM_OVERLAY_PUBLISH_TIMEOUT for these tests: seconds without an answer


class Scripted(http.server.BaseHTTPRequestHandler):
    upload = "hang"  # or "500", or "ok-then-500" (the upload works, the re-read fails)
    uploads = 0
    release = threading.Event()  # ends the hanging handlers at teardown

    def do_GET(self):
        if self.path == "/simple/":
            self._answer(200, b"<html><body></body></html>")
        elif self.path == "/simple/vllm/" and Scripted.uploads and Scripted.upload != "hang":
            self._answer(500, b"broken")
        else:
            self._answer(404, b"not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            self._answer(400, b"Missing ':action' field!")  # as pypiserver answers
            return
        Scripted.uploads += 1
        if Scripted.upload == "hang":
            Scripted.release.wait(120)  # takes the connection, reads nothing, never answers
            return
        self.rfile.read(length)
        self._answer(500 if Scripted.upload == "500" else 200, b"")

    def _answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    Scripted.uploads = 0
    Scripted.release.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    Scripted.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def silent():
    """Accepts every connection and never sends a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


def bounded_publish(index: str, house, limit: float = 90) -> tuple[subprocess.CompletedProcess,
                                                                     float]:
    """`make publish` with a short network timeout; the whole process group is killed (and
    the test fails) if it runs past `limit` seconds."""
    env = clean_env(TWINE_USERNAME="uploader", TWINE_PASSWORD="pw",
                    VLLM_OVERLAY_PUBLISH_TIMEOUT=WAIT)
    started = time.monotonic()
    proc = subprocess.Popen(["make", "-C", str(REPO), "publish", f"INDEX_URL={index}/",
                             f"WHEELHOUSE={house}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"make publish still waited after {limit} s:\n{out}{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), \
        time.monotonic() - started


def error_line(proc) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stdout + proc.stderr
    return errors[0]


def test_an_index_that_never_answers_is_one_error_naming_the_host(silent, tmp_path):
    house, _ = wheelhouse_with(tmp_path, "0.19.1+silent.1")
    proc, took = bounded_publish(silent, house)
    line = error_line(proc)
    assert silent.removeprefix("http://") in line and f"no answer within {WAIT} s" in line, line
    assert took < 45, took  # one bounded wait, not 60 s per call


@pytest.mark.parametrize("big", [False, True], ids=["sent-then-silence", "never-read"])
def test_an_upload_that_is_never_answered_is_one_error_naming_the_host(scripted, tmp_path, big):
    """Small: the wheel fits the socket buffers, twine then waits for the answer. Big (32 MB
    of random bytes): the index reads none of it, twine's send blocks."""
    Scripted.upload = "hang"
    version = "0.19.1+hang.1"
    files = {**package_files(version, True), "vllm/big.bin": os.urandom(32 << 20)} if big \
        else None
    house, wheel = wheelhouse_with(tmp_path, version, files=files)
    proc, took = bounded_publish(scripted, house)
    line = error_line(proc)
    host = scripted.removeprefix("http://")
    assert f"twine upload to {host}: no answer within {WAIT} s" in line, line
    assert wheel.name in line and "Traceback" not in proc.stderr, proc.stderr
    assert Scripted.uploads == 1


def test_an_upload_answered_500_is_sent_once(scripted, tmp_path):
    Scripted.upload = "500"
    house, wheel = wheelhouse_with(tmp_path, "0.19.1+err.1")
    proc, _ = bounded_publish(scripted, house)
    assert "500" in error_line(proc) or "500" in proc.stdout + proc.stderr
    assert Scripted.uploads == 1  # twine would send the whole wheel five times


def test_a_failed_read_back_says_the_upload_went_through(scripted, tmp_path):
    Scripted.upload = "ok-then-500"
    house, wheel = wheelhouse_with(tmp_path, "0.19.1+reread.1")
    proc, _ = bounded_publish(scripted, house)
    line = error_line(proc)
    assert f"{wheel.name}: uploaded (the index answered the upload)" in line, line
    assert "HTTP 500" in line


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf"])
def test_a_bad_timeout_setting_is_named(monkeypatch, value):
    from vllm_overlay.common.errors import OverlayError
    from vllm_overlay.publishing import publish

    monkeypatch.setenv("VLLM_OVERLAY_PUBLISH_TIMEOUT", value)
    with pytest.raises(OverlayError, match=f"VLLM_OVERLAY_PUBLISH_TIMEOUT='{value}': not a"):
        publish.timeout()


# --- issue 27, case 1: an interrupted upload leaves a prefix of the wheel on the index ------
@pytest.fixture(scope="module")
def plain_index(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("pypiserver-partial"))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def cut_upload(server: Server, wheel, keep: int) -> None:
    """twine's multipart POST of `wheel`, the connection closed after `keep` bytes of the
    wheel were sent (a Ctrl-C of `make publish`): pypiserver stores what it got."""
    boundary = "cut-upload-boundary"
    fields = {":action": "file_upload", "name": "vllm", "version": wheel.name.split("-")[1],
              "protocol_version": "1", "filetype": "bdist_wheel", "pyversion": "cp38"}
    head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in fields.items())
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
             f'filename="{wheel.name}"\r\nContent-Type: application/octet-stream\r\n\r\n')
    data = wheel.read_bytes()
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                     f"Authorization: Basic {token}\r\nContent-Length: {len(body)}\r\n"
                     f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode())
        conn.sendall(body[:len(head.encode()) + keep])
        time.sleep(0.5)
    stored = server.packages / wheel.name
    deadline = time.monotonic() + 20
    while not (stored.exists() and stored.stat().st_size == keep) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored.read_bytes() == data[:keep]  # what pypiserver keeps: a prefix, final name


def test_a_partial_upload_is_named_with_what_to_delete_never_a_version_bump(plain_index,
                                                                             tmp_path):
    version = "0.19.1+cut.1"
    # fixed bytes: pypiserver's parser (cgi.FieldStorage) holds back a line end before a
    # possible boundary, so a cut whose last byte was a random \r or \n kept one byte less
    files = {**package_files(version, True),
             "vllm/big.bin": random.Random(28).randbytes(4 << 20)}
    house, wheel = wheelhouse_with(tmp_path, version, files=files)
    cut_upload(plain_index, wheel, keep=1_500_000)
    proc = make_publish(plain_index, house)
    line = error_line(proc)
    size = wheel.stat().st_size
    assert f"{wheel.name}: {plain_index.url}/simple/ serves a partial upload of this wheel " \
        f"(its first 1500000 of {size} bytes: sha256 " \
        f"{hashlib.sha256(wheel.read_bytes()[:1_500_000]).hexdigest()}, that of our first" in line
    assert f"delete {plain_index.url}/packages/{wheel.name} on the index" in line, line
    assert "bump VERSION" not in proc.stderr and "the version stays" in line
    (plain_index.packages / wheel.name).unlink()  # what the error says to do
    proc = make_publish(plain_index, house)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (plain_index.packages / wheel.name).read_bytes() == wheel.read_bytes()


def test_a_complete_other_file_under_the_name_still_means_bump_version(plain_index, tmp_path):
    """The negative control: a file that is not a prefix of ours is a published wheel."""
    version = "0.19.1+other.2"
    house, wheel = wheelhouse_with(tmp_path, version)
    other = wheelhouse_with(tmp_path / "other", version, extra="# another build\n")[1]
    (plain_index.packages / wheel.name).write_bytes(other.read_bytes()[:-10])  # not a prefix
    line = error_line(make_publish(plain_index, house))
    assert "already serves a different file" in line and "bump VERSION" in line, line
    assert "partial upload" not in line


# --- issue 27, case 2: only the overlay wheels go up; the beside files are named ------------
def test_only_the_overlay_wheel_is_uploaded_not_the_linux_tagged_mode_wheels(plain_index,
                                                                            tmp_path):
    """`make cross-check` leaves the MODE=precompiled wheel (linux_x86_64) listed beside ours."""
    version = "0.19.1+modes.1"
    house, wheel = wheelhouse_with(tmp_path, version)
    precompiled = house / f"vllm-{version}-cp38-abi3-linux_x86_64.whl"
    source = house / f"vllm-{version}.cu129-cp38-abi3-linux_x86_64.whl"
    precompiled.write_bytes(build_wheel(tmp_path, version, extra="# setup.py\n").read_bytes())
    source.write_bytes(precompiled.read_bytes())
    beside = {f"{wheel.name.removesuffix('.whl')}.intoto.json": "{}\n",
              f"{wheel.name.removesuffix('.whl')}.cdx.json": "{}\n",
              "constraints-x86_64.txt": "# lock\n"}
    for name, text in beside.items():
        (house / name).write_text(text)
    write_sums(house, precompiled, wheel, source, *(house / n for n in beside))
    proc = make_publish(plain_index, house)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in plain_index.packages.glob(f"vllm-{version}*")) == [wheel.name]
    assert f"{precompiled.name}: not uploaded (a MODE=precompiled / source wheel" in proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if "hand users" in ln]
    for name in beside:
        assert str(house / name) in line, line


def test_a_wheelhouse_with_only_mode_wheels_publishes_nothing(plain_index, tmp_path):
    version = "0.19.1+modes.2"
    house, wheel = wheelhouse_with(tmp_path, version)
    linux = wheel.rename(house / f"vllm-{version}-cp38-abi3-linux_x86_64.whl")
    write_sums(house, linux)
    line = error_line(make_publish(plain_index, house))
    assert "no overlay wheel (`vllm-*-manylinux_*.whl`) listed in SHA256SUMS" in line, line
    assert not list(plain_index.packages.glob(f"vllm-{version}*"))
