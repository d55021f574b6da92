"""`apply`: a fresh work tree in work/tree, upstream sdist + the series as git commits."""

from pathlib import Path

from vllm_overlay.wheelbuild import apply, export
from vllm_overlay.common import pin
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import DEV_TREE, REPO


def add(sub) -> None:
    p = sub.add_parser("apply", help="fresh work tree: upstream sdist + the series as commits")
    p.add_argument("--tree", type=Path, default=DEV_TREE)
    p.set_defaults(func=run)


def run(args, repo: Path = REPO) -> None:
    patches_dir = repo / "patches"
    dest = args.tree / f"vllm-{pin.load(repo).upstream_version}"
    if why := export.unexported(dest, patches_dir):
        raise OverlayError(f"{dest} has {why}: `make apply` would delete them. Export them "
                           f"first (`make export-patches`), or move the tree away (mv {dest} "
                           f"{dest}.old); nothing was changed")
    tree = apply.apply_pinned(args.tree, patches_dir, repo)
    export.mark_exported(tree)
    print(f"work tree: {tree}\n  edit, then `git commit` (or `git commit --amend`, "
          f"`git rebase -i {apply.BASE_TAG}`) there, then `make export-patches`")
