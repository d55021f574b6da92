"""Upstream releases: list them from pip's indexes, order them, fetch their sdists, and keep
every sdist's files in one git store in the cache (work trees only while in use).

Only the pinned sdist has a hash in upstream.lock.json. For every other release the sdist's
sha256 is recorded the first time we download it (trust on first use, `upstream-tofu.json`
in the cache) and every later use re-hashes the cached file against that record.
"""

import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import blobcache, log, pipindex
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write, file_lock, sha256_file
from vllm_overlay.common.git import git
from vllm_overlay.common.gittree import BASE_TAG, GitTree
from vllm_overlay.common.http import BatchProgress
from vllm_overlay.common.paths import cache_dir
from vllm_overlay.common.pin import Artifact, Pin
from vllm_overlay.upstream import sdist_import

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


# --- the store: every release's files once; work trees only while they are used -------


def store() -> Path:
    """One bare git repository in the cache with every release's files as one commit (ref
    `sdist_ref`), packed: a file the releases share is stored once, and no work tree is kept.
    Work trees (`work_tree`) write their objects here too: the blobs of the series applied
    on the pin are the bases of the other releases' 3-way merges."""
    repo = cache_dir() / "upstream-git"
    if not (repo / "HEAD").exists():
        with file_lock(repo.with_name(repo.name + ".lock")):
            if not (repo / "HEAD").exists():
                staging = repo.with_name(repo.name + f".tmp{os.getpid()}")
                shutil.rmtree(staging, ignore_errors=True)
                staging.parent.mkdir(parents=True, exist_ok=True)
                git(staging.parent, "init", "-q", "--bare", str(staging))
                _no_gc(staging)
                # Always a pack, however few the files: an import skips packed blobs only.
                git(staging, "config", "fastimport.unpackLimit", "0")
                os.replace(staging, repo)
    return repo


def _no_gc(repo: Path) -> None:
    """No automatic gc or maintenance: work trees' commits are unreachable from the store's
    refs, and a prune there would drop the blobs later 3-way merges need."""
    git(repo, "config", "gc.auto", "0")
    git(repo, "config", "maintenance.auto", "false")


def sdist_ref(sha256: str) -> str:
    return f"refs/sdist/{sha256}"


def source_commit(sdist: Sdist, date: str) -> str:
    """The store's commit of the sdist's files, imported once per sha256."""
    repo, ref = store(), sdist_ref(sdist.sha256)
    if commit := GitTree(repo).rev(ref):
        return commit
    # One import at a time: each one skips the blobs the store already has packed.
    with file_lock(repo / "import.lock"):
        if not GitTree(repo).rev(ref):
            started = time.monotonic()
            sdist_import.import_sdist(sdist.path, repo, ref, date)
            print(f"  tree: {sdist.filename} imported in {time.monotonic() - started:.1f} s",
                  file=sys.stderr, flush=True)
    return GitTree(repo).rev(ref)


class WorkTrees:
    """Private work trees whose .git/objects is repo's object store (a link), so what
    `git am` writes stays. A tree is reused, one release after another: switching rewrites
    only the files that differ (a fresh checkout and its removal cost most of a release's
    evaluation). All are removed on exit."""

    def __init__(self, repo: Path):
        self.objects = Path(GitTree(repo).out("rev-parse", "--path-format=absolute",
                                              "--git-path", "objects"))
        self._free: list[Path] = []
        self._made: list[Path] = []
        self._lock = threading.Lock()

    def __enter__(self) -> "WorkTrees":
        return self

    def __exit__(self, *exc) -> None:
        for tree in self._made:
            shutil.rmtree(tree, ignore_errors=True)  # (the objects link, not what it names)

    @contextmanager
    def checkout(self, commit: str):
        """A tree with exactly `commit`'s files (tag `upstream`, branch `overlay`), as a
        fresh checkout has them, for the with block."""
        with self._lock:
            tree = self._free.pop() if self._free else None
        tree = tree or self._new_tree()
        try:
            GitTree(tree).git("tag", "-f", BASE_TAG, commit)
            GitTree(tree).reset_hard(BASE_TAG)  # (the branch `overlay` moves there)
            yield tree
        finally:
            with self._lock:
                self._free.append(tree)

    def _new_tree(self) -> Path:
        parent = cache_dir() / "upstream-work"
        parent.mkdir(parents=True, exist_ok=True)
        tree = Path(tempfile.mkdtemp(prefix="tree-", dir=parent))
        with self._lock:
            self._made.append(tree)
        work = GitTree(tree)
        work.init()  # (on branch `overlay`)
        shutil.rmtree(work.objects)
        work.objects.symlink_to(self.objects)
        _no_gc(tree)
        work.git("config", "core.autocrlf", "false")
        return tree


@contextmanager
def work_tree(repo: Path, commit: str):
    """One private checkout of `commit` (WorkTrees.checkout), removed on exit."""
    with WorkTrees(repo) as trees, trees.checkout(commit) as tree:
        yield tree


def release_source(pin: Pin, version: str, urls: dict[str, str] | None,
                   progress: BatchProgress) -> tuple[Sdist, str]:
    """Fetch (or re-verify) the release's sdist; it and its commit in the store."""
    sdist = fetch_sdist(pin.project, pin, version, urls, progress)
    return sdist, source_commit(sdist, pin.released)


@contextmanager
def release_tree(pin: Pin, version: str, urls: dict[str, str] | None,
                 progress: BatchProgress):
    """(sdist, a private work tree of the release, pristine), for the with block."""
    sdist, commit = release_source(pin, version, urls, progress)
    with work_tree(store(), commit) as tree:
        yield sdist, tree
