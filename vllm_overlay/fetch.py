"""Fetch: pinned upstream artifacts into a cache keyed by sha256, verified before any use.

Files are found through the package indexes pip is configured with (pip's config and
PIP_* environment; pip's own default index otherwise), using the PEP 691 JSON or PEP 503
HTML simple API. A cached file is trusted only after its size and sha256 were checked;
the check is remembered per (size, mtime, inode) so a warm cache is not re-hashed.
"""

import hashlib
import html.parser
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import OverlayError
from .paths import cache_dir
from .pin import Artifact

_CHUNK = 1 << 20


def blob_path(sha256: str) -> Path:
    return cache_dir() / "sha256" / sha256


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def verify_file(path: Path, art: Artifact) -> None:
    """Raise unless `path` has the artifact's size and sha256."""
    size = path.stat().st_size
    if size != art.size:
        raise OverlayError(
            f"{art.filename}: size {size} != pinned {art.size} ({path})")
    got = sha256_file(path)
    if got != art.sha256:
        raise OverlayError(
            f"{art.filename}: sha256 {got} != pinned {art.sha256} ({path})")


def cached(art: Artifact) -> Path | None:
    """The verified cached file, or None if absent. A corrupt entry is an error."""
    path = blob_path(art.sha256)
    if not path.exists():
        return None
    marker = path.with_name(path.name + ".verified")
    if marker.exists() and marker.read_text() == _stat_key(path):
        return path
    try:
        verify_file(path, art)
    except OverlayError as exc:
        raise OverlayError(f"corrupt cache entry: {exc}; delete {path} to fetch again") from exc
    try:
        marker.write_text(_stat_key(path))
    except OSError:
        pass  # a read-only cache: verified now, and again next time
    return path


# --- index discovery -------------------------------------------------------------------


def pip_index_urls() -> list[str]:
    """The index URLs pip would use, in pip's order: index-url then extra-index-urls."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                         capture_output=True, text=True).stdout
    config: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        config[key.strip()] = value.strip().strip("'\"")

    def lookup(name: str) -> str | None:
        for scope in (":env:", "download", "install", "global"):
            if f"{scope}.{name}" in config:
                return config[f"{scope}.{name}"]
        return os.environ.get("PIP_" + name.upper().replace("-", "_"))

    index = lookup("index-url")
    if not index:
        from pip._internal.models.index import PyPI  # pip's own default, not ours

        index = PyPI.simple_url
    return [index, *(lookup("extra-index-url") or "").split()]


class _LinkParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a" and (href := dict(attrs).get("href")):
            self.links.append(href)


def index_files(index_url: str, project: str) -> dict[str, str]:
    """filename -> absolute URL for one project on one simple index (PEP 691 or 503)."""
    page = index_url.rstrip("/") + f"/{project}/"
    request = urllib.request.Request(page, headers={
        "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    try:
        if page.startswith("file:"):
            path = Path(urllib.request.url2pathname(urllib.parse.urlparse(page).path))
            body, ctype = (path / "index.html").read_bytes(), "text/html"
        else:
            with urllib.request.urlopen(request, timeout=60) as resp:
                body, ctype = resp.read(), resp.headers.get("Content-Type", "")
    except (OSError, ValueError):
        return {}
    if "json" in ctype:
        files = json.loads(body)["files"]
        return {f["filename"]: urllib.parse.urljoin(page, f["url"]) for f in files}
    parser = _LinkParser()
    parser.feed(body.decode("utf-8", "replace"))
    found = {}
    for href in parser.links:
        url = urllib.parse.urljoin(page, href)
        found[urllib.parse.unquote(url.split("#")[0].rsplit("/", 1)[-1])] = url
    return found


def find_url(art: Artifact, project: str) -> str:
    indexes = pip_index_urls()
    for index in indexes:
        if url := index_files(index, project).get(art.filename):
            return url
    raise OverlayError(f"{art.filename}: not found on any pip index ({', '.join(indexes)})")


# --- download ------------------------------------------------------------------------


class Progress:
    """One line of progress on stderr: in place on a terminal, every 10% otherwise."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done = label, total, 0
        self.tty = sys.stderr.isatty()
        self.start, self.last_shown = time.monotonic(), -1

    def advance(self, n: int) -> None:
        self.done += n
        pct = 100 * self.done // max(self.total, 1)
        if self.tty or pct // 10 != self.last_shown // 10 or self.done == self.total:
            if pct != self.last_shown:
                self.last_shown = pct
                rate = self.done / max(time.monotonic() - self.start, 1e-6) / 1e6
                end = "\r" if self.tty and self.done < self.total else "\n"
                print(f"  {self.label}: {self.done / 1e6:8.1f}/{self.total / 1e6:.1f} MB "
                      f"{pct:3d}% {rate:6.1f} MB/s", end=end, file=sys.stderr, flush=True)


def download(url: str, dest: Path, art: Artifact) -> None:
    """Stream `url` into dest (via a .part file), verifying size and sha256 before rename."""
    part = dest.with_name(dest.name + f".part{os.getpid()}")
    digest, progress = hashlib.sha256(), Progress(art.filename, art.size)
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, open(part, "wb") as out:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                progress.advance(len(chunk))
        size = part.stat().st_size
        if size != art.size or digest.hexdigest() != art.sha256:
            raise OverlayError(
                f"{art.filename}: downloaded from {url} but got size {size}, sha256 "
                f"{digest.hexdigest()}; pinned size {art.size}, sha256 {art.sha256}")
        os.chmod(part, 0o444)
        os.replace(part, dest)
    except OSError as exc:
        raise OverlayError(f"{art.filename}: download from {url} failed: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's process
    return True


def fetch(art: Artifact, project: str = "vllm") -> Path:
    """Return the verified cached path of `art`, downloading it on a cold cache."""
    if path := cached(art):
        return path
    dest = blob_path(art.sha256)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for part in dest.parent.glob(dest.name + ".part*"):  # left by a killed download
            pid = part.name.rpartition(".part")[2]
            if not (pid.isdigit() and _alive(int(pid))):
                part.unlink(missing_ok=True)
    except OSError as exc:
        raise OverlayError(f"{art.filename}: cannot write the cache {dest.parent}: {exc} "
                           f"(set VLLM_OVERLAY_CACHE to a writable folder)") from exc
    url = find_url(art, project)
    print(f"fetch: {art.filename} ({art.size / 1e6:.1f} MB) from {url}", file=sys.stderr)
    download(url, dest, art)
    cached_path = cached(art)
    assert cached_path is not None
    return cached_path
