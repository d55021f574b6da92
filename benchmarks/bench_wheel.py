"""Benchmark of `make wheel` on the real 433 MB upstream wheel (warm cache). Prints figures.

In one run, so the ratios compare like with like on a shared, noisy machine:
  - cp of the upstream wheel (the floor for writing 433 MB),
  - python -m wheel unpack + pack of it (what a naive repack costs),
  - a build after a change to the series (apply + wheel write + verify), with its phases
    from the build's log (apply; plan; the one pass: read+hash of the upstream wheel in a
    worker thread beside write+hash of the new one, the wait for the SBOM, fsync; verify;
    install + the files beside the wheel),
  - a build with nothing changed (no-op),
  - the build after `rm wheelhouse/*.whl` (issue 28's measure: the series applied again,
    the wheel written again), alternated with cp: the median of the per-pair ratios (5
    pairs after a warm-up; 1 pair with --smoke),
  - a cold build: a fresh cache (the pinned files linked in, nothing remembered), so the
    one-time check of upstream's RECORD runs (it streams every member),
each a fresh process; peak RSS from the kernel's accounting of that process.
Targets: rebuild <= 3 x cp + apply time; the build after rm of the wheel <= 6 x cp
(issue 28, paired in the same run); >= 20x faster than unpack+pack; no-op < 1 s; peak
memory < 300 MB.
--smoke (CI): the cp baseline, the rebuild, the no-op and one pair of the rm-and-build
(no cold build, no naive repack).
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

from vllm_overlay.common.git import git
from vllm_overlay.wheelbuild import apply
from vllm_overlay.wheelbuild import export
from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import pin
from vllm_overlay.common import series
from vllm_overlay.common import venvs
from vllm_overlay.common.paths import cache_dir

REPO = benchlib.REPO

# The build in a fresh process, which reports its own peak RSS (itself and git children).
BUILD = ("import resource as R, sys; from pathlib import Path; from vllm_overlay.wheelbuild "
         "import overlay_mode; r = Path(sys.argv[1]); overlay_mode.build_overlay_wheel('x86_64', "
         "r / 'wheelhouse', r / 'patches', r); print('peak_kb', max(R.getrusage(w).ru_maxrss "
         "for w in (R.RUSAGE_SELF, R.RUSAGE_CHILDREN)), file=sys.stderr)")


def timed(cmd: list[str], **kwargs) -> tuple[float, str]:
    """(wall seconds, stderr) of one command in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"benchmark command failed: {cmd}\n{proc.stderr}")
    return wall, proc.stderr


def build(repo: Path, env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, log) of one build."""
    wall, log = timed([sys.executable, "-c", BUILD, str(repo)], cwd=REPO, env=env)
    return wall, int(re.search(r"peak_kb (\d+)", log)[1]) / 1024, log


# The build's timing lines (overlay_mode.phases, wheelhouse.store): label -> pattern.
PHASES = {"apply (git am of the series)": r"apply ([\d.]+) s",
          "plan": r"plan ([\d.]+) s",
          "one pass over the upstream wheel": r"pass ([\d.]+) s",
          "  read+hash upstream (worker thread)": r"read\+hash ([\d.]+) s",
          "  write+hash new wheel (beside it)": r"write\+hash ([\d.]+) s",
          "  waited for the SBOM render": r"SBOM waited for ([\d.]+) s",
          "  fsync": r"fsync ([\d.]+) s",
          "verify (from the pass; no re-read)": r"verify ([\d.]+) s",
          "install + files beside the wheel": r"files beside the wheel ([\d.]+) s"}


def phases(log: str) -> list[str]:
    """The build's phases, one line each, as its log states them ("n/a" if it did not)."""
    lines = "\n".join(line.removeprefix("wheel: ") for line in log.splitlines()
                      if line.startswith("wheel: "))
    found = {label: re.search(pattern, lines) for label, pattern in PHASES.items()}
    return [f"    {label:<38} {float(m[1]):5.2f} s" if m else f"    {label:<38}   n/a"
            for label, m in found.items()]


def rm_and_build(repo: Path, upstream: Path, pairs: int) -> tuple[float, float, float, str]:
    """Issue 28's measure: `rm wheelhouse/*.whl` + the build, alternated with a cp of the
    upstream wheel into the repository (the same disk) after one warm-up pair: (median
    ratio, median build s, median cp s, the log of the last build)."""
    builds, copies = [], []
    for _ in range(pairs + 1):
        for wheel in (repo / "wheelhouse").glob("*.whl"):
            wheel.unlink()
        wall, _, log = build(repo)
        copy, _ = timed(["cp", str(upstream), str(repo / "x.whl")])
        builds.append(wall)
        copies.append(copy)
    (repo / "x.whl").unlink()
    ratios = [b / c for b, c in zip(builds[1:], copies[1:])]
    return (statistics.median(ratios), statistics.median(builds[1:]),
            statistics.median(copies[1:]), log)


def main() -> None:
    args = benchlib.parser(__doc__, "CI: cp, one rebuild and the no-op only").parse_args()
    the_pin = pin.load()
    upstream = fetch.fetch(the_pin.wheel("x86_64"))
    fetch.fetch(the_pin.sdist)
    bench_venv = None if args.smoke else venvs.ensure_venv("bench", ["wheel==0.45.1"])
    cold = cold_rss = unpack = pack = None
    with tempfile.TemporaryDirectory(prefix="bench-wheel-") as tmp:
        tmp = Path(tmp)
        repo = benchlib.scratch_repo(tmp / "repo")

        if not args.smoke:
            # the first build, on a cold cache: links to the verified files, no markers; the
            # venvs (the supply venv the SBOM is made in) are the warm ones
            cold_cache = tmp / "cold-cache" / "sha256"
            cold_cache.mkdir(parents=True)
            for art in (the_pin.sdist, the_pin.wheel("x86_64")):
                os.symlink(fetch.blob_path(art.sha256), cold_cache / art.sha256)
            os.symlink(cache_dir() / "venvs", cold_cache.parent / "venvs")
            cold, cold_rss, _ = build(repo, {**os.environ,
                                             "VLLM_OVERLAY_CACHE": str(cold_cache.parent)})
        else:  # untimed: the build tree of the series before the change, as a developer has it
            build(repo)

        # a change to the series: one more (trivial) patch on top of the committed ones
        tree = apply.apply_series(fetch.fetch(the_pin.sdist),
                                  series.read_series(repo / "patches"),
                                  tmp / "dev" / "vllm", the_pin.released)
        target = tree / "vllm" / "v1" / "worker" / "encoder_cudagraph.py"
        target.write_text(target.read_text() + "\n# benchmark change\n")
        git(tree, "commit", "-q", "-am", "Bench\n\nOrigin: vendor\nRisk: none\n"
                  "Probe: defines vllm/x.py::X\n")
        export.export(tree, repo / "patches")

        rebuild, rebuild_rss, log = build(repo)
        found = re.search(r"apply ([\d.]+) s", log)
        apply_s = float(found[1]) if found else 0.0
        noop, noop_rss, _ = build(repo)
        ratio, rm_build, rm_copy, rm_log = rm_and_build(repo, upstream, 1 if args.smoke else 5)

        copy, _ = timed(["cp", str(upstream), str(tmp / "copy.whl")])
        if not args.smoke:
            named = tmp / the_pin.wheel("x86_64").filename
            os.symlink(upstream, named)
            py = str(venvs.python_of(bench_venv))
            unpack, _ = timed([py, "-m", "wheel", "unpack", "-d", str(tmp / "unpacked"),
                                  str(named)])
            (tmp / "packed").mkdir()
            pack, _ = timed([py, "-m", "wheel", "pack", "-d", str(tmp / "packed"),
                                str(next((tmp / "unpacked").iterdir()))])

    skipped = "skipped (--smoke)"
    print(f"machine: {os.cpu_count()} cores; upstream wheel {upstream.stat().st_size / 1e6:.0f} MB"
          + ("; --smoke: one pass, figures indicative only" if args.smoke else ""))
    print(f"cp of the upstream wheel            {copy:7.2f} s")
    if unpack is None:
        print(f"wheel unpack + pack (naive repack)  {skipped}")
    else:
        naive = unpack + pack
        print(f"wheel unpack + pack (naive repack)  {naive:7.2f} s  ({unpack:.1f} + {pack:.1f})")
    print(f"make wheel after a series change    {rebuild:7.2f} s  = {rebuild / copy:.1f} x cp, "
          f"peak RSS {rebuild_rss:.0f} MB")
    print("  phases (the build's log):")
    print("\n".join(phases(log)))
    print(f"make wheel with nothing changed     {noop:7.2f} s")
    print(f"rm wheelhouse/*.whl && make wheel   {rm_build:7.2f} s  = {ratio:.1f} x cp (median of "
          f"per-pair ratios, cp {rm_copy:.2f} s in the same pairs)")
    print("  phases (the last one's log):")
    print("\n".join(phases(rm_log)))
    if cold is None:
        print(f"make wheel on a cold cache          {skipped}")
    else:
        print(f"make wheel on a cold cache          {cold:7.2f} s  (upstream RECORD check), "
              f"peak RSS {cold_rss:.0f} MB")
    print()
    print(f"rebuild vs cp (same run):    {rebuild / copy:.1f} x")
    print(f"rm + build vs cp (paired):   {ratio:.1f} x -> "
          f"{'OK' if ratio <= 6 else 'MISSED'} (issue 28 goal <= 6 x cp)")
    print(f"rebuild vs 3 x cp + apply:   {rebuild:.2f} s vs {3 * copy + apply_s:.2f} s "
          f"-> {'OK' if rebuild <= 3 * copy + apply_s else 'MISSED'}")
    if unpack is not None:
        print(f"naive repack / rebuild:      {naive / rebuild:.1f}x faster "
              f"-> {'OK' if naive / rebuild >= 20 else 'MISSED'} (target >= 20x)")
    print(f"no-op rebuild:               {noop:.2f} s -> {'OK' if noop < 1 else 'MISSED'} "
          f"(target < 1 s)")
    print(f"peak memory of a rebuild:    {rebuild_rss:.0f} MB -> "
          f"{'OK' if rebuild_rss < 300 else 'MISSED'} (target < 300 MB)")
    if cold is not None:
        print(f"peak memory of a cold build: {cold_rss:.0f} MB -> "
              f"{'OK' if cold_rss < 300 else 'MISSED'} (target < 300 MB)")


if __name__ == "__main__":
    main()
