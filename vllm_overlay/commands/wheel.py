"""`wheel`: build + verify a wheel into wheelhouse/ in one of the three modes."""

from vllm_overlay.wheelbuild import setup_py
from vllm_overlay.wheelbuild.overlay_mode import build_overlay_wheel
from vllm_overlay.common.errors import OverlayError


def add(sub) -> None:
    p = sub.add_parser("wheel", help="build + verify the overlay wheel into wheelhouse/")
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    p.add_argument("--mode", default="overlay", choices=["overlay", "precompiled", "source"],
                   help="overlay: swap the series into the upstream wheel (default); "
                        "precompiled / source: vLLM's own setup.py (docs/build-modes.md)")
    p.add_argument("--dry-run", action="store_true",
                   help="source mode: run the preflight checks and print the build command")
    p.set_defaults(func=run)


def run(args) -> None:
    if args.dry_run and args.mode != "source":
        raise OverlayError("--dry-run is for --mode source (the other modes just build)")
    if args.mode == "overlay":
        print(build_overlay_wheel(args.arch))
    elif args.dry_run:
        print(setup_py.dry_run(args.mode, args.arch))
    else:
        print(setup_py.build_setup_py_wheel(args.mode, args.arch))
