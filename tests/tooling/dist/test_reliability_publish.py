"""`make publish` reliability (issue 20, cases 2 and 3, and the credentials check), against
real pypiservers on loopback, as in test_publish.py."""

import http.server
import subprocess
import threading

import pytest

from tests.tooling.dist.deploy_helpers import clean_env
from tests.tooling.dist.test_publish import PASSWORD, Server, make_publish, wheelhouse_with
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
