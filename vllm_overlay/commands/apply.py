"""`apply`: a fresh work tree in work/tree, upstream sdist + the series as git commits."""

from pathlib import Path

from vllm_overlay.build import apply, fetch
from vllm_overlay.common import pin, series
from vllm_overlay.common.paths import REPO

DEV_TREE = REPO / "work" / "tree"


def add(sub) -> None:
    p = sub.add_parser("apply", help="fresh work tree: upstream sdist + the series as commits")
    p.add_argument("--tree", type=Path, default=DEV_TREE)
    p.set_defaults(func=run)


def apply_fresh(tree: Path, patches_dir: Path = series.PATCHES) -> Path:
    """The pinned sdist + the series as commits in tree/vllm-<version> (made anew)."""
    the_pin = pin.load()
    sdist = fetch.fetch(the_pin.sdist, the_pin.project)
    return apply.apply_series(sdist, series.read_series(patches_dir),
                              tree / f"vllm-{the_pin.upstream_version}", the_pin.released)


def run(args) -> None:
    tree = apply_fresh(args.tree)
    print(f"work tree: {tree}\n  edit, then `git commit` (or `git commit --amend`, "
          f"`git rebase -i {apply.BASE_TAG}`) there, then `make export-patches`")
