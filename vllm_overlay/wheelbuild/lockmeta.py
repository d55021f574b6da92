"""The locks' own metadata: locks/metadata-<arch>.json, written by `make lock`.

For every package of locks/runtime-<arch>.txt and locks/test-<arch>.txt it records the
Requires-Dist and Requires-Python of the locked version, read from a file whose sha256 the
lock names, and the roots each lock was resolved from. The metadata comes, in this order of
preference, from the index's PEP 658 file of a locked wheel (its hash checked), from the
METADATA member of a locked wheel read with HTTP range requests (what pip and uv resolve
from; the file is not downloaded whole: torch is 915 MB), or from a locked sdist downloaded
whole (its sha256 checked). The ranged reads are proven later: `make test` compares the
record with the dist-info of every package its runtime venv installed from the hash-checked
files (testenv.check_metadata).
`lockcheck` then proves, with no network, that each lock is closed: every dependency of
every locked package is locked at a version that satisfies it.
"""

import email.parser
import hashlib
import io
import json
import sys
import tarfile
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vllm_overlay.wheelbuild import constraints, fetch, supplyenv
from vllm_overlay.common import pin, pipindex
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write
from vllm_overlay.common.paths import REPO
from vllm_overlay.common.requirements import lock_hashes, requirement_lines

TIMEOUT = 60  # s per request


def metadata_path(arch: str, repo: Path = REPO) -> Path:
    return constraints.lock_dir(repo) / f"metadata-{arch}.json"


def _get(url: str, accept: str = "*/*", byte_range: str = "") -> tuple[bytes, str]:
    headers = {"Accept": accept, **({"Range": f"bytes={byte_range}"} if byte_range else {})}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:
            return resp.read(), resp.headers.get("Content-Type", "")
    except (OSError, ValueError) as exc:
        raise OverlayError(f"{urllib.parse.urlsplit(url).netloc or url}: {url}: {exc}") from exc


class RangeFile(io.RawIOBase):
    """A remote file read through HTTP range requests, in 256 KiB blocks: enough for
    zipfile to read a wheel's central directory and one member."""

    BLOCK = 1 << 18

    def __init__(self, url: str, size: int):
        self.url, self.size, self.pos, self.blocks = url, size, 0, {}

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = [offset, self.pos + offset, self.size + offset][whence]
        return self.pos

    def _block(self, n: int) -> bytes:
        if n not in self.blocks:
            end = min(self.size, (n + 1) * self.BLOCK) - 1
            body, _ = _get(self.url, byte_range=f"{n * self.BLOCK}-{end}")
            if len(body) != end - n * self.BLOCK + 1:  # a server that ignores Range
                raise OverlayError(f"{self.url}: no byte ranges served")
            self.blocks[n] = body
        return self.blocks[n]

    def read(self, n: int = -1) -> bytes:
        end = self.size if n < 0 else min(self.size, self.pos + n)
        out = b""
        while self.pos < end:
            block = self._block(self.pos // self.BLOCK)
            start = self.pos % self.BLOCK
            out += block[start:start + end - self.pos]
            self.pos += len(block[start:start + end - self.pos])
        return out


def _index_files(project: str) -> list[dict]:
    """PEP 691 file entries for `project` over pip's indexes (the first index that has it)."""
    for index in pipindex.pip_index_urls():
        if not index.startswith(("http:", "https:")):
            continue
        page = index.rstrip("/") + f"/{project}/"
        try:
            body, ctype = _get(page, "application/vnd.pypi.simple.v1+json")
        except OverlayError:
            continue
        if "json" in ctype:
            return [{**f, "url": urllib.parse.urljoin(page, f["url"])}
                    for f in json.loads(body)["files"]]
    raise OverlayError(f"{project}: no JSON simple page (PEP 691) on pip's indexes "
                       f"({', '.join(pipindex.pip_index_urls())})")


def _parse(text: str) -> dict:
    msg = email.parser.Parser().parsestr(text, headersonly=True)
    return {"requires_dist": msg.get_all("Requires-Dist") or [],
            "requires_python": msg.get("Requires-Python") or ""}


def _from_archive(data: bytes, filename: str) -> str:
    if filename.endswith(".whl"):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            name = next(n for n in zf.namelist() if n.count("/") == 1
                        and n.endswith(".dist-info/METADATA"))
            return zf.read(name).decode()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = min((m for m in tar.getmembers() if m.name.endswith("/PKG-INFO")),
                     key=lambda m: m.name.count("/"))
        return tar.extractfile(member).read().decode()


def _installable(filename: str, arch: str) -> bool:
    """Could pip install this file on CPython 3.11, Linux, `arch`? (Wheels of one version may
    declare different Requires-Dist per platform: torch's macOS wheels list no nvidia-*.)"""
    if not filename.endswith(".whl"):
        return True
    py, abi, plat = filename[:-4].split("-")[-3:]
    pys = {"py3", "py311", "cp311", "py2.py3"} | {f"cp3{n}" for n in range(12) if abi == "abi3"}
    return (any(t in pys for t in py.split(".")) and
            all(p == "any" or (p.startswith(("manylinux", "linux")) and p.endswith(arch))
                for p in plat.split(".")))


def package_metadata(name: str, version: str, hashes: set[str], arch: str) -> dict:
    """Requires-Dist + Requires-Python of `name==version`, read from a locked file."""
    files = [f for f in _index_files(name) if f.get("hashes", {}).get("sha256") in hashes
             and _installable(f["filename"], arch)]
    if not files:
        raise OverlayError(f"{name}=={version}: no file on the index has a sha256 the lock names")
    for f in files:
        meta = f.get("core-metadata") or f.get("dist-info-metadata")
        if f["filename"].endswith(".whl") and isinstance(meta, dict) and "sha256" in meta:
            body, _ = _get(f["url"].split("#")[0] + ".metadata")
            if hashlib.sha256(body).hexdigest() != meta["sha256"]:
                raise OverlayError(f"{f['filename']}.metadata: sha256 differs from the index's")
            return {"version": version, "from": f["filename"], **_parse(body.decode())}
    wheels = [f for f in files if f["filename"].endswith(".whl") and f.get("size")]
    if wheels:
        smallest = min(wheels, key=lambda f: f["size"])
        with zipfile.ZipFile(RangeFile(smallest["url"].split("#")[0], smallest["size"])) as zf:
            name = next(n for n in zf.namelist() if n.count("/") == 1
                        and n.endswith(".dist-info/METADATA"))
            text = zf.read(name).decode()
        return {"version": version, "from": smallest["filename"], **_parse(text)}
    smallest = min(files, key=lambda f: f.get("size") or 1 << 62)
    body, _ = _get(smallest["url"].split("#")[0])
    if hashlib.sha256(body).hexdigest() not in hashes:
        raise OverlayError(f"{smallest['filename']}: sha256 is not one the lock names")
    return {"version": version, "from": smallest["filename"],
            **_parse(_from_archive(body, smallest["filename"]))}


def lock_roots(arch: str, repo: Path = REPO) -> dict[str, list[str]]:
    """What each lock is resolved from: the pin's runtime (locks/runtime-<arch>.in) and the
    upstream test packages (tests/upstream/requirements-test.txt)."""
    source = constraints.lock_dir(repo) / f"runtime-{arch}.in"
    return {"runtime": requirement_lines(source.read_text()),
            "test": requirement_lines((repo / constraints.TEST_REQUIREMENTS).read_text())}


def record(arch: str, repo: Path = REPO) -> Path:
    """Write locks/metadata-<arch>.json for the committed locks of `arch` (network)."""
    runtime_text, _ = constraints.read_lock(constraints.runtime_lock(arch, repo))
    test_text, _ = constraints.read_lock(constraints.test_lock(arch, repo))
    wanted = {**lock_hashes(runtime_text), **lock_hashes(test_text)}
    print(f"lock: metadata of {len(wanted)} locked packages ({arch})", file=sys.stderr,
          flush=True)
    with ThreadPoolExecutor(8) as pool:
        found = dict(zip(wanted, pool.map(
            lambda name: package_metadata(name, *wanted[name], arch), wanted)))
    doc = {
        "arch": arch, "python": constraints.PYTHON, "platform": constraints.PLATFORM,
        "roots": lock_roots(arch, repo),
        "locks": {"runtime": sorted(lock_hashes(runtime_text)),
                  "test": sorted(lock_hashes(test_text))},
        "packages": dict(sorted(found.items())),
    }
    path = metadata_path(arch, repo)
    atomic_write(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"lock: {path} ({len(found)} packages)", file=sys.stderr)
    return path


def lock_pin(arch: str, repo: Path = REPO) -> None:
    """`make lock ARCH=<arch>`: resolve the runtime and test locks of the repo's pin and record
    their metadata (network). `make rebase` runs this same code for the new pin."""
    the_pin = pin.load(repo)
    art = the_pin.wheel(arch)
    # rehash: the lock is made from this wheel's METADATA, so its bytes are hashed now, not
    # taken on the cache's "verified" marker (size + mtime + inode survive an in-place write)
    constraints.make_lock(arch, fetch.fetch(art, the_pin.project, rehash=True), art.filename,
                          the_pin.upstream_version, repo)
    record(arch, repo)  # what the no-network closure test reads


def lock_follows(arch: str, repo: Path = REPO) -> bool:
    """Whether `make lock ARCH=<arch>` completed for the repo's current pin: the runtime
    roots were read from the pinned wheel, and the metadata record describes these very
    locks (a lock step killed or failed half-way does not count)."""
    the_pin = pin.load(repo)
    art = the_pin.wheel(arch)
    source = constraints.lock_dir(repo) / f"runtime-{arch}.in"
    try:
        if not source.read_text().startswith(
                constraints.source_header(the_pin.upstream_version, art.filename)):
            return False
        doc = json.loads(metadata_path(arch, repo).read_text())
        runtime = constraints.runtime_lock(arch, repo).read_text()
        test = constraints.test_lock(arch, repo).read_text()
        return (doc["roots"] == lock_roots(arch, repo)
                and doc["locks"] == {"runtime": sorted(lock_hashes(runtime)),
                                     "test": sorted(lock_hashes(test))})
    except (OSError, ValueError, KeyError, TypeError):
        return False


def closure_request(arch: str, lock: str, repo: Path = REPO,
                    roots: list[str] | None = None, locked: dict[str, str] | None = None) -> dict:
    """lockcheck.problems' arguments for a lock of the repo: "runtime" (locks/runtime-<arch>
    .txt over its roots) or "test" (runtime + test lock over both roots); `roots` instead of
    the recorded ones (make wheel: the built wheel's own Requires-Dist); `locked`: the
    runtime lock's entries, when the caller read it already (a build's record)."""
    path = metadata_path(arch, repo)
    if not path.is_file():
        raise OverlayError(f"{path}: no lock metadata for {arch}: run `make lock ARCH={arch}`")
    try:
        record_ = json.loads(path.read_text())
        packages = record_["packages"]
    except (ValueError, KeyError, TypeError) as exc:
        raise OverlayError(f"{path}: not a lock metadata record ({exc}): run `make lock "
                           f"ARCH={arch}`") from exc
    if locked is None:
        locked = constraints.read_lock(constraints.runtime_lock(arch, repo))[1]
    if roots is None:
        recorded = lock_roots(arch, repo)
        roots = recorded["runtime"] + (recorded["test"] if lock == "test" else [])
    if lock == "test":
        locked = {**locked, **constraints.read_lock(constraints.test_lock(arch, repo))[1]}
    return {"locked": locked, "packages": packages, "roots": roots, "arch": arch,
            "python": constraints.PYTHON, "lock": lock}


def check_wheel_requirements(arch: str, requires_dist: list[str], what: str,
                             repo: Path = REPO, locked: dict[str, str] | None = None) -> None:
    """Refuse a runtime lock that does not satisfy `what`'s own Requires-Dist (specifiers,
    markers for the arch, extras, and what those need in turn): the SBOM, the constraints
    file and the test environment are all made from that lock."""
    if not requires_dist:
        return
    request = {**closure_request(arch, "runtime", repo, roots=requires_dist, locked=locked),
               "root": what}
    proc = supplyenv.run_module("lockcheck", [], json.dumps(request))
    if proc.returncode:
        found = proc.stdout.strip().splitlines()
        found.sort(key=lambda line: what not in line)  # the wheel's own requirements first
        raise OverlayError(f"{constraints.runtime_lock(arch, repo)} does not satisfy {what} "
                           f"({len(found)} problem(s)): " + "; ".join(found[:5])
                           + f"; run `make lock ARCH={arch}`")
