"""Upstream releases: list them from pip's indexes, order them, fetch their sdists, and keep
one committed git work tree per sdist in the cache.

Only the pinned sdist has a hash in upstream.lock.json. For every other release the sdist's
sha256 is recorded the first time we download it (trust on first use, `upstream-tofu.json`
in the cache) and every later use re-hashes the cached file against that record.
"""

import json
import os
import re
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import blobcache, log, pipindex
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write, file_lock, sha256_file
from vllm_overlay.common.gittree import BASE_TAG, GitTree
from vllm_overlay.common.http import BatchProgress
from vllm_overlay.common.paths import cache_dir
from vllm_overlay.common.pin import Artifact, Pin

# The PEP 440 subset upstream uses: N(.N)*[{a|b|rc}N][.postN][.devN]
_VERSION_RE = re.compile(
    r"^(?P<release>\d+(?:\.\d+)*)(?:(?P<pre>a|b|rc)(?P<pre_n>\d+))?"
    r"(?:\.post(?P<post>\d+))?(?:\.dev(?P<dev>\d+))?$")
_PRE_RANK = {"a": 0, "b": 1, "rc": 2}


def version_key(version: str) -> tuple:
    """Sort key following PEP 440 for the subset above (X.devN < X.aN < X.rcN < X < X.postN)."""
    m = _VERSION_RE.match(version)
    if not m:
        raise OverlayError(f"{version!r}: not a release version this tool can order "
                           f"(expected N.N.N[aN|bN|rcN][.postN][.devN])")
    release = tuple(int(p) for p in m["release"].split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    if m["pre"]:
        pre = (0, _PRE_RANK[m["pre"]], int(m["pre_n"]))
    elif m["dev"] and not m["post"]:
        pre = (-1, 0, 0)  # 1.0.dev1 sorts before 1.0a1
    else:
        pre = (1, 0, 0)
    post = int(m["post"]) if m["post"] else -1
    dev = int(m["dev"]) if m["dev"] else float("inf")
    return release, pre, post, dev


def is_prerelease(version: str) -> bool:
    m = _VERSION_RE.match(version)
    return bool(m and (m["pre"] or m["dev"]))


def sort_versions(versions) -> list[str]:
    return sorted(set(versions), key=version_key)


# --- the release list ------------------------------------------------------------------


def list_sdists(project: str, indexes: list[str] | None = None) -> dict[str, str]:
    """version -> sdist URL of every release on pip's indexes (first index that has it wins)."""
    indexes = pipindex.pip_index_urls() if indexes is None else indexes
    pattern = re.compile(rf"^{re.escape(project)}-(.+)\.tar\.gz$", re.I)
    found: dict[str, str] = {}
    for filename, url in pipindex.project_files(project, indexes).items():
        if (m := pattern.match(filename)) and _VERSION_RE.match(m[1]):
            found.setdefault(m[1], url)
    if not found:
        raise OverlayError(f"no {project} sdist found on any pip index ({', '.join(indexes)})")
    return found


def listed(spec: str) -> list[str]:
    """The names of an 'A,B,C' list; refused when it names none (RELEASES=,)."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise OverlayError(f"RELEASES={spec!r} names no release: give 'A,B,C' or 'A..B'")
    return names


def select(available, pin_version: str, spec: str | None, pre: bool = False) -> list[str]:
    """The releases to look at, in order.

    spec: None = the pin to the newest; 'A..B' = that range (either end may be empty;
    'latest' names the newest); 'A,B,C' = exactly those. Pre-releases only with pre=True
    (or when named in a list).
    """
    ordered = [v for v in sort_versions(available) if pre or not is_prerelease(v)]
    if not ordered:
        raise OverlayError("no releases to look at")
    newest = ordered[-1]

    def resolve(name: str, default: str) -> str:
        name = name.strip() or default
        return newest if name == "latest" else name

    if spec and ".." not in spec:
        names = [resolve(n, "") for n in listed(spec)]
        missing = [n for n in names if n not in available]
        if missing:
            raise OverlayError(f"release(s) {', '.join(missing)} not on the index "
                               f"(newest there: {newest})")
        return sort_versions(names)
    low, _, high = (spec or "..").partition("..")
    low, high = resolve(low, pin_version), resolve(high, newest)
    for end in (low, high):
        if end not in available:
            raise OverlayError(f"release {end} not on the index (newest there: {newest})")
    lo_key, hi_key = version_key(low), version_key(high)
    if lo_key > hi_key:
        raise OverlayError(f"empty release range {low}..{high} ({low} is newer)")
    return [v for v in ordered if lo_key <= version_key(v) <= hi_key]


# --- fetching with trust on first use ---------------------------------------------------


def selected(the_pin: Pin, spec: str | None, pre: bool) -> tuple[list[str], dict | None]:
    """The versions `spec` selects (status, bisect) and the index's sdist URLs (None when no
    index is reachable and `spec` names releases: then only cached sdists are used)."""
    explicit = bool(spec) and ".." not in spec
    names = listed(spec) if explicit else []  # before any download
    try:
        urls = list_sdists(the_pin.project)
    except OverlayError:
        if not explicit:
            raise
        log.stage("status").info("no index reachable; using cached sdists only")
        return select(names, the_pin.upstream_version, spec, pre), None
    return select(urls, the_pin.upstream_version, spec, pre), urls


def tofu_file() -> Path:
    return cache_dir() / "upstream-tofu.json"


def _read_tofu() -> dict:
    try:
        return json.loads(tofu_file().read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise OverlayError(f"{tofu_file()}: unreadable hash record: {exc}") from exc


def _record_tofu(filename: str, entry: dict) -> None:
    path = tofu_file()
    with file_lock(path.with_name(path.name + ".lock")):
        records = _read_tofu()
        if filename in records and records[filename]["sha256"] != entry["sha256"]:
            raise OverlayError(f"{filename}: sha256 {entry['sha256']} differs from the one "
                               f"recorded on first download {records[filename]['sha256']} "
                               f"({path})")
        records[filename] = entry
        atomic_write(path, json.dumps(dict(sorted(records.items())), indent=1) + "\n")


def _download(url: str, filename: str, progress: BatchProgress) -> tuple[Path, str, int]:
    """Stream url into the blob cache; returns (path, sha256, size)."""
    def check(sha: str, size: int) -> None:
        if "#sha256=" in url and url.rsplit("#sha256=", 1)[1].lower() != sha:
            raise OverlayError(f"{filename}: downloaded sha256 {sha} != the index's "
                               f"{url.rsplit('#sha256=', 1)[1]} ({url})")

    progress.started()
    dest, sha, size = blobcache.write(url, filename, progress.advance, check)
    progress.advance(0, finished=True)
    return dest, sha, size


@dataclass(frozen=True)
class Sdist:
    version: str
    filename: str
    path: Path
    sha256: str


def recorded_sha256(project: str, version: str) -> str | None:
    """The sdist sha256 recorded for `version` (None: never downloaded); no hashing."""
    record = _read_tofu().get(f"{project}-{version}.tar.gz")
    return record["sha256"] if record else None


def fetch_sdist(project: str, pin: Pin, version: str, urls: dict[str, str] | None,
                progress: BatchProgress) -> Sdist:
    """The verified cached sdist of `version` (downloaded and recorded on first sight)."""
    filename = f"{project}-{version}.tar.gz"
    if version == pin.upstream_version:
        art = pin.sdist
        return Sdist(version, art.filename, fetch.fetch(art, project), art.sha256)
    record = _read_tofu().get(filename)
    if record:
        art = Artifact("sdist", filename, int(record["size"]), record["sha256"])
        path = blobcache.blob_path(art.sha256)
        if path.exists():
            got = sha256_file(path)  # every reuse: a full re-hash
            if got != art.sha256:
                raise OverlayError(f"{filename}: cached file {path} has sha256 {got}, but "
                                   f"{art.sha256} was recorded on first download "
                                   f"({tofu_file()}); delete the cached file to fetch again")
            return Sdist(version, filename, path, art.sha256)
    if urls is None or version not in urls:
        raise OverlayError(f"{filename}: not cached and not on any pip index")
    log.stage("fetch").info(f"{filename} from {urls[version]}")
    path, sha, size = _download(urls[version], filename, progress)
    if record and record["sha256"] != sha:
        raise OverlayError(f"{filename}: downloaded sha256 {sha} != {record['sha256']} recorded "
                           f"on first download ({tofu_file()}): the index serves other bytes")
    if not record:
        _record_tofu(filename, {"sha256": sha, "size": size, "url": urls[version].split("#")[0],
                                "first_seen": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return Sdist(version, filename, path, sha)


# --- cached base work trees ---------------------------------------------------------------


def tree_entry(sha256: str) -> Path:
    return cache_dir() / "upstream-trees" / sha256


def base_tree(sdist: Sdist, date: str, borrow: Path | None = None) -> Path:
    """A committed git work tree of the sdist (tag `upstream`), built once per sha256.

    borrow: another cached tree's object store (the pin's), named in this one's git
    alternates before the commit, so the blobs the two releases share are stored once
    (status names the pin's objects there anyway, for its 3-way merges; the entry path is
    per sha256, so a rebuilt pin tree has the same objects at the same place).
    Callers hold `using(tree)` while they change it and reset it with `reset(tree)`.
    """
    entry = tree_entry(sdist.sha256)
    tree = entry / "tree"
    if (entry / ".complete").exists():
        return tree
    with file_lock(entry.with_name(entry.name + ".lock")):
        if (entry / ".complete").exists():
            return tree
        for stale in [entry, *entry.parent.glob(entry.name + ".tmp*")]:  # interrupted builds
            shutil.rmtree(stale, ignore_errors=True)
        staging = entry.with_name(entry.name + f".tmp{os.getpid()}.{threading.get_ident()}")
        started = time.monotonic()
        work = GitTree.unpack(sdist.path, staging / "tree")
        if borrow is not None:
            work.init()
            work.borrow_objects(borrow)
        work.init_base(date)
        work.git("config", "gc.auto", "0")  # keep the objects 3-way needs
        (staging / ".complete").write_text(f"{sdist.filename}\n")
        os.replace(staging, entry)
        print(f"  tree: {sdist.filename} unpacked and committed in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return tree


@contextmanager
def using(tree: Path):
    """Exclusive use of a cached tree: reset to the pristine release before and after."""
    with file_lock(tree.parent / "use.lock"):
        reset(tree)
        try:
            yield tree
        finally:
            reset(tree)


def reset(tree: Path) -> None:
    GitTree(tree).reset_hard(BASE_TAG)


def release_tree(pin: Pin, version: str, urls: dict[str, str] | None,
                 progress: BatchProgress) -> tuple[Sdist, Path]:
    """Fetch (or re-verify) the release's sdist and return it with its cached base tree."""
    sdist = fetch_sdist(pin.project, pin, version, urls, progress)
    pin_entry = tree_entry(pin.sdist.sha256)
    borrow = pin_entry / "tree" / ".git" / "objects" \
        if version != pin.upstream_version and (pin_entry / ".complete").exists() else None
    return sdist, base_tree(sdist, pin.released, borrow)
