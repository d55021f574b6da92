"""`rebase`: move the series to a newer upstream release (vllm_overlay/upstream/rebase.py)."""

from pathlib import Path

from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO
from vllm_overlay.upstream import rebase, releases
from vllm_overlay.wheelbuild.overlay_mode import build_overlay_wheel


def check_target(to: str) -> None:
    """TO names one release (or 'latest'); a range or a list is not a rebase target."""
    if not to.strip() or ".." in to or "," in to:
        raise OverlayError(f"rebase: TO={to!r} is not one release: a rebase moves the pin to "
                           f"one release (e.g. TO=0.20.0, or TO=latest); ranges and lists are "
                           f"for `make status RELEASES=...`")
    if to != "latest":
        releases.version_key(to)  # names it if it is no version number


def run(args, repo: Path = REPO) -> int:
    """0 when the rebase is done (or a no-op), 1 when it stopped at a conflict."""
    given = [name for name, value in (("TO=" + str(args.to), args.to is not None),
                                      ("CONTINUE=1", args.resume), ("ABORT=1", args.abort))
             if value]
    if len(given) > 1:
        raise OverlayError(f"rebase: {' and '.join(given)} conflict: give one of TO=<release>, "
                           f"CONTINUE=1, ABORT=1 (--to, --continue, --abort)")
    if not given:
        raise OverlayError("rebase needs exactly one of --to <release>, --continue, --abort "
                           "(make rebase TO=<release> | CONTINUE=1 | ABORT=1)")
    if args.to is not None:
        check_target(args.to)
    if args.abort:
        rebase.abort(repo)
        return 0
    state = rebase.resume(repo) if args.resume else rebase.start(repo, args.to)
    if state is None:
        return 0
    build = None if args.no_wheel else lambda: build_overlay_wheel(
        args.arch, repo / "wheelhouse", repo / "patches", repo)
    state = rebase.run(repo, state, build_wheel=build, arch=args.arch,
                       make_runtime=getattr(args, "runtime_venv", False))
    return 0 if state.complete else 1


def add(sub) -> None:
    p = sub.add_parser("rebase", help="move the series to a newer upstream release")
    p.add_argument("--to", help="the target release ('latest' = the newest)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="go on after a conflict was resolved (git am --continue)")
    p.add_argument("--abort", action="store_true", help="drop a stopped rebase's work tree")
    p.add_argument("--no-wheel", action="store_true", help="skip the final `make wheel`")
    p.add_argument("--runtime-venv", action="store_true",
                   help="make the new locks' runtime venv (network, as make test) to import "
                        "the modules the series touches and run its tests before the build")
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"],
                   help="the wheel to build at the end")
    p.set_defaults(func=run)
