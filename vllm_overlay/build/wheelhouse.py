"""The wheelhouse: complete outputs only, one build at a time, SHA256SUMS and manifests.

Every file appears by rename from wheelhouse/.tmp/ after it was written and verified, so
an interrupted build leaves the visible wheelhouse as it was; a lock file serialises
concurrent builds. A build whose inputs did not change is a no-op.
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
import time
from pathlib import Path
from typing import Callable

from vllm_overlay.build import apply
from vllm_overlay.build import overlay as build
from vllm_overlay.build import fetch
from vllm_overlay.dist import index
from vllm_overlay.common import pin
from vllm_overlay.common import series
from vllm_overlay.build import verify
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO
from vllm_overlay.build.zipraw import epoch_to_date_time

WHEELHOUSE = REPO / "wheelhouse"
BUILD_TREES = Path("work") / "build"  # relative to the repository


@contextlib.contextmanager
def locked(wheelhouse: Path):
    wheelhouse.mkdir(parents=True, exist_ok=True)
    with open(wheelhouse / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"wheel: waiting for another build holding {wheelhouse / '.lock'}",
                  file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def publish_file(tmp: Path, dest: Path) -> None:
    """Rename a finished temp file into place (atomic on one file system)."""
    if os.environ.get("VLLM_OVERLAY_FAULT") == f"before-rename:{dest.name}":
        os._exit(137)  # fault injection for tests: die like a killed process
    os.replace(tmp, dest)


def write_text(wheelhouse: Path, name: str, text: str) -> None:
    tmp = wheelhouse / ".tmp" / name
    tmp.write_text(text)
    publish_file(tmp, wheelhouse / name)


def source_date_epoch(patches: list[series.Patch], released: str) -> int:
    """SOURCE_DATE_EPOCH if set, else the newest patch date, else the upstream release date."""
    if env := os.environ.get("SOURCE_DATE_EPOCH"):
        return int(env)
    dates = [email.utils.parsedate_to_datetime(p.date).timestamp() for p in patches if p.date]
    release = datetime.datetime.fromisoformat(released.replace("Z", "+00:00")).timestamp()
    return int(max(dates, default=release))


def tooling_digest() -> str:
    digest = hashlib.sha256()
    package = REPO / "vllm_overlay"
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + path.read_bytes())
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
    """The existing wheel if it was built from this build key and is unchanged since."""
    try:
        state = json.loads((wheelhouse / f".state-{arch}.json").read_text())
        wheel = wheelhouse / state["filename"]
        return wheel if state["build_key"] == key and state["stat"] == _stat(wheel) else None
    except (OSError, ValueError, KeyError):
        return None


def update_sha256sums(wheelhouse: Path, filename: str, sha256: str) -> None:
    sums_file, lines = wheelhouse / "SHA256SUMS", {}
    if sums_file.exists():
        for line in sums_file.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if (wheelhouse / name).exists():
                lines[name] = digest
    lines[filename] = sha256
    write_text(wheelhouse, "SHA256SUMS", "".join(f"{lines[n]}  {n}\n" for n in sorted(lines)))


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
        shutil.rmtree(tmp_dir, ignore_errors=True)  # leftovers of an interrupted build
        tmp_dir.mkdir()
        tmp, sha256, fields = build_fn(tmp_dir)
        sha256 = sha256 or fetch.sha256_file(tmp)
        dest = wheelhouse / tmp.name
        publish_file(tmp, dest)
        size = dest.stat().st_size
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
                       "patches": [{"name": p.name, "sha256": p.sha256(), "subject": p.subject,
                                    **{k.lower().replace("-", "_"): v[0] if len(v) == 1 else v
                                       for k, v in p.trailers.items()}}
                                   for p in patches]},
            "wheel": {"filename": dest.name, "sha256": sha256, "size": size},
            **fields,
        }
        write_text(wheelhouse, f"manifest-{name}.json", json.dumps(manifest, indent=2) + "\n")
        update_sha256sums(wheelhouse, dest.name, sha256)
        index.sync(wheelhouse)  # wheelhouse/simple/: PEP 503 index from SHA256SUMS
        write_text(wheelhouse, f".state-{name}.json",
                   json.dumps({"filename": dest.name, "build_key": key, "stat": _stat(dest)}))
        shutil.rmtree(tmp_dir, ignore_errors=True)
        print(f"wheel: {dest} ({size / 1e6:.1f} MB, sha256 {sha256}) verified", file=sys.stderr)
        return dest


def make_wheel(arch: str = "x86_64", wheelhouse: Path = WHEELHOUSE,
               patches_dir: Path = series.PATCHES, repo: Path = REPO) -> Path:
    """MODE=overlay: the upstream wheel with the series' files swapped in."""
    started = time.monotonic()
    the_pin = pin.load(repo)
    patches = series.read_series(patches_dir)
    series_sha = series.series_digest(patches, patches_dir)
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
                                the_pin.overlay_version, tree, patches)
        tmp = tmp_dir / plan.filename
        sha256 = build.write_wheel(plan, tmp, epoch_to_date_time(epoch))
        verify.verify_wheel(plan, tmp, upstream_art.sha256,
                            f"vllm-{the_pin.upstream_version}.dist-info/")
        print(f"wheel: apply {applied - started:.1f} s, wheel {time.monotonic() - applied:.1f} s",
              file=sys.stderr)
        return tmp, sha256, {"changed_members": plan.changed, "not_shipped": plan.outside}

    return build_into(wheelhouse, "overlay", arch, key, the_pin, epoch, series_sha, patches,
                      build_overlay)
