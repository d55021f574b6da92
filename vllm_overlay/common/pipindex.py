"""The index client: the package indexes pip is configured with (pip's config and PIP_*
environment; pip's own default index otherwise), and the files a project has there, read
through the PEP 691 JSON or PEP 503 HTML simple API.
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from vllm_overlay.common import log
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.http import page_links
from vllm_overlay.common.pin import Artifact

# pip's own default index (pip._internal.models.index.PyPI.simple_url, not a public API)
PYPI_SIMPLE = "https://pypi.org/simple"
_log = log.stage("fetch")


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
    index = index or PYPI_SIMPLE
    return [index, *(lookup("extra-index-url") or "").split()]


def project_files(project: str, indexes: list[str] | None = None) -> dict[str, str]:
    """filename -> URL over pip's indexes (or `indexes`); the first index that has a file wins."""
    found: dict[str, str] = {}
    unreachable: dict[str, str] = {}
    for index in pip_index_urls() if indexes is None else indexes:
        for filename, url in index_files(index, project, unreachable).items():
            found.setdefault(filename, url)
    if unreachable:
        where = "; ".join(f"{page} ({why})" for page, why in unreachable.items())
        if not found:
            raise OverlayError(f"{project}: pip's index cannot be read: {where} (check the "
                               f"network, or PIP_INDEX_URL / PIP_EXTRA_INDEX_URL)")
        _log.info(f"warning: {project}: skipped an index that cannot be read: {where}")
    return found


def index_files(index_url: str, project: str,
                unreachable: dict[str, str] | None = None) -> dict[str, str]:
    """filename -> absolute URL for one project on one simple index (PEP 691 or 503); an
    index that cannot be read has none (and is noted in `unreachable`: page -> why)."""
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
    except (OSError, ValueError) as exc:
        if unreachable is not None and not (isinstance(exc, urllib.error.HTTPError)
                                            and exc.code == 404):  # 404: not on this index
            unreachable[page] = str(getattr(exc, "reason", None) or exc)
        return {}
    if "json" in ctype:
        files = json.loads(body)["files"]
        # the sha256 as PEP 503 links carry it, so every caller sees the index's hash
        return {f["filename"]: urllib.parse.urljoin(page, f["url"]) + (
                    f"#sha256={f['hashes']['sha256']}" if "sha256" in f.get("hashes", {})
                    and "#" not in f["url"] else "") for f in files}
    return page_links(body.decode("utf-8", "replace"), page)


def find_url(art: Artifact, project: str) -> str:
    indexes = pip_index_urls()
    for index in indexes:
        if url := index_files(index, project).get(art.filename):
            return url
    raise OverlayError(f"{art.filename}: not found on any pip index ({', '.join(indexes)})")
