"""`export`: write the work tree's commits back to patches/ and patches/series."""

from pathlib import Path

from vllm_overlay.build import export
from vllm_overlay.commands.apply import DEV_TREE
from vllm_overlay.common import series
from vllm_overlay.common.errors import OverlayError


def add(sub) -> None:
    p = sub.add_parser("export", help="write the work tree's commits to patches/ and series")
    p.add_argument("--tree", type=Path, default=DEV_TREE)
    p.set_defaults(func=run)


def dev_tree(tree: Path) -> Path:
    found = sorted(tree.glob("vllm-*/.git"))
    if not found:
        raise OverlayError(f"no work tree under {tree}: run `make apply` first")
    return found[-1].parent


def run(args) -> None:
    names = export.export(dev_tree(args.tree), series.PATCHES)
    print(f"exported {len(names)} patch(es) to {series.PATCHES}")
