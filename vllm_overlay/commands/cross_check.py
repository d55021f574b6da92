"""`cross-check`: diff the installed trees of the overlay and precompiled wheels."""

import tempfile
from pathlib import Path

from vllm_overlay.wheelbuild import cross_check, wheelhouse


def add(sub) -> None:
    p = sub.add_parser("cross-check", help="diff the installed trees of the overlay and "
                       "precompiled wheels in wheelhouse/")
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    p.set_defaults(func=run)


def run(args) -> int:
    """Install the overlay and precompiled wheels side by side; list every file that differs."""
    a, b = (wheelhouse.last_built(m, args.arch) for m in ("overlay", "precompiled"))
    with tempfile.TemporaryDirectory(prefix="cross-check-") as tmp:
        diff = cross_check.compare_installed(a, b, Path(tmp))
    print(f"A = {a.name}\nB = {b.name}")
    for path, what in diff.items():
        print(f"  {what:10} {path}")
    print(f"{len(diff)} installed file(s) differ (docs/build-modes.md says which must)")
    return 0
