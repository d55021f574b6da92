"""One git work tree of an upstream sdist: the base commit, the patches applied with `git am`.

`GitTree` wraps the one runner (common/git.py) the way git-buildpackage's `GitRepository`
does: every git command the stages run on a work tree is a method here. The upstream tree
is committed as the base (tag `upstream`) with a fixed identity and date, so the base
commit is the same on every machine.

How a patch fares is one `Outcome`; `GitTree.am` is the one way to apply a patch (plain,
or with a 3-way merge as the fallback) and says how it went in an `AmResult`.
"""

import re
import tarfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from subprocess import CompletedProcess

from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.git import git
from vllm_overlay.common.series import Patch

BASE_TAG = "upstream"
BRANCH = "overlay"
AM_ARGS = ("am", "-q", "--keep-cr", "--committer-date-is-author-date")
_FAILED_RE = re.compile(r"^error: patch failed: (.+):(\d+)$", re.M)
_FILE_ERR_RE = re.compile(r"^error: (.+?): (does not exist in index|No such file or directory|"
                          r"already exists in (?:index|working directory)|patch does not apply)$",
                          re.M)
_OFFSET_RE = re.compile(r"^Hunk #(\d+) succeeded at (\d+) \(((?:offset|fuzz) .*)\)\.$", re.M)


class Outcome(str, Enum):
    """How a patch fares on a tree. The values are the words the status report prints and
    stores; a rebase words them its own way (upstream/rebase_state.py RESULT)."""

    CLEAN = "clean"          # applies as is
    OFFSET = "offset"        # applies at shifted lines (no fuzz is ever used)
    THREE_WAY = "3-way"      # applies only through a 3-way merge
    PRESENT = "present"      # the tree already has the change (reverse-applies, no change)
    CONFLICT = "conflict"    # does not apply (not even 3-way, where it was tried)
    DELETED = "deleted"      # a file it changes is gone from the tree
    UPSTREAM = "upstream"    # all its probes hold: upstream has it (dropped by a rebase)
    FLAGGED = "flagged"      # applies, yet all its probes hold: a human must look
    PENDING = "pending"      # not placed yet (a stopped rebase)

    def __str__(self) -> str:
        return self.value


APPLIES = (Outcome.CLEAN, Outcome.OFFSET)
STOPS = (Outcome.CONFLICT, Outcome.DELETED)  # a human resolves these (left out by status)


@dataclass
class AmResult:
    """What `GitTree.check` / `GitTree.am` found. `detail` is `git apply`'s finding (where
    the hunks failed or shifted); a 3-way attempt adds git am's output, whether it exited
    0 (`merged`) and the files it left unmerged."""

    outcome: Outcome
    detail: str = ""
    files: tuple[str, ...] = ()      # the files plain apply failed on
    deleted: tuple[str, ...] = ()    # of those, the ones the tree no longer has
    three_way: bool = False          # a 3-way merge was tried
    merged: bool = False             # ... and git am exited 0
    output: str = ""                 # ... git am's output
    unmerged: tuple[str, ...] = ()   # ... the files it left to resolve
    empty: bool = False              # applied, but the commit changes nothing

    @property
    def applied(self) -> bool:
        return self.outcome in APPLIES or self.outcome is Outcome.THREE_WAY


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
    GitTree(tree).init_base(date)


class GitTree:
    """A git work tree at `path` (the upstream base + one commit per patch)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"GitTree({str(self.path)!r})"

    def git(self, *args: str, check: bool = True, env: dict | None = None,
            input: str | None = None) -> CompletedProcess:
        return git(self.path, *args, check=check, env=env, input=input)

    def out(self, *args: str) -> str:
        return self.git(*args).stdout.strip()

    # --- the base ---------------------------------------------------------------------

    @classmethod
    def unpack(cls, sdist: Path, dest: Path, date: str | None = None) -> "GitTree":
        """The sdist unpacked at dest; with date, committed as the base too."""
        tree = cls(unpack_sdist(sdist, dest))
        if date is not None:
            tree.init_base(date)
        return tree

    def init(self) -> None:
        self.git("init", "-q", "-b", BRANCH)

    def init_base(self, date: str) -> None:
        """Commit the pristine tree as the base and tag it."""
        self.init()
        self.git("config", "core.autocrlf", "false")
        self.git("add", "-A", "-f", ".")
        dated = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        self.git("commit", "-q", "--no-verify", "-m", "upstream sdist", env=dated)
        self.git("tag", BASE_TAG)

    def borrow_objects(self, objects: Path) -> None:
        """Name another object store in git alternates (the blobs 3-way merges need)."""
        info = self.path / ".git" / "objects" / "info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "alternates").write_text(f"{objects}\n")

    @property
    def objects(self) -> Path:
        return self.path / ".git" / "objects"

    @property
    def _base_marker(self) -> Path:
        return self.path / ".git" / "overlay-base"

    def mark_base(self, base_id: str) -> None:
        self._base_marker.write_text(base_id)

    @property
    def _applied_marker(self) -> Path:
        return self.path / ".git" / "overlay-applied"

    def mark_applied(self, series_id: str) -> None:
        """Record that HEAD is the series `series_id` applied (`holds_applied`)."""
        self._applied_marker.write_text(f"{series_id}\n{self.head()}\n")

    def holds_applied(self, series_id: str) -> bool:
        """The tree is still what `mark_applied(series_id)` recorded: the same HEAD commit
        (its id covers every file and every parent down to the base) and no file changed
        or added since (nothing ignored by upstream's .gitignore is ever read)."""
        marker = self._applied_marker
        if not marker.exists() or marker.read_text() != f"{series_id}\n{self.rev('HEAD')}\n":
            return False
        return self.out("status", "--porcelain", "--untracked-files=all") == ""

    def reset_to_base(self, base_id: str) -> bool:
        """Reuse an earlier tree of the same base (`mark_base`): back to the base commit,
        untracked files gone; False when the tree is not of that base.

        The result equals a fresh unpack (git restores every tracked file that differs from
        the base commit and removes everything else) at a fraction of the cost.
        """
        marker = self._base_marker
        if not marker.exists() or marker.read_text() != base_id:
            return False
        # Only builds reuse a tree, and they hold the wheelhouse lock: a git lock file here
        # is left by a killed run of ours (index.lock, HEAD.lock, a ref's lock), never a
        # live one.
        dot_git = self.path / ".git"
        for lock in [*dot_git.glob("*.lock"), *(dot_git / "refs").glob("**/*.lock")]:
            lock.unlink(missing_ok=True)
        self.am_abort()
        self.git("checkout", "-q", "-f", "-B", BRANCH, BASE_TAG)
        self.git("clean", "-q", "-f", "-d", "-x")
        return True

    def reset_hard(self, rev: str = BASE_TAG, clean: bool = True) -> None:
        """Back to rev (a `git am` in progress dropped); with clean, untracked files gone."""
        if self.am_in_progress():
            self.am_abort()
        self.git("reset", "-q", "--hard", rev)
        if clean:
            self.git("clean", "-fdxq")

    # --- queries -----------------------------------------------------------------------

    def head(self) -> str:
        return self.out("rev-parse", "HEAD")

    def rev(self, rev: str) -> str | None:
        """The commit rev names, or None."""
        proc = self.git("rev-parse", "--verify", "-q", rev, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def count(self, since: str, check: bool = True) -> str:
        """How many commits since..HEAD ("" when git cannot tell and check is off)."""
        return self.git("rev-list", "--count", f"{since}..HEAD", check=check).stdout.strip()

    def dirty(self) -> str:
        """`git status --porcelain` of the tracked files ("" when clean)."""
        return self.out("status", "--porcelain", "--untracked-files=no")

    def unmerged(self) -> list[str]:
        return self.git("diff", "--name-only", "--diff-filter=U").stdout.split()

    def commits(self, base: str = BASE_TAG) -> list[tuple[str, str]]:
        """(sha, subject) of each commit on top of base, oldest first."""
        out = self.git("log", "--reverse", "--format=%H %s", f"{base}..HEAD").stdout
        return [tuple(line.split(" ", 1)) if " " in line else (line, "")
                for line in out.splitlines() if line]

    def changed_by(self, sha: str, *paths: str, filter: str = "AMR") -> list[str]:
        """The files commit sha adds, modifies or renames (limited to paths)."""
        return self.git("diff", "--name-only", f"--diff-filter={filter}", f"{sha}~1", sha,
                        *(("--", *paths) if paths else ())).stdout.split()

    def show(self, rev: str, path: str, check: bool = True) -> CompletedProcess:
        return self.git("show", f"{rev}:{path}", check=check)

    def changed_files(self, base: str = BASE_TAG) -> dict[str, str]:
        """path -> 'A'dded / 'M'odified / 'D'eleted between base and HEAD (no renames)."""
        out = self.git("diff", "--name-status", "--no-renames", base, "HEAD").stdout
        return {path: status for status, path in (line.split("\t", 1)
                                                  for line in out.splitlines())}

    def last_commit_empty(self) -> bool:
        return not self.out("diff", "--name-only", "HEAD~1", "HEAD")

    def cat_blobs(self, blobs: list[str]) -> dict[str, bytes]:
        """blob -> its bytes (one `git cat-file --batch`)."""
        proc = self.git("cat-file", "--batch", input="\n".join(blobs).encode() + b"\n",
                        check=False)
        if proc.returncode:
            raise OverlayError(f"git cat-file failed in {self.path}: "
                               f"{proc.stderr.decode(errors='replace')}")
        data, at, out = proc.stdout, 0, {}
        for blob in blobs:
            head_end = data.index(b"\n", at)
            size = int(data[at:head_end].split()[2])
            start = head_end + 1
            out[blob] = data[start:start + size]
            at = start + size + 1
        return out

    def ls_files(self) -> set[str]:
        return set(self.git("ls-files", "-z").stdout.split("\0"))

    # --- applying a patch ---------------------------------------------------------------

    def check(self, patch: Patch) -> AmResult:
        """Dry-run `patch` on the tree's current state, without changing it: CLEAN, OFFSET,
        PRESENT (it reverse-applies) or CONFLICT (the files and hunks named)."""
        proc = self.git("apply", "--check", "-v", str(patch.path), check=False)
        output = proc.stdout + proc.stderr
        if proc.returncode == 0:
            offsets = _OFFSET_RE.findall(output)
            if offsets:
                return AmResult(Outcome.OFFSET, "; ".join(
                    f"hunk #{h} at line {line} ({kind})" for h, line, kind in offsets))
            return AmResult(Outcome.CLEAN)
        if self.git("apply", "--check", "--reverse", str(patch.path),
                    check=False).returncode == 0:
            return AmResult(Outcome.PRESENT, "the tree already contains this change (it "
                            "reverse-applies)", tuple(patch.files))
        problems, files = [], []
        for file, line in _FAILED_RE.findall(output):
            problems.append(f"{file}: {patch.locate(file, int(line))} does not match")
            files.append(file)
        for file, reason in _FILE_ERR_RE.findall(output):
            if file not in files:
                problems.append(f"{file}: {reason}")
                files.append(file)
        return AmResult(Outcome.CONFLICT, "\n".join(problems) or output.strip(), tuple(files))

    def am(self, patch: Patch, three_way: bool = False, keep_conflict: bool = False,
           checked: AmResult | None = None) -> AmResult:
        """Apply `patch` as a commit: the one way the stages apply a patch.

        What `check` finds first; a patch that applies (CLEAN, OFFSET) is committed with
        `git am` (a failure there is an error). A CONFLICT is tried again with
        `git am --3way` when three_way: THREE_WAY when it commits; DELETED when a file it
        changes is gone; PRESENT when the merge gives no change; else CONFLICT. A failed
        merge is aborted, unless keep_conflict (then `git am` waits for a human). checked:
        what `check` found on the tree as it is (not asked again).
        """
        found = checked or self.check(patch)
        if found.outcome in APPLIES:
            self._am_strict(patch)
            found.empty = self.last_commit_empty()
            return found
        if found.outcome is not Outcome.CONFLICT or not three_way:
            return found
        if not found.files:  # git named no file: not a conflict but a failure of ours
            raise OverlayError(f"{patch.name}: git apply failed in {self.path}: {found.detail}")
        return self._three_way(patch, found, keep_conflict)

    def _am_strict(self, patch: Patch) -> None:
        proc = self.git(*AM_ARGS, str(patch.path), check=False)
        if proc.returncode:
            self.am_abort()
            raise OverlayError(f"{patch.name}: git am failed in {self.path}:\n"
                               f"{(proc.stdout + proc.stderr).strip()}")

    def _three_way(self, patch: Patch, found: AmResult, keep_conflict: bool) -> AmResult:
        gone = tuple(self.missing(found.files))  # before git am writes them back
        before = self.head()
        proc = self.git(*AM_ARGS, "--3way", str(patch.path), check=False)
        output = (proc.stdout + proc.stderr).strip()
        merged = proc.returncode == 0
        unmerged = () if merged else tuple(self.unmerged())
        if not merged and not keep_conflict:
            self.am_abort()
        moved = merged and self.head() != before
        if moved:
            outcome = Outcome.THREE_WAY
        elif gone:  # (a 3-way merge follows a file upstream only renamed)
            outcome = Outcome.DELETED
        elif merged or "already applied" in output:
            outcome, output = Outcome.PRESENT, output or "no change"
        else:
            outcome = Outcome.CONFLICT
        return AmResult(outcome, found.detail, found.files, gone, True, merged, output,
                        unmerged)

    def missing(self, files) -> list[str]:
        """The files a patch failed on because the tree no longer has them (upstream deleted
        a file the patch changes; a file the patch adds never fails this way)."""
        return [f for f in files
                if not (self.path / f).exists() and not (self.path / f).is_symlink()]

    def am_in_progress(self) -> bool:
        return (self.path / ".git" / "rebase-apply").exists()

    def am_abort(self) -> None:
        self.git("am", "--abort", check=False)
