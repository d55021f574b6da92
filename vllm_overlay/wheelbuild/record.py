"""The record of one build: what it is about, read once by the build's entry
(overlay_mode.build_overlay_wheel, setup_py.build_setup_py_wheel) under the wheelhouse lock.

Every stage after it (the build key, the wheel, the manifest, the SBOM, the provenance, the
constraints beside the wheel) takes this record and adds only what it produces: the pin
and the upstream wheel of the arch, the series with its digest and each patch's sha256,
the date stamped into the wheel, and the runtime lock of the arch as the build's snapshot
of locks/ holds it are each read here, once. Below the stages: it imports common/ only.
"""

import datetime
import email.utils
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from vllm_overlay.common import series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import BUILD_TREES
from vllm_overlay.common.pin import Artifact, Pin
from vllm_overlay.common.requirements import read_lock


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


def label(mode: str, arch: str) -> str:
    """Names a mode's manifest and state: the overlay mode keeps the plain arch."""
    return arch if mode == "overlay" else f"{mode}-{arch}"


@dataclass(frozen=True)
class RuntimeLock:
    """locks/runtime-<arch>.txt as the build took it, and the metadata recorded for it."""
    path: Path
    text: str
    entries: dict[str, str]  # name -> locked version
    metadata_text: str  # locks/metadata-<arch>.json ("" when there is none)

    @property
    def label(self) -> str:
        """How SBOM, provenance and constraints name the lock: its path in the repository."""
        return f"locks/{self.path.name}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class BuildRecord:
    pin: Pin
    arch: str
    mode: str  # overlay, precompiled or source
    version: str  # the built wheel's version (MODE=source adds .cu<XYZ>)
    epoch: int  # SOURCE_DATE_EPOCH of the wheel
    series_sha: str
    patches: tuple[series.Patch, ...]
    patch_sha256: dict[str, str]  # patch name -> sha256 of its file
    upstream: Artifact  # the pinned upstream wheel of the arch
    lock: RuntimeLock
    repo: Path

    @property
    def label(self) -> str:
        return label(self.mode, self.arch)

    @property
    def tree(self) -> Path:
        """Where this mode applies the series (a work tree per arch and mode)."""
        where = self.arch if self.mode == "overlay" else f"{self.arch}-{self.mode}"
        return self.repo / BUILD_TREES / where / f"vllm-{self.pin.upstream_version}"


def create(the_pin: Pin, arch: str, mode: str, patches: list[series.Patch], series_dir: Path,
           lock_dir: Path, repo: Path, version: str | None = None) -> BuildRecord:
    """The record of a build of `mode` for `arch`, its inputs read now (under the wheelhouse
    lock: `series_dir` and `lock_dir` are the build's snapshots)."""
    lock_path = lock_dir / f"runtime-{arch}.txt"
    lock_text, locked = read_lock(lock_path)
    meta = lock_dir / f"metadata-{arch}.json"
    lock = RuntimeLock(lock_path, lock_text, locked, meta.read_text() if meta.is_file() else "")
    upstream = the_pin.wheel(arch)
    hashes = {p.name: p.sha256() for p in patches}
    return BuildRecord(the_pin, arch, mode, version or the_pin.overlay_version,
                       source_date_epoch(patches, the_pin.released),
                       series.series_digest(patches, series_dir, hashes), tuple(patches),
                       hashes, upstream, lock, repo)
