"""Command line: a thin layer over the pipeline modules. `python -m vllm_overlay --help`."""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from . import (apply, docker, export, fetch, pin, publish, runtests, series, setup_build,
               venvs, wheelhouse)
from . import rebase, upstream_cli  # rebase; status, bisect
from .errors import OverlayError
from .paths import REPO

DEV_TREE = REPO / "work" / "tree"
TOOLS_REQUIREMENTS = REPO / "tests" / "requirements-tools.txt"


def cmd_fetch(args) -> None:
    the_pin = pin.load()
    artifacts = [the_pin.sdist, *(the_pin.wheel(arch) for arch in args.arch)]
    for art in artifacts:
        print(fetch.fetch(art, the_pin.project))


def apply_fresh(tree: Path, patches_dir: Path = series.PATCHES) -> Path:
    the_pin = pin.load()
    sdist = fetch.fetch(the_pin.sdist, the_pin.project)
    return apply.apply_series(sdist, series.read_series(patches_dir), tree / f"vllm-{the_pin.upstream_version}",
                              the_pin.released)


def cmd_apply(args) -> None:
    tree = apply_fresh(args.tree)
    print(f"work tree: {tree}\n  edit, then `git commit` (or `git commit --amend`, "
          f"`git rebase -i {apply.BASE_TAG}`) there, then `make export-patches`")


def dev_tree(tree: Path) -> Path:
    found = sorted(tree.glob("vllm-*/.git"))
    if not found:
        raise OverlayError(f"no work tree under {tree}: run `make apply` first")
    return found[-1].parent


def cmd_export(args) -> None:
    names = export.export(dev_tree(args.tree), series.PATCHES)
    print(f"exported {len(names)} patch(es) to {series.PATCHES}")


def cmd_check_patches(args) -> None:
    patches = series.read_series()
    problems = export.check_trailers(patches)
    with tempfile.TemporaryDirectory(prefix="check-patches-") as tmp:
        tree = apply_fresh(Path(tmp) / "tree")
        fresh = Path(tmp) / "patches"
        export.export(tree, fresh)
        problems += export.compare_exports(series.PATCHES, fresh)
    if problems:
        raise OverlayError("patches/ is not a fresh export of the series (run `make apply` "
                           "then `make export-patches`):\n  " + "\n  ".join(problems))
    print(f"check-patches: {len(patches)} patch(es) apply exactly and re-export byte-identically")


def cmd_wheel(args) -> None:
    if args.dry_run and args.mode != "source":
        raise OverlayError("--dry-run is for --mode source (the other modes just build)")
    if args.mode == "overlay":
        print(wheelhouse.make_wheel(args.arch))
    elif args.dry_run:
        print(setup_build.dry_run(args.mode, args.arch))
    else:
        print(setup_build.make_wheel(args.mode, args.arch))


def cmd_cross_check(args) -> int:
    """Install the overlay and precompiled wheels side by side; list every file that differs."""
    a, b = (setup_build.published(m, args.arch) for m in ("overlay", "precompiled"))
    with tempfile.TemporaryDirectory(prefix="cross-check-") as tmp:
        diff = setup_build.compare_installed(a, b, Path(tmp))
    print(f"A = {a.name}\nB = {b.name}")
    for path, what in diff.items():
        print(f"  {what:10} {path}")
    print(f"{len(diff)} installed file(s) differ (README: Build modes says which must)")
    return 0


def cmd_publish(args) -> None:
    publish.publish(args.index_url, args.wheelhouse, args.simple_url)


def cmd_docker(args) -> None:
    extra = dict(kv.split("=", 1) for kv in args.build_arg)
    docker.build_image(args.mode, args.arch, args.image, extra, print_only=args.print)


def cmd_pytest(args) -> int:
    """Run pytest in the cached tools venv (created on first use)."""
    reqs = [ln.split("#")[0].strip() for ln in TOOLS_REQUIREMENTS.read_text().splitlines()]
    venv = venvs.ensure_venv("tools", [r for r in reqs if r])
    return subprocess.run([str(venvs.python_of(venv)), "-m", "pytest", *args.pytest_args],
                          cwd=REPO).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllm_overlay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="download + verify the pinned upstream artifacts")
    p.add_argument("--arch", nargs="*", default=["x86_64"], help="wheel architectures")
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("apply", help="fresh work tree: upstream sdist + the series as commits")
    p.add_argument("--tree", type=Path, default=DEV_TREE)
    p.set_defaults(func=cmd_apply)
    p = sub.add_parser("export", help="write the work tree's commits to patches/ and series")
    p.add_argument("--tree", type=Path, default=DEV_TREE)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("check-patches", help="fail unless patches/ is a fresh export")
    p.set_defaults(func=cmd_check_patches)
    p = sub.add_parser("wheel", help="build + verify the overlay wheel into wheelhouse/")
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    p.add_argument("--mode", default="overlay", choices=["overlay", "precompiled", "source"],
                   help="overlay: swap the series into the upstream wheel (default); "
                        "precompiled / source: vLLM's own setup.py (README: Build modes)")
    p.add_argument("--dry-run", action="store_true",
                   help="source mode: run the preflight checks and print the build command")
    p.set_defaults(func=cmd_wheel)
    p = sub.add_parser("cross-check", help="diff the installed trees of the overlay and "
                       "precompiled wheels in wheelhouse/")
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    p.set_defaults(func=cmd_cross_check)
    p = sub.add_parser("publish", help="upload the wheelhouse's wheels with twine")
    p.add_argument("--index-url", required=True, help="upload URL of the package index")
    p.add_argument("--simple-url", help="its PEP 503 simple URL (default: derived)")
    p.add_argument("--wheelhouse", type=Path, default=wheelhouse.WHEELHOUSE)
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser("docker", help="build the Docker image (needs a Docker engine)")
    p.add_argument("--mode", default="overlay", choices=["overlay", "source"])
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    p.add_argument("--image", help="image name:tag (default vllm-overlay:<VERSION>)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--print", action="store_true", help="only print the docker command")
    p.set_defaults(func=cmd_docker)
    p = sub.add_parser("test", help="everything `make test` runs after check-patches: tooling "
                       "tests, wheel, runtime venv, behaviour tests, upstream subset pristine "
                       "vs overlay; report in reports/")
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    p.set_defaults(func=lambda args: runtests.main(["--arch", args.arch]))
    p = sub.add_parser("pytest", help="run pytest in the tools venv (tooling tests)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_pytest)
    upstream_cli.add_commands(sub)  # status, bisect
    rebase.add_command(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except OverlayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
