"""`export`: write the work tree's commits back to patches/ and patches/series."""

from pathlib import Path

from vllm_overlay.wheelbuild import export
from vllm_overlay.common import pin
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.gittree import GitTree
from vllm_overlay.common.paths import DEV_TREE, REPO


def add(sub) -> None:
    p = sub.add_parser("export", help="write the work tree's commits to patches/ and series")
    p.add_argument("--tree", type=Path, default=DEV_TREE)
    p.set_defaults(func=run)


def dev_tree(tree: Path, version: str) -> Path:
    """The work tree of the pinned release; a tree of another pin is never exported."""
    found = tree / f"vllm-{version}"
    if (found / ".git").exists():
        return found
    others = sorted(p.parent.name for p in tree.glob("vllm-*/.git"))
    raise OverlayError(f"no work tree of the pin {version} under {tree}"
                       + (f" (only {', '.join(others)}, made for another pin: exporting it "
                          f"would put that series back)" if others else "")
                       + ": run `make apply` first")


def stale(tree: Path, patches_dir: Path) -> str | None:
    """Why exporting the tree would overwrite a newer patches/ (None: it would not)."""
    marked = export.exported_rev(tree)
    if marked is None or export.same_export(tree, marked, patches_dir):
        return None  # patches/ is what the tree was made from (or no record: trust it)
    head = GitTree(tree).head()
    if head == marked:
        return (f"{tree} has no commits since `make apply`, and {patches_dir.name}/ changed "
                f"since (a rebase, a pull): exporting it would put the old series back; "
                f"run `make apply` for a fresh tree")
    return (f"{tree} has new commits, but {patches_dir.name}/ also changed since `make "
            f"apply` (a rebase, a pull): exporting would drop those changes. Move the tree "
            f"away, `make apply`, and redo the commits there (`git format-patch "
            f"{marked[:12]}..HEAD` in the old tree gives them)")


def run(args, repo: Path = REPO) -> None:
    patches_dir = repo / "patches"
    tree = dev_tree(args.tree, pin.load(repo).upstream_version)
    if why := stale(tree, patches_dir):
        raise OverlayError(why)
    names = export.export(tree, patches_dir)
    export.mark_exported(tree)
    print(f"exported {len(names)} patch(es) to {patches_dir}")
