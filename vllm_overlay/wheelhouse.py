"""The wheelhouse: complete outputs only, one build at a time, SHA256SUMS and manifests.

Every file appears by rename from wheelhouse/.tmp/ after it was written and verified, and
the renames are ordered (install) so that SHA256SUMS, the simple index and the manifest
never name a file whose bytes differ from what they say, whenever the build is killed; a
lock file serialises concurrent builds, and the inputs are read once, under that lock. A
build whose inputs did not change is a no-op.
"""

import contextlib
import datetime
import email.utils
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from . import apply, build, fetch, index, pin, series, verify
from .errors import OverlayError
from .paths import REPO
from .zipraw import epoch_to_date_time

WHEELHOUSE = REPO / "wheelhouse"
BUILD_TREES = Path("work") / "build"  # relative to the repository


_HELD: set[Path] = set()  # wheelhouses this process holds the lock of (re-entry is a no-op)


@contextlib.contextmanager
def locked(wheelhouse: Path):
    held = wheelhouse.resolve()
    if held in _HELD:
        yield
        return
    wheelhouse.mkdir(parents=True, exist_ok=True)
    with open(wheelhouse / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"wheel: waiting for another build holding {wheelhouse / '.lock'}",
                  file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        _HELD.add(held)
        try:
            yield
        finally:
            _HELD.discard(held)


@contextlib.contextmanager
def locked_inputs(wheelhouse: Path, patches_dir: Path, repo: Path):
    """Under the wheelhouse lock: (pin, patches, snapshot dir), each input read once.

    The series is copied into a private snapshot first and everything (the build key, the
    manifest, git am) reads the snapshot, so a series edited while this build waited for
    the lock, or while it runs, can never be built under another series' key.
    """
    with locked(wheelhouse), tempfile.TemporaryDirectory(prefix="vllm-overlay-series-") as tmp:
        snapshot = Path(tmp) / "patches"
        try:
            shutil.copytree(patches_dir, snapshot)
        except OSError as exc:
            raise OverlayError(f"{patches_dir}: cannot read the series: {exc}") from exc
        try:
            patches = series.read_series(snapshot)
        except OverlayError as exc:  # name the user's files, not the snapshot's
            raise OverlayError(str(exc).replace(str(snapshot), str(patches_dir))) from None
        yield pin.load(repo), patches, snapshot


def publish_file(tmp: Path, dest: Path) -> None:
    """Rename a finished temp file into place (atomic on one file system)."""
    fault = os.environ.get("VLLM_OVERLAY_FAULT")
    if fault == f"before-rename:{dest.name}":
        os._exit(137)  # fault injection for tests: die like a killed process
    os.replace(tmp, dest)
    if fault == f"after-rename:{dest.name}":
        os._exit(137)


def write_text(wheelhouse: Path, name: str, text: str) -> None:
    tmp = wheelhouse / ".tmp" / name
    tmp.parent.mkdir(exist_ok=True)
    tmp.write_text(text)
    publish_file(tmp, wheelhouse / name)


def source_date_epoch(patches: list[series.Patch], released: str) -> int:
    """SOURCE_DATE_EPOCH if set, else the newest patch date, else the upstream release date."""
    if env := os.environ.get("SOURCE_DATE_EPOCH"):
        if not env.strip().isdigit():
            raise OverlayError(f"SOURCE_DATE_EPOCH={env!r} is not a whole number of seconds "
                               f"since 1970-01-01 UTC (e.g. SOURCE_DATE_EPOCH=1700000000)")
        return int(env)
    dates = [email.utils.parsedate_to_datetime(p.date).timestamp() for p in patches if p.date]
    release = datetime.datetime.fromisoformat(released.replace("Z", "+00:00")).timestamp()
    return int(max(dates, default=release))


def tooling_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "vllm_overlay").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def build_key(the_pin: pin.Pin, arch: str, series_sha: str, epoch: int,
              mode: str = "overlay", extra: list[str] = ()) -> str:
    parts = [the_pin.overlay_version, arch, the_pin.sdist.sha256, the_pin.wheel(arch).sha256,
             series_sha, str(epoch), tooling_digest(), f"mode={mode}", *extra]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def label(mode: str, arch: str) -> str:
    """Names a mode's manifest and state: the overlay mode keeps the plain arch."""
    return arch if mode == "overlay" else f"{mode}-{arch}"


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def up_to_date(wheelhouse: Path, arch: str, key: str) -> Path | None:
    """The existing wheel if it was built from this build key and is unchanged since, and
    its manifest names it; SHA256SUMS and the index are repaired if they lost it."""
    try:
        state = json.loads((wheelhouse / f".state-{arch}.json").read_text())
        wheel = wheelhouse / state["filename"]
        manifest = json.loads((wheelhouse / f"manifest-{arch}.json").read_text())["wheel"]
        if state["build_key"] != key or state["stat"] != _stat(wheel) or \
                manifest["filename"] != wheel.name or manifest["sha256"] != state["sha256"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    sums = listed(wheelhouse)
    if sums.get(wheel.name) != state["sha256"]:  # SHA256SUMS deleted or edited
        sums[wheel.name] = state["sha256"]
        write_sums(wheelhouse, sums)
        shutil.rmtree(wheelhouse / ".tmp", ignore_errors=True)
    return wheel


def listed(wheelhouse: Path) -> dict[str, str]:
    """SHA256SUMS entries whose file exists (an unreadable SHA256SUMS counts as empty)."""
    try:
        sums = index.read_sums(wheelhouse)
    except OverlayError:
        return {}
    return {name: digest for name, digest in sums.items() if (wheelhouse / name).is_file()}


def write_sums(wheelhouse: Path, sums: dict[str, str]) -> None:
    """SHA256SUMS, then the simple index generated from it."""
    write_text(wheelhouse, "SHA256SUMS", "".join(f"{sums[n]}  {n}\n" for n in sorted(sums)))
    index.sync(wheelhouse)


def install(wheelhouse: Path, name: str, tmp: Path, sha256: str, manifest: dict,
            key: str) -> Path:
    """Rename the verified wheel in, with its listings, so that every state a kill can leave
    is consistent: SHA256SUMS, the index and manifest-<name>.json only ever name files
    whose bytes match them (a wheel may be unlisted until the next build, never mislisted),
    and the state file that makes a build a no-op is written last."""
    dest = wheelhouse / tmp.name
    state_file = wheelhouse / f".state-{name}.json"
    manifest_file = wheelhouse / f"manifest-{name}.json"
    try:
        previous = json.loads(manifest_file.read_text())["wheel"]["filename"]
    except (OSError, ValueError, KeyError, TypeError):
        previous = None
    state_file.unlink(missing_ok=True)  # from here on, a kill means: rebuild next time
    sums = listed(wheelhouse)
    if dest.exists():  # same file name, new bytes: unlist the old file before replacing it
        if previous == dest.name:
            manifest_file.unlink()
        if sums.pop(dest.name, None) is not None:
            write_sums(wheelhouse, sums)
    publish_file(tmp, dest)
    sums[dest.name] = sha256
    if previous and previous != dest.name:  # e.g. after a VERSION bump: only ours is listed
        sums.pop(previous, None)
    write_sums(wheelhouse, sums)
    write_text(wheelhouse, manifest_file.name, json.dumps(manifest, indent=2) + "\n")
    if previous and previous != dest.name:
        (wheelhouse / previous).unlink(missing_ok=True)
    write_text(wheelhouse, state_file.name, json.dumps(
        {"filename": dest.name, "build_key": key, "sha256": sha256, "stat": _stat(dest)}))
    return dest


def build_into(wheelhouse: Path, mode: str, arch: str, key: str, the_pin: pin.Pin, epoch: int,
               series_sha: str, patches: list[series.Patch],
               build_fn: Callable[[Path], tuple[Path, str | None, dict]]) -> Path:
    """The one publish path of every mode: lock, no-op when up to date, build_fn(tmp dir)
    writes and verifies a wheel there and returns (wheel, its sha256 if known,
    mode-specific manifest fields);
    then rename into place, manifest-<label>.json, SHA256SUMS, state."""
    name = label(mode, arch)
    with locked(wheelhouse):
        if existing := up_to_date(wheelhouse, name, key):
            print(f"wheel: {existing.name} is up to date (nothing changed)", file=sys.stderr)
            index.sync(wheelhouse)  # the PEP 503 simple index, if missing or stale
            return existing
        tmp_dir = wheelhouse / ".tmp"
        try:
            shutil.rmtree(tmp_dir, ignore_errors=True)  # leftovers of an interrupted build
            tmp_dir.mkdir()
            tmp, sha256, fields = build_fn(tmp_dir)
            sha256 = sha256 or fetch.sha256_file(tmp)
            size = tmp.stat().st_size
            upstream_art = the_pin.wheel(arch)
            manifest = {
                "mode": mode,
                "version": the_pin.overlay_version,
                "arch": arch,
                "build_key": key,
                "source_date_epoch": epoch,
                "build_time": datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(),
                "upstream": {"version": the_pin.upstream_version,
                             "artifacts": {a.key: {"filename": a.filename, "size": a.size,
                                                   "sha256": a.sha256}
                                           for a in (the_pin.sdist, upstream_art)}},
                "series": {"sha256": series_sha,
                           "patches": [{"name": p.name, "sha256": p.sha256(),
                                        "subject": p.subject,
                                        **{k.lower().replace("-", "_"): v[0] if len(v) == 1
                                           else v for k, v in p.trailers.items()}}
                                       for p in patches]},
                "wheel": {"filename": tmp.name, "sha256": sha256, "size": size},
                **fields,
            }
            dest = install(wheelhouse, name, tmp, sha256, manifest, key)
        except OSError as exc:  # a full disk, a read-only folder: one line, no traceback
            shutil.rmtree(tmp_dir, ignore_errors=True)
            where = exc.filename or tmp_dir
            raise OverlayError(f"wheel: {exc.strerror or exc}: {where}; "
                               f"the visible wheelhouse is unchanged or consistent "
                               f"(README: Guarantees), temp files removed") from exc
        shutil.rmtree(tmp_dir, ignore_errors=True)
        print(f"wheel: {dest} ({size / 1e6:.1f} MB, sha256 {sha256}) verified", file=sys.stderr)
        return dest


def make_wheel(arch: str = "x86_64", wheelhouse: Path = WHEELHOUSE,
               patches_dir: Path = series.PATCHES, repo: Path = REPO) -> Path:
    """MODE=overlay: the upstream wheel with the series' files swapped in."""
    started = time.monotonic()
    with locked_inputs(wheelhouse, patches_dir, repo) as (the_pin, patches, snapshot):
        series_sha = series.series_digest(patches, snapshot)
        epoch = source_date_epoch(patches, the_pin.released)
        key = build_key(the_pin, arch, series_sha, epoch)

        def build_overlay(tmp_dir: Path) -> tuple[Path, str, dict]:
            upstream_art = the_pin.wheel(arch)
            sdist = fetch.fetch(the_pin.sdist, the_pin.project)
            upstream = fetch.fetch(upstream_art, the_pin.project)
            tree = repo / BUILD_TREES / arch / f"vllm-{the_pin.upstream_version}"
            print(f"apply: {len(patches)} patch(es) onto {the_pin.sdist.filename} in {tree}",
                  file=sys.stderr)
            apply.apply_series(sdist, patches, tree, the_pin.released, reuse=True)
            applied = time.monotonic()
            plan = build.plan_wheel(upstream, upstream_art.filename, the_pin.upstream_version,
                                    the_pin.overlay_version, tree, patches, upstream_art.sha256)
            tmp = tmp_dir / plan.filename
            sha256 = build.write_wheel(plan, tmp, epoch_to_date_time(epoch), upstream_art.sha256,
                                       upstream_art.filename)
            verify.verify_wheel(plan, tmp, upstream_art.sha256,
                                f"vllm-{the_pin.upstream_version}.dist-info/")
            print(f"wheel: apply {applied - started:.1f} s, wheel "
                  f"{time.monotonic() - applied:.1f} s", file=sys.stderr)
            return tmp, sha256, {"changed_members": plan.changed, "not_shipped": plan.outside}

        return build_into(wheelhouse, "overlay", arch, key, the_pin, epoch, series_sha, patches,
                          build_overlay)
