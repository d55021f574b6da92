"""Benchmark `status` over every release from the pin to the newest, cold and warm cache.

Targets (2-core machine, the 21 releases from 0.19.1): warm <= 30 s; cold (an empty cache)
<= 5 min and <= 1.5 GB of cache growth. Prints the time per release and in total,
and, as a baseline measured in the same run, what one release costs without the tree cache
(unpack the pinned sdist + commit it, as a fresh `git am` check would need).
Drift (upstream/drift.py): `status` with and without drift, both measured here (alternating,
best of --repeat each, reports written to a temp dir); target: with drift within 1.5x.
Run: `make bench-status [PATCHES=dir] [RELEASES=A..B|A,B]` (on a cache that lacks some of
the releases, the first run downloads and imports them, with drift: that is the cold figure,
time and the cache's growth; then the timed warm runs follow; RELEASES as for `make status`,
e.g. RELEASES=0.19.1 for a quick run on the pin alone). A really cold figure needs an empty
cache: `VLLM_OVERLAY_CACHE=/tmp/empty make bench-status` (the tool venvs it makes first are
not counted).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vllm_overlay.wheelbuild import apply  # noqa: E402
from vllm_overlay.common import blobcache  # noqa: E402
from vllm_overlay.wheelbuild import fetch  # noqa: E402
from vllm_overlay.common import pin  # noqa: E402
from vllm_overlay.common import series  # noqa: E402
from vllm_overlay.upstream import drift  # noqa: E402
from vllm_overlay.upstream import status  # noqa: E402
from vllm_overlay.upstream import releases as upstream  # noqa: E402
from vllm_overlay.common.errors import OverlayError  # noqa: E402
from vllm_overlay.common.paths import cache_dir  # noqa: E402
from vllm_overlay.common.gittree import GitTree  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=Path, default=series.PATCHES)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each variant")
    parser.add_argument("--releases", help="as `status --releases` (default: pin..newest)")
    args = parser.parse_args()
    args.patches = args.patches.resolve()  # git runs inside the release trees (as `status`)
    the_pin = pin.load()
    patches = series.read_series(args.patches)
    t = time.monotonic()
    urls = upstream.list_sdists(the_pin.project)
    versions = upstream.select(urls, the_pin.upstream_version, args.releases)
    listing = time.monotonic() - t
    _cold_run(the_pin, patches, versions, urls, args)
    t = time.monotonic()
    matrix = status.compute(the_pin, patches, versions, urls, args.patches, args.jobs)
    warm = time.monotonic() - t
    t = time.monotonic()
    drift.for_matrix(the_pin, patches, matrix)  # fills the drift cache if it is cold
    print(f"drift warm-up (not the benchmark): {time.monotonic() - t:.1f} s")

    def full(with_drift: bool) -> float:
        """What `make status [--no-drift]` does after listing the releases."""
        with tempfile.TemporaryDirectory(prefix="bench-status-") as out:
            t = time.monotonic()
            found_matrix = status.compute(the_pin, patches, versions, urls, args.patches,
                                          args.jobs)
            found = drift.for_matrix(the_pin, patches, found_matrix) if with_drift else None
            status.write_reports(found_matrix, Path(out), found)
            return time.monotonic() - t

    runs = {False: [], True: []}
    for _ in range(args.repeat):
        for with_drift in (False, True):
            runs[with_drift].append(full(with_drift))

    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        t = time.monotonic()
        sdist = fetch.fetch(the_pin.sdist, the_pin.project)
        tree = apply.unpack_sdist(sdist, Path(tmp) / "tree")
        apply.init_base(tree, the_pin.released)
        baseline = time.monotonic() - t

    print(f"\nstatus, warm cache: {len(patches)} patch(es) x {len(versions)} release(s) "
          f"({versions[0]} .. {versions[-1]}), {args.jobs} in parallel")
    print(f"{'release':>10}  {'seconds':>8}")
    for release in matrix.releases:
        print(f"{release.version:>10}  {release.seconds:8.2f}")
    print(f"{'listing':>10}  {listing:8.2f}   (release list from the index)")
    print(f"{'total':>10}  {warm + listing:8.2f}   (target <= 30 s warm)")
    per_release = warm / len(versions)
    plain, with_drift = min(runs[False]), min(runs[True])
    print(f"\nstatus without drift: {plain:.2f} s, with drift: {with_drift:.2f} s (best of "
          f"{args.repeat}; runs: {', '.join(f'{x:.1f}' for x in runs[False])} / "
          f"{', '.join(f'{x:.1f}' for x in runs[True])} s) = {with_drift / plain:.2f} x "
          f"(target <= 1.5 x)")
    sdists = sum(_disk(blobcache.blob_path(r.sha256)) for r in matrix.releases)
    store = _disk(upstream.store())
    print(f"\ndisk in the cache: sdists of these {len(versions)} release(s) {sdists / 1e6:.0f} MB "
          f"+ the git store of every release's files {store / 1e6:.0f} MB = "
          f"{(sdists + store) / 1e6:.0f} MB (target for 21: <= 1.5 GB)")
    print(f"\nbaseline, same run: unpack + commit one sdist without the cache: {baseline:.2f} s")
    print(f"warm time per release (wall, amortised): {per_release:.2f} s = "
          f"{per_release / baseline:.2f} x the baseline; without the cache the same run "
          f"would need at least {baseline * len(versions):.0f} s of unpacking alone")
    return 0


def _cold_run(the_pin, patches, versions, urls, args) -> None:
    """On a cache that lacks some of the releases: the first run (status + drift), timed, and
    how much the cache grew (the tool venvs it makes on an empty cache counted apart)."""
    cold = [v for v in versions if v != the_pin.upstream_version
            and not GitTree(upstream.store()).rev(upstream.sdist_ref(_recorded_sha(v) or "-"))]
    if not cold:
        return
    print(f"cold run first ({len(cold)} release(s) not cached: {', '.join(cold)})")

    def tools() -> int:
        return _disk(cache_dir() / "venvs") + _disk(cache_dir() / "uv")

    disk, tools_disk, t = _disk(cache_dir()), tools(), time.monotonic()
    matrix = status.compute(the_pin, patches, versions, urls, args.patches, args.jobs)
    drift.for_matrix(the_pin, patches, matrix)
    seconds, tools_disk = time.monotonic() - t, tools() - tools_disk
    grown = _disk(cache_dir()) - disk - tools_disk
    print(f"  cold run (status + drift): {seconds:.1f} s (target <= 300 s), the cache grew "
          f"{grown / 1e9:.2f} GB (target <= 1.5 GB) + {tools_disk / 1e6:.0f} MB of tool venvs")


def _disk(path: Path) -> int:
    """Bytes allocated on disk under path (a file or a folder; links not followed)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if p.exists())


def _recorded_sha(version: str) -> str | None:
    record = upstream._read_tofu().get(f"vllm-{version}.tar.gz")
    return record["sha256"] if record else None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OverlayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
