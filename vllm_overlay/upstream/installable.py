"""Installability: does a release's runtime resolve from the configured indexes?

The release's runtime requirements (the sdist's requirements/cuda.txt with its includes:
what setup.py writes into the wheel's Requires-Dist, which `make lock` resolves) go through
the same `uv pip compile` that `make lock` runs (constraints.compile_lock: CPython 3.11,
manylinux_2_31, the arch), in a scratch folder. The answer is cached per requirements, arch
and index settings (cache/installable/<key>.json), so a warm `make status` does not resolve
again (a "no" is resolved again after RECHECK_NO: the index may have the pin by then); a
failure that is not a resolution (no network, uv missing) is "unknown" and is not cached.
An index host that DNS does not know (no proxy set) is "unknown" at once: uv would retry
it for seconds, on every run (e.g. the flashinfer.ai index some releases name). The indexes are pip's (pip config and PIP_INDEX_URL / PIP_EXTRA_INDEX_URL), which
`make lock` hands to uv: those are the indexes named here.
"""

import hashlib
import json
import re
import socket
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from vllm_overlay.wheelbuild import constraints
from vllm_overlay.common import pipindex
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write
from vllm_overlay.common.http import redact
from vllm_overlay.common.paths import cache_dir
from vllm_overlay.common.requirements import normalize_name

PYPI = "https://pypi.org/simple"
RECHECK_NO = 6 * 3600  # s: a "no" is resolved again after this (the index may get the pin)
_NAME = r"([A-Za-z0-9][A-Za-z0-9._-]*)"
# what uv says about the package it could not find (the first one named is the cause)
_CAUSES = [re.compile(rf"there is no version of {_NAME}"),
           re.compile(rf"{_NAME}\S* was not found in the package registry"),
           re.compile(rf"\bonly {_NAME}\S* (?:is|are) available"),
           re.compile(rf"{_NAME}\S* was not found in the provided package locations")]


def lock_indexes(urls: list[str] | None = None) -> list[str]:
    """The indexes `uv pip compile` (make lock) resolves from, credentials hidden."""
    return [redact(url) for url in (pipindex.pip_index_urls() if urls is None else urls)]


def lock_settings() -> list[str]:
    """pip's index URLs, read once (`pip config list`: a third of a second a call) for a
    whole `status` run: pass them to of_sdist / resolve."""
    return pipindex.pip_index_urls()


def requirements(sdist: Path) -> list[str]:
    """The release's runtime requirements, as its sdist declares them (see the module doc);
    cached per sdist file (reading them scans the whole tarball: a second a release)."""
    stat = sdist.stat()
    key = hashlib.sha256(f"{sdist.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    where = cache_dir() / "installable" / f"requirements-{key.hexdigest()}.json"
    try:
        return json.loads(where.read_text())
    except (OSError, ValueError):
        pass
    lines = constraints.sdist_requirements(sdist)
    where.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(where, json.dumps(lines) + "\n")
    return lines


def _key(lines: list[str], arch: str, urls: list[str] | None = None) -> str:
    settings = {"requirements": lines, "arch": arch, "python": constraints.PYTHON,
                "platform": constraints.PLATFORM,
                "indexes": pipindex.pip_index_urls() if urls is None else urls}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def cause(uv_error: str, lines: list[str]) -> str | None:
    """The requirement uv could not satisfy (as the release pins it when it pins it)."""
    for pattern in _CAUSES:
        if m := pattern.search(uv_error):
            name = normalize_name(m[1].rstrip(".,"))
            for line in lines:
                if normalize_name(re.split(r"[\s;<>=!~\[(@]", line, 1)[0]) == name:
                    return line.split(";")[0].strip().replace(" ", "")
            return name
    return None


def unresolvable_host(texts: list[str]) -> str | None:
    """The first http(s) host named in `texts` that DNS does not know, unless a proxy is
    set (then the proxy resolves names, and uv is asked as always)."""
    if urllib.request.getproxies():
        return None
    for url in re.findall(r"https?://[^\s,;'\"]+", "\n".join(texts)):
        host = urllib.parse.urlsplit(url).hostname
        try:
            socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError):
            return host
    return None


def resolve(lines: list[str], arch: str, urls: list[str] | None = None) -> dict:
    """{"installable": True | False | None (unknown), "text": "yes" | "no (...)" |
    "unknown (...)", "package": what did not resolve, "indexes": [...]}; cached."""
    urls = pipindex.pip_index_urls() if urls is None else urls
    indexes = lock_indexes(urls)
    where = cache_dir() / "installable" / f"{_key(lines, arch, urls)}.json"
    try:
        cached = json.loads(where.read_text())
        if cached["installable"] or time.time() - cached.get("checked", 0) < RECHECK_NO:
            return cached
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if host := unresolvable_host([*urls, *lines]):  # not a resolution: not cached
        return {"installable": None, "text": f"unknown (cannot resolve {host})",
                "package": None, "indexes": indexes}
    with tempfile.TemporaryDirectory(prefix="installable-") as tmp:
        (Path(tmp) / "runtime.in").write_text("".join(f"{line}\n" for line in lines))
        try:
            constraints.compile_lock(["runtime.in"], "runtime.txt", arch, Path(tmp))
            result = {"installable": True, "text": "yes", "package": None}
        except (OverlayError, OSError) as exc:
            error = str(exc)
            package = cause(error, lines)
            if package is None:  # not a resolution failure: say so, do not cache it
                last = error.strip().splitlines()[-1] if error.strip() else repr(exc)
                return {"installable": None, "text": f"unknown ({last.strip()})",
                        "package": None, "indexes": indexes}
            result = {"installable": False, "package": package,
                      "text": f"no ({package} not on {', '.join(indexes)})"}
    result["indexes"], result["checked"] = indexes, int(time.time())
    where.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(where, json.dumps(result, indent=1) + "\n")
    return result


def of_sdist(sdist: Path, arches: list[str], urls: list[str] | None = None) -> dict:
    """A release's installability over `arches` (the first arch that fails decides); urls:
    pip's index URLs when the caller already read them (lock_settings)."""
    urls = pipindex.pip_index_urls() if urls is None else urls
    try:
        lines = requirements(sdist)
    except OverlayError as exc:
        return {"installable": None, "text": f"unknown ({exc})", "package": None,
                "indexes": lock_indexes(urls)}
    results = {arch: resolve(lines, arch, urls) for arch in arches}
    for arch, result in results.items():
        if result["installable"] is False:
            return {**result, "text": result["text"] + (f" [{arch}]" if len(arches) > 1 else "")}
    for arch, result in results.items():
        if result["installable"] is None:
            return result
    return next(iter(results.values()))


def arches(the_pin) -> list[str]:
    """The arches the pin locks (its wheel-<arch> artifacts); x86_64 when it pins none."""
    return [k[6:] for k in the_pin.artifacts if k.startswith("wheel-")] or ["x86_64"]
