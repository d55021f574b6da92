"""Fetch: pinned upstream artifacts into the blob cache (common/blobcache.py), verified
before any use; found on the package indexes pip is configured with (common/pipindex.py).
"""

from pathlib import Path

from vllm_overlay.common import blobcache, log
from vllm_overlay.common.blobcache import blob_path, cached, download_pinned
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.pin import Artifact
from vllm_overlay.common.pipindex import find_url

_log = log.stage("fetch")


def fetch(art: Artifact, project: str = "vllm", rehash: bool = False) -> Path:
    """Return the verified cached path of `art`, downloading it on a cold cache."""
    if path := cached(art, rehash):
        return path
    dest = blob_path(art.sha256)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        blobcache.remove_dead_parts(dest)  # left by a killed download
    except OSError as exc:
        raise OverlayError(f"{art.filename}: cannot write the cache {dest.parent}: {exc} "
                           f"(set VLLM_OVERLAY_CACHE to a writable folder)") from exc
    url = find_url(art, project)
    _log.info(f"{art.filename} ({art.size / 1e6:.1f} MB) from {url}")
    download_pinned(url, dest, art)
    cached_path = cached(art)
    assert cached_path is not None
    return cached_path
