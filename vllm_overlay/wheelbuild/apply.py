"""Apply: unpack the sdist into a fresh git work tree and `git am` the series onto it.

The upstream tree is committed as the base (tag `upstream`) with a fixed identity and date,
so the base commit is the same on every machine. Each patch must apply exactly: a patch
that needs fuzz or a 3-way merge, applies empty, or is already applied is an error that
names the patch, the file and the hunk; the work tree is left for inspection.
"""

import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import pin, series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.git import git
from vllm_overlay.common.paths import REPO
from vllm_overlay.common.series import Patch

BASE_TAG = "upstream"
_FAILED_RE = re.compile(r"^error: patch failed: (.+):(\d+)$", re.M)
_FILE_ERR_RE = re.compile(r"^error: (.+?): (does not exist in index|No such file or directory|"
                          r"already exists in (?:index|working directory)|patch does not apply)$",
                          re.M)
_OFFSET_RE = re.compile(r"^Hunk #(\d+) succeeded at (\d+) \(((?:offset|fuzz) .*)\)\.$", re.M)


def unpack_sdist(sdist: Path, dest: Path) -> Path:
    """Extract the sdist's top folder into dest (which must not exist)."""
    try:
        with tarfile.open(sdist) as tar:
            members = tar.getmembers()
            for member in members:
                parts = member.name.split("/", 1)
                member.name = parts[1] if len(parts) == 2 else ""
            tar.extractall(dest, members=[m for m in members if m.name], filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise OverlayError(f"{sdist}: cannot unpack sdist: {exc}") from exc
    return dest


def init_base(tree: Path, date: str) -> None:
    """Commit the pristine tree as the base and tag it."""
    git(tree, "init", "-q", "-b", "overlay")
    git(tree, "config", "core.autocrlf", "false")
    git(tree, "add", "-A", "-f", ".")
    dated = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    git(tree, "commit", "-q", "--no-verify", "-m", "upstream sdist", env=dated)
    git(tree, "tag", BASE_TAG)


@dataclass
class Check:
    """How a patch fits a tree: 'clean', 'offset', 'empty', 'applied' or 'conflict'."""

    status: str
    detail: str = ""
    files: tuple[str, ...] = ()


def check_patch(tree: Path, patch: Patch) -> Check:
    """Dry-run `patch` on the tree's current state, without changing it."""
    proc = git(tree, "apply", "--check", "-v", str(patch.path), check=False)
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        offsets = _OFFSET_RE.findall(output)
        if offsets:
            where = "; ".join(f"hunk #{h} at line {line} ({kind})" for h, line, kind in offsets)
            return Check("offset", where)
        return Check("clean")
    if git(tree, "apply", "--check", "--reverse", str(patch.path), check=False).returncode == 0:
        return Check("applied", "the tree already contains this change (it reverse-applies)",
                     tuple(patch.files))
    problems, files = [], []
    for file, line in _FAILED_RE.findall(output):
        problems.append(f"{file}: {patch.locate(file, int(line))} does not match")
        files.append(file)
    for file, reason in _FILE_ERR_RE.findall(output):
        if file not in files:
            problems.append(f"{file}: {reason}")
            files.append(file)
    return Check("conflict", "\n".join(problems) or output.strip(), tuple(files))


def am(tree: Path, patch: Patch, three_way: bool = False) -> None:
    args = ["am", "-q", "--keep-cr", "--committer-date-is-author-date"]
    proc = git(tree, *args, *(["--3way"] if three_way else []), str(patch.path), check=False)
    if proc.returncode:
        git(tree, "am", "--abort", check=False)
        raise OverlayError(f"{patch.name}: git am failed in {tree}:\n"
                           f"{(proc.stdout + proc.stderr).strip()}")


def _base_marker(tree: Path) -> Path:
    return tree / ".git" / "overlay-base"


def reset_to_base(tree: Path, base_id: str) -> bool:
    """Reuse an earlier tree of the same base: back to the base commit, untracked files gone.

    The result equals a fresh unpack (git restores every tracked file that differs from
    the base commit and removes everything else) at a fraction of the cost.
    """
    marker = _base_marker(tree)
    if not marker.exists() or marker.read_text() != base_id:
        return False
    # Only builds reuse a tree, and they hold the wheelhouse lock: a git lock file here is
    # left by a killed run of ours (index.lock, HEAD.lock, a ref's lock), never a live one.
    dot_git = tree / ".git"
    for lock in [*dot_git.glob("*.lock"), *(dot_git / "refs").glob("**/*.lock")]:
        lock.unlink(missing_ok=True)
    git(tree, "am", "--abort", check=False)
    git(tree, "checkout", "-q", "-f", "-B", "overlay", BASE_TAG)
    git(tree, "clean", "-q", "-f", "-d", "-x")
    return True


def apply_series(sdist: Path, patches: list[Patch], tree: Path, base_date: str,
                 reuse: bool = False) -> Path:
    """Work tree at `tree`: upstream base commit + one commit per patch.

    With reuse, a tree left by an earlier run on the same sdist is reset to the base
    instead of unpacked again.
    """
    base_id = f"{sdist.name} {base_date}"
    if not (reuse and reset_to_base(tree, base_id)):
        if tree.exists():
            shutil.rmtree(tree)
        tree.parent.mkdir(parents=True, exist_ok=True)
        unpack_sdist(sdist, tree)
        init_base(tree, base_date)
        _base_marker(tree).write_text(base_id)
    for patch in patches:
        result = check_patch(tree, patch)
        if result.status != "clean":
            what = {"offset": "applies only at shifted lines (re-export the series)",
                    "applied": "is already applied",
                    "conflict": "does not apply"}[result.status]
            crlf = patch.path.read_bytes().split(b"\n", 1)[0].endswith(b"\r")
            raise OverlayError(
                f"patch {patch.name} ({patch.subject}) {what}:\n  "
                + result.detail.replace("\n", "\n  ")
                + (f"\n  {patch.name} has CRLF (\\r\\n) line endings (an editor or git's "
                   f"core.autocrlf?): convert it back to LF (sed -i 's/\\r$//' {patch.name})"
                   if crlf else "")
                + f"\nwork tree left for inspection at {tree} (patches before it are applied)")
        am(tree, patch)
        if not git(tree, "diff", "--name-only", "HEAD~1", "HEAD").stdout.strip():
            raise OverlayError(f"patch {patch.name} applied empty (no change) in {tree}")
    return tree


def changed_files(tree: Path) -> dict[str, str]:
    """path -> 'A'dded / 'M'odified / 'D'eleted between the base and HEAD (no renames)."""
    out = git(tree, "diff", "--name-status", "--no-renames", BASE_TAG, "HEAD").stdout
    return {path: status for status, path in (line.split("\t", 1) for line in out.splitlines())}


def apply_pinned(tree: Path, patches_dir: Path = series.PATCHES, repo: Path = REPO) -> Path:
    """The pinned sdist + the series as commits in tree/vllm-<version> (made anew): what
    `make apply` gives a person and what `make check-patches` re-exports."""
    the_pin = pin.load(repo)
    sdist = fetch.fetch(the_pin.sdist, the_pin.project)
    return apply_series(sdist, series.read_series(patches_dir),
                        tree / f"vllm-{the_pin.upstream_version}", the_pin.released)
