"""The wheelhouse: complete outputs only, one build at a time, SHA256SUMS and manifests.

Every file appears by rename from wheelhouse/.tmp/ after it was written and verified, so
an interrupted build leaves the visible wheelhouse as it was; a lock file serialises
concurrent builds. A build whose inputs did not change is a no-op. Each build mode's
driver (build/overlay_mode.py, build/setup_py.py) hands its wheel to `store`.
"""

import datetime
import json
import shutil
from pathlib import Path
from typing import Callable

from vllm_overlay.common import log, pin, series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write, file_lock, replace, sha256_file
from vllm_overlay.common.paths import REPO
from vllm_overlay.dist import index

WHEELHOUSE = REPO / "wheelhouse"
_log = log.stage("wheel")


def write_text(wheelhouse: Path, name: str, text: str) -> None:
    atomic_write(wheelhouse / name, text, tmp_dir=wheelhouse / ".tmp")


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


def store(wheelhouse: Path, mode: str, arch: str, key: str, the_pin: pin.Pin, epoch: int,
          series_sha: str, patches: list[series.Patch],
          build_fn: Callable[[Path], tuple[Path, str | None, dict]]) -> Path:
    """The one way into the wheelhouse for every mode: lock, no-op when up to date, build_fn(tmp dir)
    writes and verifies a wheel there and returns (wheel, its sha256 if known,
    mode-specific manifest fields);
    then rename into place, manifest-<label>.json, SHA256SUMS, state."""
    name = label(mode, arch)
    with file_lock(wheelhouse / ".lock", _log):
        if existing := up_to_date(wheelhouse, name, key):
            _log.info(f"{existing.name} is up to date (nothing changed)")
            index.sync(wheelhouse)  # the PEP 503 simple index, if missing or stale
            return existing
        tmp_dir = wheelhouse / ".tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)  # leftovers of an interrupted build
        tmp_dir.mkdir()
        tmp, sha256, fields = build_fn(tmp_dir)
        sha256 = sha256 or sha256_file(tmp)
        dest = wheelhouse / tmp.name
        replace(tmp, dest)
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
        _log.info(f"{dest} ({size / 1e6:.1f} MB, sha256 {sha256}) verified")
        return dest


def last_built(mode: str, arch: str, wheelhouse_dir: Path = WHEELHOUSE) -> Path:
    """The wheel a mode last stored (from its state file)."""
    state = wheelhouse_dir / f".state-{label(mode, arch)}.json"
    try:
        return wheelhouse_dir / json.loads(state.read_text())["filename"]
    except (OSError, ValueError, KeyError) as exc:
        raise OverlayError(f"no MODE={mode} wheel in {wheelhouse_dir} ({state.name}: {exc}); "
                           f"run `make wheel MODE={mode}` first") from exc

