"""The wheelhouse: complete outputs only, one build at a time, SHA256SUMS and manifests.

Every file appears by rename from wheelhouse/.tmp/ after it was written and verified, and
the renames are ordered (`install`) so that SHA256SUMS, the simple index and the manifest
never name a file whose bytes differ from what they say, whenever the build is killed; a
lock file serialises concurrent builds, and the inputs are read once, under that lock
(`locked_inputs`). A build whose inputs did not change is a no-op. Each build mode's
driver (build/overlay_mode.py, build/setup_py.py) hands its wheel to `store`.
"""

import contextlib
import datetime
import hashlib
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from vllm_overlay.wheelbuild import beside, constraints
from vllm_overlay.wheelbuild.record import BuildRecord, label
from vllm_overlay.common import log, pin, series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write, file_lock, replace, sha256_file
from vllm_overlay.common.paths import REPO
from vllm_overlay.common import index

WHEELHOUSE = REPO / "wheelhouse"
_log = log.stage("wheel")


_held = threading.local()  # wheelhouses this thread holds the lock of (re-entry: no-op)


@contextlib.contextmanager
def locked(wheelhouse: Path):
    """The wheelhouse lock (file_lock), which `locked_inputs` and then `store` both take."""
    held, me = getattr(_held, "paths", set()), wheelhouse.resolve()
    if me in held:
        yield
        return
    with file_lock(wheelhouse / ".lock", _log):
        _held.paths = held | {me}
        try:
            yield
        finally:
            _held.paths = held


@contextlib.contextmanager
def locked_inputs(wheelhouse: Path, patches_dir: Path, repo: Path):
    """Under the wheelhouse lock: (pin, patches, snapshot dir), each input read once.

    The series is copied into a private snapshot first and everything (the build key, the
    manifest, git am) reads the snapshot, so a series edited while this build waited for
    the lock, or while it runs, can never be built under another series' key. So is
    locks/ (constraints.snapshot_locks): the build key, the SBOM, the provenance and the
    constraints beside the wheel all read the lock once, as the build took it.
    """
    with locked(wheelhouse), tempfile.TemporaryDirectory(prefix="vllm-overlay-series-") as tmp, \
            constraints.snapshot_locks(repo, Path(tmp) / "locks"):
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


def write_text(wheelhouse: Path, name: str, text: str) -> None:
    (wheelhouse / ".tmp").mkdir(exist_ok=True)
    atomic_write(wheelhouse / name, text, tmp_dir=wheelhouse / ".tmp")


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
        for extra, digest in state.get("beside", {}).items():  # only if still as written
            if (wheelhouse / extra).is_file() and sha256_file(wheelhouse / extra) == digest:
                sums[extra] = digest
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


BESIDE_SUFFIXES = (".cdx.json", ".intoto.json")  # <wheel name without .whl><suffix>


def _kind(wheel_name: str) -> tuple[str, bool]:
    """What makes two wheels of one mode and arch: the tags (after name and version) and
    whether the version has a `.cu<XYZ>` (MODE=source) part."""
    _, version, tags = wheel_name.removesuffix(".whl").split("-", 2)
    return tags, ".cu" in version


def _leftover_wheels(wheelhouse: Path, current: str, sums: dict[str, str]) -> list[Path]:
    """Unlisted wheels of the mode and arch of `current` under another name: an older
    VERSION that a kill left behind (listed wheels are never touched)."""
    return [path for path in sorted(wheelhouse.glob("vllm-*.whl"))
            if path.name != current and path.name not in sums
            and path.name.count("-") >= 2 and _kind(path.name) == _kind(current)]


def _orphans(wheelhouse: Path, going: set[str]) -> list[Path]:
    """SBOM copies and provenance statements whose wheel is gone, or `going` (names)."""
    return [path for suffix in BESIDE_SUFFIXES for path in sorted(wheelhouse.glob(f"*{suffix}"))
            if (wheel := path.name.removesuffix(suffix) + ".whl") in going
            or not (wheelhouse / wheel).is_file()]


def install(wheelhouse: Path, name: str, tmp: Path, sha256: str, manifest: dict,
            key: str, beside_fn: Callable[[Path], dict[str, str]] | None = None) -> Path:
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
    # the files this build writes beside its wheel (below) describe the wheel listed with
    # them: those of another build (the same wheel name, this arch's constraints) are
    # unlisted before the new wheel is listed, so no kill leaves them listed beside it
    beside_before = [n for n in sums if n.startswith(dest.name.removesuffix(".whl") + ".")
                     or n == f"constraints-{manifest.get('arch')}.txt"]
    if dest.exists() and previous == dest.name:  # same name, new bytes: unlist the old file
        manifest_file.unlink()
    if [sums.pop(n) for n in [dest.name, *beside_before] if n in sums]:
        write_sums(wheelhouse, sums)
    replace(tmp, dest)
    sums[dest.name] = sha256
    if previous and previous != dest.name:  # e.g. after a VERSION bump: only ours is listed
        for old in [n for n in sums if n == previous
                    or n.startswith(previous.removesuffix(".whl") + ".")]:
            sums.pop(old)  # the old wheel, its SBOM copy and provenance (deleted below)
    write_sums(wheelhouse, sums)
    write_text(wheelhouse, manifest_file.name, json.dumps(manifest, indent=2) + "\n")
    # the previous wheel of this mode and arch, and any left unlisted by a build killed
    # here before (the manifest already named the new wheel, so it was no "previous"
    # any more); then every SBOM copy / provenance whose wheel is gone goes with it
    stale = _leftover_wheels(wheelhouse, dest.name, sums)
    orphans = _orphans(wheelhouse, {path.name for path in stale})
    if [sums.pop(orphan.name) for orphan in orphans if orphan.name in sums]:
        write_sums(wheelhouse, sums)  # unlisted before anything goes
    for path in [*stale, *orphans]:
        path.unlink(missing_ok=True)
    # the files beside the wheel (build/beside.py): unlisted while they are rewritten
    extras = beside_fn(dest) if beside_fn else {}
    if [sums.pop(extra) for extra in extras if extra in sums]:
        write_sums(wheelhouse, sums)
    for extra, text in extras.items():
        write_text(wheelhouse, extra, text)
        sums[extra] = hashlib.sha256(text.encode()).hexdigest()
    if extras:
        write_sums(wheelhouse, sums)
    write_text(wheelhouse, state_file.name, json.dumps(
        {"filename": dest.name, "build_key": key, "sha256": sha256, "stat": _stat(dest),
         "beside": {extra: sums[extra] for extra in extras}}))
    return dest


def manifest(record: BuildRecord, key: str, wheel: Path, sha256: str, fields: dict) -> dict:
    """manifest-<label>.json: the build's record, its key, the wheel, the mode's own fields."""
    the_pin = record.pin
    return {
        "mode": record.mode,
        "version": the_pin.overlay_version,
        "arch": record.arch,
        "build_key": key,
        "source_date_epoch": record.epoch,
        "build_time": datetime.datetime.fromtimestamp(record.epoch, datetime.UTC).isoformat(),
        "upstream": {"version": the_pin.upstream_version,
                     "artifacts": {a.key: {"filename": a.filename, "size": a.size,
                                           "sha256": a.sha256}
                                   for a in (the_pin.sdist, record.upstream)}},
        "series": {"sha256": record.series_sha,
                   "patches": [{"name": p.name, "sha256": record.patch_sha256[p.name],
                                "subject": p.subject,
                                **{k.lower().replace("-", "_"): v[0] if len(v) == 1 else v
                                   for k, v in p.trailers.items()}}
                               for p in record.patches]},
        "wheel": {"filename": wheel.name, "sha256": sha256, "size": wheel.stat().st_size},
        **fields,
    }


def store(wheelhouse: Path, record: BuildRecord, key: str,
          build_fn: Callable[[Path], tuple[Path, str | None, dict]]) -> Path:
    """The one way into the wheelhouse for every mode: lock, no-op when up to date, build_fn(tmp dir)
    writes and verifies a wheel there and returns (wheel, its sha256 if known,
    mode-specific manifest fields);
    then rename into place, manifest-<label>.json, SHA256SUMS, the files beside the wheel
    (build/beside.py: SBOM copy, provenance, constraints), state."""
    with locked(wheelhouse):
        if existing := up_to_date(wheelhouse, record.label, key):
            _log.info(f"{existing.name} is up to date (nothing changed)")
            index.sync(wheelhouse)  # the PEP 503 simple index, if missing or stale
            return existing
        tmp_dir = wheelhouse / ".tmp"
        try:
            shutil.rmtree(tmp_dir, ignore_errors=True)  # leftovers of an interrupted build
            tmp_dir.mkdir()
            tmp, sha256, fields = build_fn(tmp_dir)
            sha256 = sha256 or sha256_file(tmp)
            size, installing = tmp.stat().st_size, time.monotonic()
            dest = install(wheelhouse, record.label, tmp, sha256,
                           manifest(record, key, tmp, sha256, fields), key,
                           lambda wheel: beside.beside_wheel(wheelhouse, wheel, sha256, record))
        except OSError as exc:  # a full disk, a read-only folder: one line, no traceback
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise OverlayError(f"wheel: {exc.strerror or exc}: {exc.filename or tmp_dir}; "
                               f"the visible wheelhouse is unchanged or consistent "
                               f"(docs/guarantees.md), temp files removed") from exc
        shutil.rmtree(tmp_dir, ignore_errors=True)
        _log.info(f"{dest} ({size / 1e6:.1f} MB, sha256 {sha256}) verified")
        _log.info(f"install + files beside the wheel {time.monotonic() - installing:.2f} s")
        return dest


def last_built(mode: str, arch: str, wheelhouse_dir: Path = WHEELHOUSE) -> Path:
    """The wheel a mode last stored (from its state file)."""
    state = wheelhouse_dir / f".state-{label(mode, arch)}.json"
    try:
        return wheelhouse_dir / json.loads(state.read_text())["filename"]
    except (OSError, ValueError, KeyError) as exc:
        raise OverlayError(f"no MODE={mode} wheel in {wheelhouse_dir} ({state.name}: {exc}); "
                           f"run `make wheel MODE={mode}` first") from exc

