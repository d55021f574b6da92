"""`apply`: a fresh work tree in work/tree, upstream sdist + the series as git commits."""

from pathlib import Path

from vllm_overlay.build import apply, export, fetch
from vllm_overlay.common import pin, series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO

DEV_TREE = REPO / "work" / "tree"


def add(sub) -> None:
    p = sub.add_parser("apply", help="fresh work tree: upstream sdist + the series as commits")
    p.add_argument("--tree", type=Path, default=DEV_TREE)
    p.set_defaults(func=run)


def apply_fresh(tree: Path, patches_dir: Path = series.PATCHES, repo: Path = REPO) -> Path:
    """The pinned sdist + the series as commits in tree/vllm-<version> (made anew)."""
    the_pin = pin.load(repo)
    sdist = fetch.fetch(the_pin.sdist, the_pin.project)
    return apply.apply_series(sdist, series.read_series(patches_dir),
                              tree / f"vllm-{the_pin.upstream_version}", the_pin.released)


def run(args, repo: Path = REPO) -> None:
    patches_dir = repo / "patches"
    dest = args.tree / f"vllm-{pin.load(repo).upstream_version}"
    if why := export.unexported(dest, patches_dir):
        raise OverlayError(f"{dest} has {why}: `make apply` would delete them. Export them "
                           f"first (`make export-patches`), or move the tree away (mv {dest} "
                           f"{dest}.old); nothing was changed")
    tree = apply_fresh(args.tree, patches_dir, repo)
    export.mark_exported(tree)
    print(f"work tree: {tree}\n  edit, then `git commit` (or `git commit --amend`, "
          f"`git rebase -i {apply.BASE_TAG}`) there, then `make export-patches`")
