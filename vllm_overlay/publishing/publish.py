"""Publish: upload the wheelhouse's wheels to an internal package index with twine.

`make publish INDEX_URL=<upload URL>`: every overlay wheel (`...-manylinux_*.whl`; not the
MODE=precompiled / source `linux_*` wheels) listed in wheelhouse/SHA256SUMS is
re-hashed against that list, passes `twine check --strict`, and is then compared with
what the index already serves (its simple page, SIMPLE_URL): the same file with the same
sha256 is skipped (a re-run is a no-op); the same file name with another sha256 is an
error (an index must never serve two different files under one name). The rest goes up
with `twine upload`, and the index is read again to confirm it serves our sha256. The
files beside the wheels (constraints, provenance, SBOM copy) are no packages, so no index
takes them: publish names them for the user to hand out. An index serving the first bytes
of our wheel under its name holds a partial upload (pypiserver keeps them after a Ctrl-C):
named with the file to delete there, never as a reason to bump VERSION.

Credentials are twine's own: TWINE_USERNAME / TWINE_PASSWORD or keyring, never the repo.
They are also sent (HTTP basic auth) when reading the simple page, for private indexes,
but only to the host (and port) of INDEX_URL: never across a redirect to another host
(pypiserver redirects a project it lacks to its fallback index). Before the upload, the
simple index root must answer, and one empty authenticated POST to INDEX_URL checks the
credentials (an index refusing them answers 401/403 before twine sends any wheel).
twine runs from a venv the project creates from requirements-publish.lock (hash-locked by
`make lock`, installed --no-deps --require-hashes: venvs.ensure_locked_venv).

Every network wait is bounded: no answer (not a byte) within VLLM_OVERLAY_PUBLISH_TIMEOUT
seconds (default 120) is one error naming the host, ours or twine's (twine runs through
TWINE_MAIN, which gives its requests that timeout and sends each wheel once: twine itself
waits forever and sends a wheel answered 5xx five times).
"""

import base64
import hashlib
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from vllm_overlay.common import log, venvs
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import sha256_file
from vllm_overlay.common.http import page_links, redact
from vllm_overlay.common.requirements import normalize_name
from vllm_overlay.common import index

TWINE_REQUIREMENTS = Path(__file__).with_name("requirements-publish.txt")  # twine, pinned
TWINE_LOCK = Path(__file__).with_name("requirements-publish.lock")  # all of it, with hashes
TIMEOUT_ENV, DEFAULT_TIMEOUT = "VLLM_OVERLAY_PUBLISH_TIMEOUT", 120.0
_log = log.stage("publish")
# twine's main, run by the publish venv's python: argv = [-c, timeout, twine args...].
# Exit 75: no answer within the timeout; 76: no connection (the line before says which).
TWINE_TIMED_OUT, TWINE_NO_CONNECTION = 75, 76
TWINE_MAIN = """
import sys
import requests
from twine.__main__ import main
from twine.repository import Repository

timeout = float(sys.argv.pop(1))
plain_request = requests.Session.request


def request(self, method, url, **kwargs):
    if kwargs.get("timeout") is None:
        kwargs["timeout"] = timeout
    return plain_request(self, method, url, **kwargs)


requests.Session.request = request
Repository.upload = lambda self, package, max_redirects=5: self._upload(package)  # once
try:
    sys.exit(main())
except requests.exceptions.ConnectionError as exc:  # a blocked send: ("aborted", timeout)
    if isinstance(exc, requests.exceptions.Timeout) or "timed out" in repr(exc):
        print(f"twine: no answer within {timeout:g} s: {exc}", file=sys.stderr)
        sys.exit(75)
    print(f"twine: no connection: {exc}", file=sys.stderr)
    sys.exit(76)
except requests.exceptions.Timeout as exc:
    print(f"twine: no answer within {timeout:g} s: {exc}", file=sys.stderr)
    sys.exit(75)
"""


def timeout() -> float:
    """Seconds any one network wait of publish may take (VLLM_OVERLAY_PUBLISH_TIMEOUT)."""
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise OverlayError(f"{TIMEOUT_ENV}={value!r}: not a number of seconds > 0")
    return seconds


def _why(exc: BaseException, url: str) -> str:
    """A failed request in a few words: a timeout names the host and the limit."""
    reason = getattr(exc, "reason", exc)  # URLError wraps the socket's error
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout():g} s from {urllib.parse.urlsplit(url).netloc}"
    return str(exc)


def simple_url_for(index_url: str) -> str:
    """Default read URL for an upload URL: .../legacy/ -> .../simple/, else <url>/simple/."""
    base = index_url.rstrip("/")
    if base.endswith("/legacy"):
        base = base[: -len("/legacy")]
    return base + "/simple/"


def _auth_header() -> dict[str, str]:
    user, password = os.environ.get("TWINE_USERNAME"), os.environ.get("TWINE_PASSWORD")
    if not (user and password):
        return {}
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _host(url: str) -> tuple:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


class _CredentialsStayHome(urllib.request.HTTPRedirectHandler):
    """Follows redirects, re-sending the credentials only to the host they were given for."""

    def __init__(self, home: tuple, auth: dict[str, str]):
        self.home, self.auth = home, auth

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _host(newurl) == self.home:
            for key, value in self.auth.items():
                new.add_unredirected_header(key, value)
        return new


def _open(url: str, index_url: str, headers: dict[str, str] | None = None,
          data: bytes | None = None):
    """urlopen with the credentials sent to INDEX_URL's host only (never redirected)."""
    home, auth = _host(index_url), _auth_header()
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if _host(url) == home:
        for key, value in auth.items():
            request.add_unredirected_header(key, value)  # urllib copies other headers
    return urllib.request.build_opener(_CredentialsStayHome(home, auth)).open(request,
                                                                              timeout=timeout())


def _sha256_of_url(url: str, index_url: str) -> str:
    digest = hashlib.sha256()
    try:
        with _open(url, index_url) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
    except (OSError, ValueError) as exc:  # HTTPError is an OSError
        raise OverlayError(f"{url}: cannot read it to hash it: {_why(exc, url)}") from exc
    return digest.hexdigest()


def check_simple_root(simple_url: str, index_url: str) -> None:
    """The simple index root must answer from its own host: a wrong SIMPLE_URL would
    otherwise read as "nothing published" and the upload could replace a wheel."""
    try:
        with _open(simple_url, index_url, {"Accept": "text/html"}) as resp:
            final = resp.geturl()
    except urllib.error.HTTPError as exc:
        raise OverlayError(f"SIMPLE_URL {simple_url} does not answer as a simple index "
                           f"(HTTP {exc.code} {exc.reason}); nothing uploaded (is INDEX_URL / "
                           f"SIMPLE_URL right?)") from exc
    except (OSError, ValueError) as exc:
        raise OverlayError(f"SIMPLE_URL {simple_url} does not answer ({_why(exc, simple_url)}); "
                           f"nothing uploaded "
                           f"(is INDEX_URL / SIMPLE_URL right?)") from exc
    if _host(final) != _host(simple_url):
        raise OverlayError(f"SIMPLE_URL {simple_url} redirects to another host "
                           f"({redact(final)}); "
                           f"nothing uploaded: give the index's own simple URL")


def check_credentials(index_url: str) -> None:
    """One empty authenticated POST (no action, no file): an index that refuses the
    credentials says so (401/403) before twine sends the wheel; any other answer (e.g.
    pypiserver's 400 "Missing ':action' field") leaves the decision to twine."""
    if not _auth_header():
        return  # keyring or a prompt: twine's business
    try:
        with _open(index_url, index_url, {"Content-Type": "application/x-www-form-urlencoded"},
                   data=b""):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise OverlayError(
                f"{index_url} refuses the credentials of TWINE_USERNAME="
                f"{os.environ.get('TWINE_USERNAME')!r} (HTTP {exc.code} {exc.reason}); "
                f"nothing uploaded") from exc
    except (OSError, ValueError) as exc:  # twine would wait on it as long (or forever)
        raise OverlayError(f"INDEX_URL {index_url} does not answer an empty POST "
                           f"({_why(exc, index_url)}); nothing uploaded") from exc


def remote_links(simple_url: str, project: str, index_url: str) -> dict[str, tuple[str, str]]:
    """filename -> (sha256, file URL without fragment) of what the index serves."""
    page = simple_url.rstrip("/") + f"/{normalize_name(project)}/"
    try:
        with _open(page, index_url, {"Accept": "text/html"}) as resp:
            if _host(resp.geturl()) != _host(page):
                return {}
            body = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return {}
        hint = " (set TWINE_USERNAME / TWINE_PASSWORD)" if exc.code in (401, 403) else ""
        raise OverlayError(f"index page {page}: HTTP {exc.code} {exc.reason}{hint}") from exc
    except (OSError, ValueError) as exc:
        raise OverlayError(f"index page {page}: cannot read it: {_why(exc, page)} "
                           f"(is INDEX_URL / SIMPLE_URL right?)") from exc
    found = {}
    for name, url in page_links(body, page).items():
        location, _, fragment = url.partition("#")
        algo, _, value = fragment.partition("=")
        found[name] = (value.lower() if algo == "sha256" else _sha256_of_url(location, index_url),
                       location)
    return found


def served_prefix(url: str, index_url: str, ours: Path) -> tuple[int, str] | None:
    """(size, sha256) of what `url` serves when those bytes are a proper prefix of our file
    `ours` (an interrupted upload: pypiserver keeps the bytes it got under the final name),
    else None. Streams both side by side, hashing, and stops at the first difference."""
    size, total, digest = 0, ours.stat().st_size, hashlib.sha256()
    try:
        with _open(url, index_url) as resp, open(ours, "rb") as own:
            while chunk := resp.read(1 << 20):
                if size + len(chunk) >= total or own.read(len(chunk)) != chunk:
                    return None  # as long as ours (then it differs) or a different byte
                size += len(chunk)
                digest.update(chunk)
    except (OSError, ValueError) as exc:  # HTTPError is an OSError
        raise OverlayError(f"{url}: cannot read it to compare it with {ours.name}: "
                           f"{_why(exc, url)}") from exc
    return size, digest.hexdigest()


def different_file(path: Path, digest: str, served: str, url: str, simple_url: str,
                   index_url: str, after_upload: bool = False) -> OverlayError:
    """The error for an index serving other bytes under our wheel's name: a partial upload
    of this very wheel (its bytes are a prefix of ours) is named as such, with the file to
    delete on the index; only a complete other file means the name is taken for good."""
    if prefix := served_prefix(url, index_url, path):
        size, prefix_sha = prefix
        return OverlayError(
            f"{path.name}: {simple_url} serves a partial upload of this wheel (its first {size} "
            f"of {path.stat().st_size} bytes: sha256 {prefix_sha}, that of our first {size} "
            f"bytes; ours {digest}), left by an "
            f"{'upload that did not complete' if after_upload else 'interrupted upload'}: "
            f"delete {url} on the index (pypiserver: the file {path.name} in its packages "
            f"folder) and run `make publish` again; the version stays")
    if after_upload:
        return OverlayError(f"{path.name}: uploaded, but {simple_url} serves sha256 {served} "
                            f"({url}, not a part of ours), not ours {digest}")
    return OverlayError(
        f"{path.name}: {simple_url} already serves a different file under this name "
        f"(sha256 {served}, ours {digest}; {url} is not a part of ours); bump "
        f"VERSION instead of replacing a published wheel")


def for_publishing(name: str) -> bool:
    """The overlay wheels (`...-manylinux_*.whl`, docs/build-modes.md) are for publishing;
    the MODE=precompiled / source wheels (`...-linux_<arch>.whl`, which `make cross-check`
    needs in the wheelhouse) are not: indexes that check platform tags refuse them."""
    return name.endswith(".whl") and name.removesuffix(".whl").rsplit("-", 1)[-1].startswith(
        "manylinux")


def local_wheels(wheelhouse: Path) -> dict[Path, str]:
    """The overlay wheels listed in SHA256SUMS, each re-hashed: a mismatch is an error."""
    sums = index.read_sums(wheelhouse)
    wheels = {}
    for name, digest in sorted(sums.items()):
        path = wheelhouse / name
        if not name.endswith(".whl") or not path.is_file():
            continue
        if not for_publishing(name):
            _log.info(f"{name}: not uploaded (a MODE=precompiled / source wheel, not for "
                      f"publishing: docs/build-modes.md)")
            continue
        got = sha256_file(path)
        if got != digest:
            raise OverlayError(f"{path}: sha256 {got} != {digest} in {wheelhouse / 'SHA256SUMS'}"
                               f" (changed after the build? run `make wheel`)")
        wheels[path] = digest
    if not wheels:
        raise OverlayError(f"{wheelhouse}: no overlay wheel (`vllm-*-manylinux_*.whl`) listed in "
                           f"SHA256SUMS: run `make wheel` first")
    return wheels


def beside_files(wheelhouse: Path, wheels: dict[Path, str]) -> list[str]:
    """The files beside the published wheels that no package index takes
    (docs/supply-chain.md): each wheel's provenance and SBOM copy, and the constraints of its
    arch."""
    sums = index.read_sums(wheelhouse)
    names = []
    for wheel in wheels:
        stem = wheel.name.removesuffix(".whl")
        arch = "aarch64" if wheel.name.endswith("_aarch64.whl") else "x86_64"
        names += [n for n in (f"constraints-{arch}.txt", f"{stem}.intoto.json",
                              f"{stem}.cdx.json") if n in sums and n not in names]
    return names


def twine(*args: str, url: str | None = None) -> None:
    """twine with every request bounded (TWINE_MAIN); `url`: the index it talks to."""
    seconds = timeout()
    venv = venvs.ensure_locked_venv("publish", [TWINE_LOCK])
    command = [str(venvs.python_of(venv)), "-c", TWINE_MAIN, f"{seconds:g}", *args]
    code = subprocess.run(command).returncode
    if not code:
        return
    files = ", ".join(Path(a).name for a in args if a.endswith(".whl"))
    host = urllib.parse.urlsplit(url).netloc if url else "the index"
    if code == TWINE_TIMED_OUT:
        raise OverlayError(f"twine {args[0]} to {host}: no answer within {seconds:g} s "
                           f"({TIMEOUT_ENV}) for {files}; what the index kept of it is "
                           f"unknown (a re-run names a partial upload)")
    if code == TWINE_NO_CONNECTION:
        raise OverlayError(f"twine {args[0]} to {host}: no connection for {files} "
                           f"(see twine's line above)")
    raise OverlayError(f"`twine {args[0]}` failed for {files} (see twine's output above)")


def publish(index_url: str, wheelhouse: Path, simple_url: str | None = None) -> dict[str, str]:
    """Upload what the index lacks; returns filename -> 'uploaded' / 'already there'."""
    for name, url in (("INDEX_URL", index_url), ("SIMPLE_URL", simple_url)):
        if url and redact(url) != url:  # a user:password@ would show in every message
            raise OverlayError(f"{name} {redact(url)}: no credentials in the URL (they would "
                               f"be shown in logs); set TWINE_USERNAME / TWINE_PASSWORD")
    if not urllib.parse.urlparse(index_url).scheme.startswith("http"):
        raise OverlayError(f"INDEX_URL={index_url!r} is not an http(s) upload URL")
    simple_url = simple_url or simple_url_for(index_url)
    _log.info(f"to {index_url} (simple index {simple_url}) from {wheelhouse}")
    timeout()  # a bad VLLM_OVERLAY_PUBLISH_TIMEOUT is refused before anything runs
    wheels = local_wheels(wheelhouse)
    twine("check", "--strict", *map(str, wheels))
    project = next(iter(wheels)).name.split("-")[0]
    check_simple_root(simple_url, index_url)
    remote = remote_links(simple_url, project, index_url)
    result, upload = {}, []
    for path, digest in wheels.items():
        if path.name not in remote:
            upload.append(path)
        elif remote[path.name][0] == digest:
            result[path.name] = "already there"
            _log.info(f"{path.name} already on {simple_url} with sha256 {digest}: nothing to do")
        else:
            raise different_file(path, digest, *remote[path.name], simple_url, index_url)
    if upload:
        check_credentials(index_url)
        args = ["upload", "--repository-url", index_url, "--disable-progress-bar"]
        if not sys.stdin.isatty():
            args.append("--non-interactive")  # never hang on a password prompt in CI
        twine(*args, *map(str, upload), url=index_url)
        try:
            remote = remote_links(simple_url, project, index_url)
        except OverlayError as exc:
            raise OverlayError(f"{', '.join(p.name for p in upload)}: uploaded (the index "
                               f"answered the upload), but reading it back failed: {exc}") \
                from exc
        for path in upload:
            if path.name not in remote:
                raise OverlayError(f"{path.name}: uploaded, but {simple_url} does not list "
                                   f"it (sha256 ours {wheels[path]})")
            if remote[path.name][0] != wheels[path]:
                raise different_file(path, wheels[path], *remote[path.name], simple_url,
                                     index_url, after_upload=True)
            result[path.name] = "uploaded"
            _log.info(f"{path.name} uploaded to {index_url} (sha256 {wheels[path]} "
                      f"confirmed on {simple_url})")
    if extra := beside_files(wheelhouse, wheels):
        _log.info(f"not on the index (it takes only packages; the SBOM is also inside the "
                  f"wheel): hand users {', '.join(str(wheelhouse / n) for n in extra)}, listed "
                  f"in {wheelhouse / 'SHA256SUMS'} (docs/supply-chain.md)")
    return result
