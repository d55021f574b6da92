"""Apply: unpack the sdist into a fresh git work tree and `git am` the series onto it.

The upstream tree is committed as the base (tag `upstream`) with a fixed identity and date,
so the base commit is the same on every machine (common/gittree.py). Each patch must apply
exactly: a patch that needs fuzz or a 3-way merge, applies empty, or is already applied is
an error that names the patch, the file and the hunk; the work tree is left for inspection.
"""

import shutil
from pathlib import Path

from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import pin, series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.gittree import BASE_TAG, GitTree, Outcome, init_base, unpack_sdist
from vllm_overlay.common.paths import REPO
from vllm_overlay.common.series import Patch

__all__ = ["BASE_TAG", "apply_pinned", "apply_series", "changed_files", "init_base",
           "unpack_sdist"]

_REFUSED = {Outcome.OFFSET: "applies only at shifted lines (re-export the series)",
            Outcome.PRESENT: "is already applied",
            Outcome.CONFLICT: "does not apply"}


def apply_series(sdist: Path, patches: list[Patch], tree: Path, base_date: str,
                 reuse: bool = False) -> Path:
    """Work tree at `tree`: upstream base commit + one commit per patch.

    With reuse, a tree that still holds this series on this base (an earlier build's,
    untouched since) is used as it is, and any other tree left by an earlier run on the
    same sdist is reset to the base instead of unpacked again.
    """
    base_id = f"{sdist.name} {base_date}"
    series_id = base_id + "".join(f"\n{p.name} {p.sha256()}" for p in patches)
    work = GitTree(tree)
    if reuse and work.holds_applied(series_id):
        return tree
    if not (reuse and work.reset_to_base(base_id)):
        if tree.exists():
            shutil.rmtree(tree)
        tree.parent.mkdir(parents=True, exist_ok=True)
        work = GitTree.unpack(sdist, tree, base_date)
        work.mark_base(base_id)
    for patch in patches:
        result = work.check(patch)
        if result.outcome is not Outcome.CLEAN:
            crlf = patch.path.read_bytes().split(b"\n", 1)[0].endswith(b"\r")
            raise OverlayError(
                f"patch {patch.name} ({patch.subject}) {_REFUSED[result.outcome]}:\n  "
                + result.detail.replace("\n", "\n  ")
                + (f"\n  {patch.name} has CRLF (\\r\\n) line endings (an editor or git's "
                   f"core.autocrlf?): convert it back to LF (sed -i 's/\\r$//' {patch.name})"
                   if crlf else "")
                + f"\nwork tree left for inspection at {tree} (patches before it are applied)")
        if work.am(patch, checked=result).empty:
            raise OverlayError(f"patch {patch.name} applied empty (no change) in {tree}")
    work.mark_applied(series_id)
    return tree


def changed_files(tree: Path) -> dict[str, str]:
    """path -> 'A'dded / 'M'odified / 'D'eleted between the base and HEAD (no renames)."""
    return GitTree(tree).changed_files()


def apply_pinned(tree: Path, patches_dir: Path = series.PATCHES, repo: Path = REPO) -> Path:
    """The pinned sdist + the series as commits in tree/vllm-<version> (made anew): what
    `make apply` gives a person and what `make check-patches` re-exports."""
    the_pin = pin.load(repo)
    sdist = fetch.fetch(the_pin.sdist, the_pin.project)
    return apply_series(sdist, series.read_series(patches_dir),
                        tree / f"vllm-{the_pin.upstream_version}", the_pin.released)
