"""Time MODE=precompiled (vLLM's own setup.py) against MODE=overlay, in the same run.

Both build the current series from the cached, sha256-verified upstream artifacts into a
scratch wheelhouse (so neither is an up-to-date no-op), apply + build + verify included.
The build venv is made ready first and not timed (its one-off creation is reported apart).
Usage: python3 benchmarks/bench_modes.py   (make bench)
"""

import shutil
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vllm_overlay.build import fetch  # noqa: E402
from vllm_overlay.common import pin  # noqa: E402
from vllm_overlay.common import series  # noqa: E402
from vllm_overlay.build import setup_py  # noqa: E402
from vllm_overlay.common import venvs  # noqa: E402
from vllm_overlay.build import overlay_mode  # noqa: E402
from vllm_overlay.common.requirements import requirement_names  # noqa: E402
from vllm_overlay.common.paths import REPO  # noqa: E402

ARCH = "x86_64"


def scratch_repo(root: Path) -> Path:
    """A copy of the pin and the series, so the bench's build trees are its own."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for name in ("VERSION", "upstream.lock.json"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(series.PATCHES, root / "patches")
    return root


def main() -> None:
    the_pin = pin.load()
    sdist = fetch.fetch(the_pin.sdist, the_pin.project)
    fetch.fetch(the_pin.wheel(ARCH), the_pin.project)
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
        name = next(f"vllm-{the_pin.upstream_version}/{p}" for p in setup_py.BUILD_REQUIREMENTS
                    if f"vllm-{the_pin.upstream_version}/{p}" in names)
        text = tar.extractfile(name).read().decode()
    started = time.monotonic()
    venvs.ensure_venv("build", requirement_names(text))
    print(f"build venv ready in {time.monotonic() - started:.1f} s (not timed below)")

    repo = scratch_repo(REPO / "work" / "bench-modes" / "repo")
    timings = {}
    for mode in ("overlay", "precompiled"):
        wheelhouse_dir = repo / f"wheelhouse-{mode}"
        started = time.monotonic()
        if mode == "overlay":
            wheel = overlay_mode.build_overlay_wheel(ARCH, wheelhouse_dir, repo / "patches", repo)
        else:
            wheel = setup_py.build_setup_py_wheel(mode, ARCH, wheelhouse_dir, repo / "patches", repo)
        timings[mode] = time.monotonic() - started
        print(f"MODE={mode:12} {timings[mode]:7.1f} s  {wheel.name}", flush=True)
    print(f"ratio precompiled / overlay: {timings['precompiled'] / timings['overlay']:.1f}x "
          f"({len(series.read_series())} patch(es) in the series)")
    shutil.rmtree(repo.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
