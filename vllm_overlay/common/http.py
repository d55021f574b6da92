"""HTTP: stream a download while hashing it, show its progress, read simple-index pages."""

import hashlib
import html.parser
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from vllm_overlay.common.errors import OverlayError

_CHUNK = 1 << 20


def _show(line: str, end: str = "\n") -> None:
    print(line, end=end, file=sys.stderr, flush=True)


class Progress:
    """One file: one line on stderr, in place on a terminal, every 10% otherwise."""

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
                _show(f"  {self.label}: {self.done / 1e6:8.1f}/{self.total / 1e6:.1f} MB "
                      f"{pct:3d}% {rate:6.1f} MB/s", end)


class BatchProgress:
    """Parallel downloads of unknown size: one line on stderr at most every 2 s."""

    def __init__(self, what: str = "sdist(s)"):
        self.what, self.lock, self.bytes, self.files, self.done = what, threading.Lock(), 0, 0, 0
        self.start, self.shown = time.monotonic(), 0.0

    def started(self) -> None:
        with self.lock:
            self.files += 1

    def advance(self, n: int, finished: bool = False) -> None:
        with self.lock:
            self.bytes += n
            self.done += finished
            now = time.monotonic()
            if finished or now - self.shown >= 2:
                self.shown = now
                rate = self.bytes / max(now - self.start, 1e-6) / 1e6
                _show(f"  download: {self.done}/{self.files} {self.what} done, "
                      f"{self.bytes / 1e6:.1f} MB, {rate:.1f} MB/s")


def download(url: str, part: Path, label: str, advance) -> tuple[str, int]:
    """Stream `url` into `part`, calling advance(bytes) per chunk: (sha256, size).
    The caller checks the result and renames `part` into place (or removes it)."""
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, open(part, "wb") as out:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                advance(len(chunk))
    except OSError as exc:
        raise OverlayError(f"{label}: download from {url} failed: {exc}") from exc
    return digest.hexdigest(), size


def content_length(url: str) -> int:
    """The size the server gives for `url` (a HEAD request; a `#fragment` left out)."""
    request = urllib.request.Request(url.split("#")[0], method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return int(resp.headers["Content-Length"])
    except (OSError, ValueError, TypeError) as exc:
        raise OverlayError(f"{url}: cannot read its size: {exc}") from exc


def redact(url: str, mark: str = "***@") -> str:
    """`url` with its userinfo (user:password@) replaced by `mark`, for messages and labels."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url.rpartition("@")[2] if "@" in url else url
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=mark + parts.netloc.rpartition("@")[2]))


class _LinkParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a" and (href := dict(attrs).get("href")):
            self.links.append(href)


def page_links(body: str, page: str) -> dict[str, str]:
    """A PEP 503 simple page: filename -> absolute URL (with its #sha256= fragment, if any)."""
    parser = _LinkParser()
    parser.feed(body)
    found = {}
    for href in parser.links:
        url = urllib.parse.urljoin(page, href)
        found[urllib.parse.unquote(url.split("#")[0].rsplit("/", 1)[-1])] = url
    return found
