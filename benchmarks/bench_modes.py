"""Time MODE=precompiled (vLLM's own setup.py) against MODE=overlay, in the same run.

Both build the current series from the cached, sha256-verified upstream artifacts into a
scratch wheelhouse (so neither is an up-to-date no-op), apply + build + verify included.
The build venv is made ready first and not timed (its one-off creation is reported apart).
Usage: python3 benchmarks/bench_modes.py [--smoke]   (make bench)
--smoke (CI): MODE=overlay only; the build venv and MODE=precompiled (minutes) are skipped.
"""

import shutil
import tarfile
import time

import benchlib

from vllm_overlay.wheelbuild import fetch
from vllm_overlay.wheelbuild import overlay_mode
from vllm_overlay.wheelbuild import setup_py
from vllm_overlay.common import pin
from vllm_overlay.common import series
from vllm_overlay.common import venvs
from vllm_overlay.common.paths import REPO
from vllm_overlay.common.requirements import requirement_names

ARCH = "x86_64"


def main() -> None:
    args = benchlib.parser(__doc__, "CI: MODE=overlay only").parse_args()
    modes = ("overlay",) if args.smoke else ("overlay", "precompiled")
    the_pin = pin.load()
    sdist = fetch.fetch(the_pin.sdist, the_pin.project)
    fetch.fetch(the_pin.wheel(ARCH), the_pin.project)
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
        name = next(f"vllm-{the_pin.upstream_version}/{p}" for p in setup_py.BUILD_REQUIREMENTS
                    if f"vllm-{the_pin.upstream_version}/{p}" in names)
        text = tar.extractfile(name).read().decode()
    build_reqs = requirement_names(text)
    if "precompiled" in modes:
        started = time.monotonic()
        venvs.ensure_venv("build", build_reqs)
        print(f"build venv ready in {time.monotonic() - started:.1f} s (not timed below)")

    repo = benchlib.scratch_repo(REPO / "work" / "bench-modes" / "repo")
    timings = {}
    for mode in modes:
        wheelhouse_dir = repo / f"wheelhouse-{mode}"
        started = time.monotonic()
        if mode == "overlay":
            wheel = overlay_mode.build_overlay_wheel(ARCH, wheelhouse_dir, repo / "patches", repo)
        else:
            wheel = setup_py.build_setup_py_wheel(mode, ARCH, wheelhouse_dir, repo / "patches", repo)
        timings[mode] = time.monotonic() - started
        print(f"MODE={mode:12} {timings[mode]:7.1f} s  {wheel.name}", flush=True)
    n = len(series.read_series(repo / "patches"))
    if "precompiled" in timings:
        print(f"ratio precompiled / overlay: {timings['precompiled'] / timings['overlay']:.1f}x "
              f"({n} patch(es) in the series)")
    else:
        print(f"MODE=precompiled skipped (--smoke; {len(build_reqs)} build requirement(s) "
              f"read from the sdist); {n} patch(es) in the series")
    shutil.rmtree(repo.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
