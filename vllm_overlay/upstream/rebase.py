"""Rebase: move the patch series to a newer upstream release (`make rebase TO=<release>`).

1. The target's sdist and CUDA wheels (the arches the lock pins) are found on pip's indexes,
   fetched into the cache and checked against the index's sha256; the new lock and VERSION
   are prepared (written only at the end).
2. Each patch, in order, on a git work tree of the target (work/rebase/vllm-<to>), with its
   probes run on the pristine target first:
     probes all hold and it does not apply      -> dropped-upstream (first release with it)
     applies as is (or at shifted lines)        -> applied-clean, or flagged when its probes
                                                   hold (the probe or the patch is wrong)
     `git am --3way` against the pinned tree's objects (borrowed as `make status` does)
                                                -> applied-3way
     a file it changes was deleted upstream     -> deleted: stop; the advice is `git rm` and
                                                   port the hunk to where drift finds the code
     anything else                              -> conflict: stop, the merge stays in the tree
3. A stop leaves patches/, the lock and VERSION untouched. After the human's
   `git am --continue` (or `git am --skip`, which drops the patch), `--continue` goes on.
3b. Then the merged tree is checked (treecheck: each carried commit's Python compiles, the
   calls and tree imports it adds resolve); a problem is a stop naming the patch, before
   anything is written. After the re-lock, with the new locks' runtime venv, every module the
   series touches is imported and the series' own tests run in the tree; a failure stops before the build (CONTINUE=1 exports again).
4. When every patch is placed: patches/, locks/, the lock and VERSION are copied to
   work/rebase/before/ (ABORT=1 restores them from there), the tree's commits are exported
   to patches/ (the messages, trailers included, are the patches' own), the lock and
   VERSION written; then the runtime locks are made for the new pin as `make lock` makes
   them (network). If that fails, it stops and prints the `make lock ARCH=..` to run before
   CONTINUE=1. Then the log reports/rebase-<from>-<to>.{md,json}, and the wheel.
A kill at any point leaves state.json saying where it was: CONTINUE=1 goes on from there
(a patch being placed is placed again), ABORT=1 puts the repository back as it was.
"""

import datetime
import json
import os
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from vllm_overlay.common import pipindex
from vllm_overlay.common import blobcache
from vllm_overlay.wheelbuild import constraints, export, fetch, lockmeta, setup_py
from vllm_overlay.common import log, pin, series, venvs
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write
from vllm_overlay.common.gittree import BASE_TAG, STOPS, AmResult, GitTree, Outcome
from vllm_overlay.common import http
from vllm_overlay.common.http import BatchProgress
from vllm_overlay.common.requirements import requirement_names
from vllm_overlay.testing import testenv
from vllm_overlay.upstream import drift, installable, releases, status, treecheck
from vllm_overlay.upstream.rebase_state import RESULT, STATE, WORK, Mark, Placed, RebaseState

PINNED_FILES = ("patches", "VERSION", "upstream.lock.json")
LOCKS = "locks"  # re-locked for the new pin at the end
DOCKERFILES = ("Dockerfile", "docker/source.Dockerfile")  # their ARG defaults name the pin
WRITTEN = (*PINNED_FILES, LOCKS, *DOCKERFILES)  # what a rebase may change: backed up first
_log = log.stage("rebase")


# --- 1. the target's artifacts -------------------------------------------------------------


def _wheel_name(files: dict[str, str], project: str, version: str, arch: str) -> str:
    pattern = re.compile(rf"^{re.escape(project)}-{re.escape(version)}-cp\d+-abi3-"
                         rf"manylinux_\d+_\d+_{arch}\.whl$")
    names = sorted(n for n in files if pattern.match(n))
    if len(names) != 1:
        raise OverlayError(f"{project} {version}: expected one manylinux CUDA wheel for {arch} "
                           f"on pip's indexes, found {names or 'none'}")
    return names[0]


def fetch_target(files: dict[str, str], key: str, filename: str) -> pin.Artifact:
    """Fetch one artifact into the cache, verified against the sha256 the index gives."""
    url = files[filename]
    sha256 = url.partition("#sha256=")[2].lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise OverlayError(f"{filename}: the index gives no sha256 for it ({url}): "
                           f"cannot verify it")
    blob = blobcache.blob_path(sha256)
    size = blob.stat().st_size if blob.exists() else http.content_length(url)
    art = pin.Artifact(key, filename, size, sha256)
    if blob.exists():  # a copy under the index's sha256 that is not that file: say how big
        try:
            blobcache.cached(art)
        except OverlayError as exc:
            expected = http.content_length(url)
            raise OverlayError(
                f"{filename}: the cached copy {blob} has {size} bytes, the index's file "
                f"{expected}" + (f" ({expected - size} missing: truncated)" if size < expected
                                 else "") + f", and its sha256 is not the index's {sha256}: "
                f"delete it to fetch it again") from exc
    fetch.fetch(art)  # downloads on a cold cache; size and sha256 checked either way
    return art


def release_date(sdist: Path) -> str:
    """The day the sdist was built (its PKG-INFO's mtime), as the lock records it."""
    with tarfile.open(sdist) as tar:
        for member in tar:
            if member.name.count("/") == 1 and member.name.endswith("/PKG-INFO"):
                day = datetime.datetime.fromtimestamp(member.mtime, datetime.UTC).date()
                return f"{day.isoformat()}T00:00:00Z"
    raise OverlayError(f"{sdist}: no PKG-INFO in the sdist")


def new_version(overlay_version: str, release: str) -> str:
    """<release>+<label>.1: the local label kept, its counter restarted."""
    local = overlay_version.partition("+")[2]
    label = re.sub(r"\.\d+$", "", local)
    return f"{release}+{label}.1"


def prepare_pin(the_pin: pin.Pin, files: dict[str, str], to: str) -> dict:
    """Fetch and verify the target's artifacts; the new lock (as written at the end)."""
    project = the_pin.project
    arts = {"sdist": fetch_target(files, "sdist", f"{project}-{to}.tar.gz")}
    for key in the_pin.artifacts:
        if key.startswith("wheel-"):
            arts[key] = fetch_target(files, key, _wheel_name(files, project, to, key[6:]))
    released = release_date(blobcache.blob_path(arts["sdist"].sha256))
    return {"project": project, "version": to, "released": released,
            "artifacts": {k: {"filename": a.filename, "size": a.size, "sha256": a.sha256}
                          for k, a in arts.items()}}


def check_installable(the_pin: pin.Pin, files: dict[str, str], to: str) -> None:
    """Refuse a target whose runtime does not resolve from the configured indexes (what
    `make lock` would fail on at the end), before the wheels are fetched or a patch placed."""
    sdist = fetch_target(files, "sdist", f"{the_pin.project}-{to}.tar.gz")
    can = installable.of_sdist(blobcache.blob_path(sdist.sha256), installable.arches(the_pin))
    if can["installable"] is False:
        raise OverlayError(f"rebase: {to} is not installable: its runtime does not resolve "
                           f"from the configured indexes: {can['package']} not on "
                           f"{', '.join(can['indexes'])} (make lock would fail on it); nothing "
                           f"was changed: pick a release `make status` calls installable, or "
                           f"configure an index that has {can['package']} in pip's settings "
                           f"(PIP_INDEX_URL, PIP_EXTRA_INDEX_URL or pip config)")
    _log.info(f"{to}: installable: {can['text']}")


def source_build(old: dict | None, tree: Path, from_version: str) -> tuple[dict | None, list[str]]:
    """The new lock's "source_build" (MODE=source) and notes for a human: the torch pin and
    upstream's release arch list are read from the target's tree; torch's CUDA builds and
    the archs each nvcc builds cannot be, so they are carried over and named in the notes."""
    if old is None:
        return None, []
    path = setup_py.build_requirements_file(tree)
    pins = [r for r in requirement_names(path.read_text()) if re.match(r"^torch\s*[=<>~!]", r)]
    if len(pins) != 1 or not re.fullmatch(r"torch==\d[\w.]*", pins[0]):
        raise OverlayError(f"{path}: expected one exact pin torch==<version>, found {pins}")
    new = {**old, "torch": pins[0].partition("==")[2]}
    notes = [f"upstream.lock.json source_build.cuda_archs: carried over from {from_version}; "
             f"check them against the release's CMakeLists.txt before MODE=source"]
    if new["torch"] != old.get("torch"):
        notes.append(f"upstream.lock.json source_build: torch {old.get('torch')} -> "
                     f"{new['torch']}; torch_cuda_versions and torch_index are carried over "
                     f"from {from_version}: check which CUDA builds torch {new['torch']} has")
    dockerfile = tree / "docker" / "Dockerfile"
    arch_list = re.search(r"^ARG torch_cuda_arch_list='([^']*)'", dockerfile.read_text(), re.M) \
        if dockerfile.is_file() else None
    if arch_list:
        new["release_arch_list"] = arch_list[1]
    else:
        notes.append(f"upstream.lock.json source_build.release_arch_list: carried over from "
                     f"{from_version} (no torch_cuda_arch_list in docker/Dockerfile)")
    return new, notes


# --- 2. placing the patches -------------------------------------------------------------------


def _hold(probe_results: list[dict]) -> bool:
    return bool(probe_results) and all(r["holds"] for r in probe_results)


def place(tree: Path, patch: series.Patch, probe_results: list[dict]) -> Placed:
    """Apply or drop one patch on the tree; its outcome. A conflict leaves `git am` running."""
    upstreamed = _hold(probe_results)
    header = (patch.trailers.get("Applied-Upstream") or [None])[0]

    def placed(result: Outcome, detail: str, **more) -> Placed:
        return Placed(patch.name, result, detail, patch.subject, probe_results, header, **more)

    fared = GitTree(tree).am(patch, three_way=not upstreamed, keep_conflict=True)
    if fared.applied and not fared.three_way:
        detail = "applies as is" if fared.outcome is Outcome.CLEAN else \
            f"applies at shifted lines ({fared.detail}); the export moves the hunks"
        if upstreamed:
            return placed(Outcome.FLAGGED, detail + "; but all its probes hold on the target: "
                          "kept, a human must check whether upstream has it (the probe may be "
                          "wrong)")
        return placed(Outcome.CLEAN, detail)
    if upstreamed:
        why = "the target already contains it" if fared.outcome is Outcome.PRESENT else \
            "it no longer applies"
        return placed(Outcome.UPSTREAM, f"all its probes hold on the target and {why}")
    if not fared.three_way:  # (it reverse-applies)
        return placed(Outcome.CONFLICT, "the target already contains this change (it "
                      "reverse-applies), but its probes do not hold: fix the probes, or drop "
                      "the patch (continue without committing anything)",
                      files=list(fared.files))
    return _placed_three_way(placed, fared, header)


def _placed_three_way(placed, fared: AmResult, header: str | None) -> Placed:
    """The outcome of a patch that went through `git am --3way`."""
    hunks = fared.detail.splitlines()  # git apply names the first failing hunk per file
    if fared.outcome is Outcome.PRESENT:  # git am exited 0 but made no commit
        return placed(Outcome.CONFLICT, "the 3-way merge gives no change: the target already "
                      "contains this change, but its probes do not hold: fix the probes, or "
                      "drop the patch (continue without committing anything)",
                      files=list(fared.files), hunks=hunks)
    if fared.outcome is Outcome.THREE_WAY:
        return placed(Outcome.THREE_WAY, "plain apply failed; the 3-way merge against the "
                      "pinned file succeeded", files=list(fared.files), hunks=hunks)
    unmerged, gone = list(fared.unmerged), list(fared.deleted)
    files = sorted(set(fared.files) | set(unmerged))
    if gone:  # not a merge to resolve: the code is elsewhere now, or gone
        return placed(Outcome.DELETED, f"upstream deleted {', '.join(gone)}, which it changes"
                      + (f" (its Applied-Upstream header says {header})" if header else ""),
                      hunks=hunks, deleted=gone, files=files,
                      unmerged=[f for f in unmerged if f not in gone])
    output = fared.output
    detail = ("the 3-way merge left conflicts in " + ", ".join(unmerged) if unmerged else
              f"3-way merge impossible ({output.splitlines()[-1] if output else 'no output'}): "
              "apply it by hand (e.g. `git apply --reject`), then `git add` the files")
    return placed(Outcome.CONFLICT, detail, hunks=hunks, files=files, unmerged=unmerged)


def first_releases(the_pin: pin.Pin, patches: list[series.Patch], parsed: dict,
                   versions: list[str], known: dict, urls: dict[str, str]) -> dict[str, str]:
    """patch name -> the first of `versions` (the target last, where all the patch's probes
    hold) from which they hold, by bisection on the releases' cached trees."""
    results = dict(known)  # version -> {patch name: probe results}
    progress = BatchProgress()

    def holds(version: str, name: str) -> bool:
        if version not in results:
            with releases.release_tree(the_pin, version, urls, progress) as (_, tree):
                results[version] = status.run_probes(tree, patches, parsed)
        return _hold(results[version][name])

    out = {}
    for patch in patches:
        low, high = 0, len(versions) - 1
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if holds(versions[mid], patch.name) else (mid + 1, high)
        out[patch.name] = versions[high]
    return out


# --- the run -------------------------------------------------------------------------------


def _check_clean(repo: Path) -> None:
    proc = GitTree(repo).git("status", "--porcelain", "--", *PINNED_FILES, check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        raise OverlayError("rebase needs a clean checkout, but these have uncommitted changes "
                           "(commit or stash them):\n  " + proc.stdout.strip().replace("\n", "\n  "))


def _pin_objects(the_pin: pin.Pin, patches: list[series.Patch]) -> Path:
    """The pinned tree's object store, holding the blobs of every patch's result (the bases
    `git am --3way` needs), as `make status` prepares it."""
    with releases.release_tree(the_pin, the_pin.upstream_version, None,
                               BatchProgress()) as (_, tree):
        status.apply_three_way(tree, patches)  # (its work tree writes to the store)
    return releases.store() / "objects"


def start(repo: Path, to: str) -> RebaseState | None:
    """A fresh rebase to `to` ('latest' = the newest release); None when `to` is the pin."""
    the_pin = pin.load(repo)
    work = repo / WORK
    if (work / STATE).exists():
        state = RebaseState.load(repo)
        raise OverlayError(f"a rebase to {state.to} is in progress in {work}: finish it "
                           f"with `make rebase CONTINUE=1` or drop it with `make rebase ABORT=1`")
    _check_clean(repo)
    patches = series.read_series(repo / "patches")
    parsed = status.parse_all(patches)  # malformed probes fail before any download
    files = pipindex.project_files(the_pin.project)
    sdists = {m[1]: url for name, url in files.items()
              if (m := re.match(rf"^{re.escape(the_pin.project)}-(.+)\.tar\.gz$", name))}
    to = releases.select(sdists, the_pin.upstream_version, to)[0]
    if releases.version_key(to) == releases.version_key(the_pin.upstream_version):
        print(f"rebase: the series is already on {the_pin.upstream_version}: nothing to do")
        return None
    if releases.version_key(to) < releases.version_key(the_pin.upstream_version):
        raise OverlayError(f"rebase: TO={to} is older than the pin {the_pin.upstream_version}; "
                           f"a rebase only moves forward")
    _log.info(f"{len(patches)} patch(es) from {the_pin.upstream_version} to {to}")
    check_installable(the_pin, files, to)
    lock = prepare_pin(the_pin, files, to)
    shutil.rmtree(work, ignore_errors=True)
    tree = work / f"vllm-{to}"
    tree.parent.mkdir(parents=True)
    GitTree.unpack(blobcache.blob_path(lock["artifacts"]["sdist"]["sha256"]), tree, lock["released"])
    old_lock = json.loads((repo / "upstream.lock.json").read_text())
    built, notes = source_build(old_lock.get("source_build"), tree, the_pin.upstream_version)
    if built is not None:
        lock["source_build"] = built
    probe_results = status.run_probes(tree, patches, parsed)  # on the pristine target
    between = releases.select(sdists, the_pin.upstream_version, f"..{to}",
                              pre=releases.is_prerelease(to))[1:]
    upstreamed = [p for p in patches if _hold(probe_results[p.name])]
    firsts = first_releases(the_pin, upstreamed, parsed, between, {to: probe_results},
                            {v: sdists[v] for v in between})
    state = RebaseState(the_pin.upstream_version, to, the_pin.overlay_version,
                        new_version(the_pin.overlay_version, to), lock,
                        series.series_digest(patches, repo / "patches"), probe_results, firsts,
                        notes, [p.name for p in patches])
    state.save(repo)
    return state


def _roll_back_placement(tree: Path, current: Mark) -> None:
    """A kill while a patch was being placed: the tree back to before that patch (the
    patch is still first in "todo" and is placed again)."""
    GitTree(tree).reset_hard(current.head, clean=False)
    _log.info(f"{current.patch}: was being placed when the last run ended; placed again")


def resume(repo: Path) -> RebaseState:
    """The state of a stopped (or killed) rebase, with the human's resolution of the stopped
    patch."""
    work = repo / WORK
    if not (work / STATE).exists():
        raise OverlayError(f"no rebase in progress ({work / STATE} does not exist): start one "
                           f"with `make rebase TO=<release>`")
    state = RebaseState.load(repo)
    tree = state.tree(repo)
    if state.phase:  # patches/, the lock and VERSION are being (or were) written
        if state.checks:  # stopped at the series' tests: the fix must be committed
            if GitTree(tree).dirty():
                raise OverlayError(f"{tree} has uncommitted changes: commit the fix into its "
                                   f"patch's commit first (see the stop's commands)")
        return state
    stopped = state.stopped
    if stopped is None and state.current:
        _roll_back_placement(tree, state.current)
        state.current = None
        state.save(repo)
    if GitTree(tree).am_in_progress():
        which = f"to drop {stopped.patch}" if stopped else "to drop the patch"
        raise OverlayError(f"`git am` is still in progress in {tree}: resolve the conflicts, "
                           f"`git add` the files and run `git am --continue` there (or "
                           f"`git am --skip` {which}), then `make rebase CONTINUE=1`")
    dirty = GitTree(tree).dirty()
    if dirty:
        raise OverlayError(f"{tree} has uncommitted changes: commit them (`git am --continue`"
                           f") or discard them first:\n  " + dirty.replace("\n", "\n  "))
    patches = series.read_series(repo / "patches")
    if series.series_digest(patches, repo / "patches") != state.series_sha256:
        raise OverlayError("patches/ changed since the rebase started; restore it "
                           "(`git checkout -- patches`) or start over (`make rebase ABORT=1`)")
    if stopped is None:  # killed between two patches: nothing to record
        return state
    count = int(GitTree(tree).count(stopped.head))
    outcome = state.done[-1]
    outcome.resolution = ("dropped by hand (nothing committed for it)" if count == 0 else
                          "resolved by hand" + (f" ({count} commits)" if count > 1 else ""))
    state.stopped = None
    _log.info(f"{stopped.patch}: {outcome.resolution}")
    return state


def run(repo: Path, state: RebaseState, build_wheel: Callable[[], Path] | None = None,
        arch: str = "x86_64", make_runtime: bool = False) -> RebaseState:
    """Place the remaining patches; stop at a conflict, else finish (and build_wheel, which
    the command passes: the top-level build is the commands' to call). Returns the state."""
    tree = state.tree(repo)
    if state.todo and not _place_all(repo, state, tree):
        return state
    if state.phase is None and check_stop(repo, state, tree,
                                                 treecheck.static_problems(tree, BASE_TAG)):
        return state
    finish(repo, state, tree, build_wheel, arch, make_runtime)
    return state


def _place_all(repo: Path, state: RebaseState, tree: Path) -> bool:
    """Place the patches still to do; False when one stops for a human."""
    patches = {p.name: p for p in series.read_series(repo / "patches")}
    the_pin = pin.load(repo)
    objects = _pin_objects(the_pin, list(patches.values()))
    GitTree(tree).borrow_objects(objects)
    total = len(state.done) + len(state.todo)
    while state.todo:
        name = state.todo[0]
        state.current = Mark(name, GitTree(tree).head())
        state.save(repo)  # a kill from here on: resume rolls the tree back to "head"
        outcome = place(tree, patches[name], state.probes[name])
        if outcome.result in (Outcome.UPSTREAM, Outcome.FLAGGED):
            outcome.release = state.first_release[name]
        state.todo.pop(0)
        state.done.append(outcome)
        _log.info(f"[{len(state.done)}/{total}] {name[:4]} {outcome.word}: {outcome.detail}")
        if outcome.result is Outcome.DELETED:
            outcome.moved_to = where_it_went(the_pin, list(patches.values()), name, tree,
                                             state)
        if outcome.result in STOPS:
            state.stopped, state.current = state.current, None
            state.save(repo)
            write_log(repo, state)
            print(stop_message(repo, state, tree))
            return False
        state.current = None
        state.save(repo)
    return True


def runtime_python(repo: Path, arch: str) -> Path | None:
    """The Python of the runtime venv of the repo's locks (runtime + test), when `make
    test` made it (it is not made here: torch alone is 900 MB); VLLM_OVERLAY_RUNTIME_PYTHON
    names another."""
    if os.environ.get("VLLM_OVERLAY_RUNTIME_PYTHON"):
        return Path(os.environ["VLLM_OVERLAY_RUNTIME_PYTHON"])
    locks = [constraints.runtime_lock(arch, repo), constraints.test_lock(arch, repo)]
    if not all(path.is_file() for path in locks):
        return None
    key = venvs.venv_key([], "\n".join(path.read_text() for path in locks))
    venv = venvs.cache_dir() / "venvs" / f"runtime-{key}"
    return venvs.python_of(venv) if (venv / ".complete").exists() else None


def check_stop(repo: Path, state: RebaseState, tree: Path, problems: list[dict]) -> bool:
    """Record the checks' problems; a stop (message printed, log written) when any."""
    state.checks = problems
    if not problems:
        state.save(repo)
        return False
    names = {o.subject: o.patch for o in state.done}
    for problem in problems:
        problem["patch"] = names.get(problem["subject"], problem["subject"])
    state.save(repo)
    write_log(repo, state)
    print(check_stop_message(repo, state, tree))
    return True


BEFORE = "before"  # work/rebase/before/: the repository's pinned files as they were


def _backup(repo: Path, work: Path) -> None:
    """Copy patches/, VERSION, upstream.lock.json and locks/ to work/rebase/before/ (whole,
    or not at all), so that ABORT=1 can put them back."""
    tmp = work / (BEFORE + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in WRITTEN:
        src = repo / name
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, tmp / name, symlinks=True)
        elif src.exists():
            shutil.copy2(src, tmp / name)
    tmp.rename(work / BEFORE)


def _restore(repo: Path, work: Path) -> None:
    before = work / BEFORE
    for name in WRITTEN:
        dest, src = repo / name, before / name
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True)
        elif src.exists():
            shutil.copy2(src, dest)


_PLATFORM_TAG = re.compile(r"manylinux_\d+_\d+_(x86_64|aarch64)")


def wheel_platforms(lock: dict) -> dict[str, str]:
    """arch -> the platform tag of the pin's wheel for it (0.20.0: manylinux_2_35_<arch>)."""
    return {m[1]: m[0] for art in lock["artifacts"].values()
            if (m := _PLATFORM_TAG.search(art["filename"]))}


def dockerfile_defaults(text: str, old: str, new: str, old_version: str,
                        new_version: str, platforms: dict[str, str] | None = None) -> str:
    """The Dockerfile with its ARG defaults moved to the new pin: the overlay version (in the
    wheel and SBOM names too), the upstream release (the base image tag), and the wheel's
    platform tag (`platforms`: arch -> tag of the new pin's wheel)."""
    release = re.compile(rf"(?<![\d.]){re.escape(old)}(?![\d]|\.\d)")
    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith("ARG "):
            line = release.sub(new, line.replace(old_version, new_version))
            line = _PLATFORM_TAG.sub(lambda m: (platforms or {}).get(m[1], m[0]), line)
        out.append(line)
    return "".join(out)


def lock_arches(state: RebaseState) -> list[str]:
    """The arches whose runtime lock must follow the new pin: those it pins a wheel for."""
    return [key[6:] for key in state.lock["artifacts"] if key.startswith("wheel-")]


def relock(repo: Path, arches: list[str]) -> dict[str, str]:
    """`make lock ARCH=<arch>` for each arch whose lock does not follow the pin yet;
    arch -> why it failed (network, resolution), for those that could not be locked."""
    failed = {}
    for arch in arches:
        if lockmeta.lock_follows(arch, repo):
            continue
        _log.info(f"re-locking the runtime for {arch} (= make lock ARCH={arch}; network)")
        try:
            lockmeta.lock_pin(arch, repo)  # = make lock ARCH=<arch>
        except (OverlayError, OSError) as exc:
            failed[arch] = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        else:
            if not lockmeta.lock_follows(arch, repo):
                failed[arch] = "make lock finished, but the lock still does not follow the pin"
    return failed


def where_it_went(the_pin: pin.Pin, patches: list[series.Patch], name: str, tree: Path,
                  state: RebaseState) -> dict[str, list[str]]:
    """deleted file -> where drift finds the definitions the patch changes in it on the
    target ("file::name"); {} when drift cannot tell (it is advice, never a failure)."""
    deleted = set(state.done[-1].deleted or [])
    try:
        pinned = drift.Source(releases.store(), state.from_,
                              releases.sdist_ref(the_pin.sdist.sha256))
        found = drift.compute(pinned, patches, [(state.to, drift.Source(tree, state.to))])
    except (OverlayError, OSError, ValueError) as exc:
        _log.info(f"{name}: drift cannot tell where the code went ({exc})")
        return {}
    out: dict[str, list[str]] = {}
    for report in found.patches:
        if report.name != name:
            continue
        for definition in report.definitions:
            if definition.file in deleted:
                for change in definition.changes:
                    went = out.setdefault(definition.file, [])
                    if change.location and change.location not in went:
                        went.append(change.location)
    return {file: went for file, went in out.items() if went}


def finish(repo: Path, state: RebaseState, tree: Path, build_wheel: Callable[[], Path] | None,
           arch: str,
           make_runtime: bool = False) -> None:
    """Write patches/, upstream.lock.json and VERSION, re-lock, then build. Every step can be
    killed: CONTINUE=1 redoes what is missing, ABORT=1 restores the backup."""
    work = repo / WORK
    if state.phase in (None, "writing"):
        if state.phase is None:
            _backup(repo, work)
            state.phase = "writing"
            state.save(repo)
        export.export(tree, repo / "patches")
        atomic_write(repo / "upstream.lock.json", json.dumps(state.lock, indent=2) + "\n")
        atomic_write(repo / "VERSION", state.version + "\n")
        pin.load(repo)  # the new pin reads back
        for name in DOCKERFILES:
            if (repo / name).is_file():
                text = (repo / name).read_text()
                atomic_write(repo / name, dockerfile_defaults(
                    text, state.from_, state.to, state.version_from, state.version,
                    wheel_platforms(state.lock)))
        state.phase = "locking"
        state.save(repo)
        print(f"rebase: {state.from_} -> {state.to}: patches/, upstream.lock.json and "
              f"VERSION ({state.version}) written")
    failed = relock(repo, lock_arches(state))
    if failed:
        write_log(repo, state)
        print(lock_stop_message(state, failed))
        return
    python = runtime_python(repo, arch)
    if python is None and make_runtime:  # RUNTIME_VENV=1: make it now, as `make test` would
        log_file = repo / "reports" / "runtime-venv.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        _log.info(f"making the runtime venv of the new locks (network; pip's output in "
                  f"{log_file})")
        python = venvs.python_of(testenv.ensure_base(arch, repo, log=log_file))
    tests = treecheck.series_tests(tree, BASE_TAG)
    if python is None:
        note = (f"the modules the series touches were not imported, and its own tests "
                f"({', '.join(sorted(tests)) or 'none'}) not run, in the rebased tree: no "
                f"runtime venv for the new locks yet; `make test` runs them (or "
                f"`make rebase CONTINUE=1 RUNTIME_VENV=1` makes the venv first)")
        if note not in state.notes:
            state.notes.append(note)
    else:
        _log.info(f"importing the modules the series touches and running its own tests in "
                  f"{tree} ({len(tests)} file(s), {python})")
        problems = treecheck.import_problems(tree, BASE_TAG, python)
        if check_stop(repo, state, tree, problems or
                      treecheck.run_tests(tree, BASE_TAG, python)):
            state.phase = "writing"  # CONTINUE=1 exports the fixed tree again
            state.save(repo)
            return
    state.complete = True
    md, _ = write_log(repo, state)
    shutil.rmtree(work)
    print(f"rebase: {state.from_} -> {state.to} done; patches/, upstream.lock.json, "
          f"VERSION ({state.version}), locks/ and the Dockerfiles' defaults written; "
          f"log {md}")
    for o in state.done:
        if o.result is Outcome.FLAGGED:
            print(f"flagged for a human: {o.patch}: {o.detail}")
    for note in state.notes:
        print(f"for a human: {note}")
    if build_wheel:
        print(build_wheel())
    print(f"next: `make test` (its runtime venv installs locks/runtime-{arch}.txt, re-locked "
          f"for {state.to}), then `make changelog` (the move's release notes: the pin, the "
          f"patches dropped upstream, the runtime changes)")


def abort(repo: Path) -> None:
    work = repo / WORK
    if not work.exists():
        raise OverlayError(f"no rebase in progress ({work} does not exist)")
    state = RebaseState.load(repo) if (work / STATE).exists() else None
    if state is not None and state.phase:
        if not (work / BEFORE).is_dir():
            raise OverlayError(f"{work / BEFORE} is missing, so ABORT cannot restore the files "
                               f"the rebase wrote: restore them with `git checkout -- "
                               f"{' '.join(WRITTEN)}`, then remove {work}")
        _restore(repo, work)
        shutil.rmtree(work)
        print(f"rebase: patches/, upstream.lock.json, VERSION, locks/ and the Dockerfiles "
              f"restored to "
              f"{state.from_} (from {work / BEFORE}); {work} removed")
        return
    shutil.rmtree(work)
    print(f"rebase: {work} removed; patches/, upstream.lock.json and VERSION were never touched")


# --- messages and the log -------------------------------------------------------------------


def _deleted_advice(outcome: Placed) -> list[str]:
    lines = []
    for f in outcome.deleted or []:
        went = (outcome.moved_to or {}).get(f)
        lines += [f"  {f}: upstream deleted it. Do not `git add` it (that would ship our old "
                  f"copy of the whole file): `git rm {f}`, then port the hunk to where the code "
                  f"went: " + (", ".join(went) + " (drift)" if went else
                               "drift does not know; look for the definitions it changes")]
    return lines


def stop_message(repo: Path, state: RebaseState, tree: Path) -> str:
    outcome = state.done[-1]
    deleted = outcome.deleted or []
    header = outcome.applied_upstream_header
    skip = "git am --skip (drops the patch" + (
        f"; right if upstream has it, as its Applied-Upstream: {header} says)" if header else ")")
    lines = [f"rebase: stopped at {outcome.patch} ({outcome.subject}): "
             f"{outcome.word} on {state.to}", f"  {outcome.detail}",
             *(f"  plain apply failed: {h}" for h in outcome.hunks),
             *(f"  to resolve: {f}" for f in outcome.unmerged),
             *_deleted_advice(outcome),
             f"the work tree keeps it for you: {tree}",
             "patches/, upstream.lock.json and VERSION are unchanged. To go on:",
             f"  cd {tree}",
             *([f"  git rm -q {' '.join(deleted)}   # then port the hunk, `git add` the files "
                f"you ported it to"] if deleted else ["  # edit the files, then"]),
             f"  git add {' '.join(outcome.unmerged) or '<files>'} && git am --continue"
             f"     # or: {skip}",
             f"  cd {repo} && make rebase CONTINUE=1     # = ./build.sh rebase --continue"]
    return "\n".join(lines)


def check_stop_message(repo: Path, state: RebaseState, tree: Path) -> str:
    problems = state.checks
    written = bool(state.phase)
    first = next((p for p in problems if p.get("commit")), None)
    fixup = f"--fixup={first['commit'][:12]}" if first else "--fixup=<the patch's commit>"
    lines = [f"rebase: stopped before the build: the merged tree does not work "
             f"({len(problems)} problem(s))",
             *(f"  {p['patch']}: {p['detail']}" for p in problems),
             f"the work tree keeps it: {tree}",
             ("patches/, upstream.lock.json, VERSION and locks/ are written (ABORT=1 restores "
              "them); CONTINUE=1 exports the fixed tree again. To go on:") if written else
             "patches/, upstream.lock.json and VERSION are unchanged. To go on, fix it in "
             "that patch's own commit:",
             f"  cd {tree}",
             "  # edit the files, then",
             f"  git commit -q -a {fixup} && GIT_SEQUENCE_EDITOR=: git rebase -q -i "
             f"--autosquash {BASE_TAG}",
             f"  cd {repo} && make rebase CONTINUE=1     # checks the tree again",
             "or `make rebase ABORT=1`"]
    return "\n".join(lines)


def lock_stop_message(state: RebaseState, failed: dict[str, str]) -> str:
    lines = [f"rebase: stopped before the build: the runtime lock does not follow "
             f"{state.to} yet", *(f"  make lock ARCH={a} failed: {why}" for a, why in
                                      failed.items()),
             f"patches/, upstream.lock.json and VERSION ({state.version}) are written; "
             f"locks/ is not. To go on (network: pip's indexes):",
             *(f"  make lock ARCH={a}" for a in failed),
             "  make rebase CONTINUE=1     # checks the locks follow the pin, then builds",
             f"or `make rebase ABORT=1` puts patches/, upstream.lock.json, VERSION and locks/ "
             f"back as they were on {state.from_}"]
    return "\n".join(lines)


def log_paths(repo: Path, state: RebaseState) -> tuple[Path, Path]:
    base = repo / "reports" / f"rebase-{state.from_}-{state.to}"
    return base.with_name(base.name + ".md"), base.with_name(base.name + ".json")


def to_json(state: RebaseState) -> dict:
    done = state.complete
    return {"from": state.from_, "to": state.to, "version_from": state.version_from,
            "version": state.version, "state": "complete" if done else "stopped",
            "patches": [o.to_json() for o in state.done]
            + [{"patch": n, "result": RESULT[Outcome.PENDING]} for n in state.todo],
            "lock": state.lock, "notes": state.notes, "checks": state.checks,
            "next": ["make test", "make changelog"] if done else
            ["fix the tree (the stop's commands)", "make rebase CONTINUE=1"]
            if state.checks else
            [*(f"make lock ARCH={a}" for a in lock_arches(state)), "make rebase CONTINUE=1"]
            if state.phase else ["git am --continue (in the work tree)",
                                 "make rebase CONTINUE=1"]}


def to_markdown(data: dict) -> str:
    lines = [f"# Rebase {data['from']} -> {data['to']}", "",
             f"{data['version_from']} -> {data['version']}: **{data['state']}**", "",
             "| patch | result | detail |", "| --- | --- | --- |"]
    for o in data["patches"]:
        result = o["result"]
        if o.get("release"):
            result += f" (in {o['release']})" if result == "dropped-upstream" else \
                f" (probes hold from {o['release']})"
        detail = o.get("detail", "")
        if o.get("resolution"):
            detail += f"; {o['resolution']}"
        if o.get("hunks"):
            detail += "; plain apply failed at: " + "; ".join(f"`{h}`" for h in o["hunks"])
        if o.get("unmerged"):
            detail += "; conflicts left in: " + ", ".join(f"`{f}`" for f in o["unmerged"])
        for gone, went in o.get("moved_to", {}).items():
            detail += f"; `{gone}`'s code went to " + ", ".join(f"`{w}`" for w in went)
        lines.append(f"| {o['patch']} | {result} | {detail.replace('|', '/')} |")
    lines += ["", f"## New lock ({'written' if data['state'] == 'complete' else 'not written yet'})",
              "", f"`{data['lock']['version']}`, released {data['lock']['released']}", "",
              "| artifact | file | size | sha256 |", "| --- | --- | --- | --- |"]
    for key, art in data["lock"]["artifacts"].items():
        lines.append(f"| {key} | `{art['filename']}` | {art['size']} | `{art['sha256']}` |")
    if data.get("checks") is not None:
        lines += ["", "## Checks of the merged tree (before the build)", ""]
        lines += [f"- {p['patch']}: {p['detail']}" for p in data["checks"]] or \
            ["- every changed Python file compiles, every call it adds names something defined"]
    if data["notes"]:
        lines += ["", "## For a human", "", *(f"- {note}" for note in data["notes"])]
    lines += ["", "## Next", "", *(f"- `{step}`" for step in data["next"]), ""]
    return "\n".join(lines)


def write_log(repo: Path, state: RebaseState) -> tuple[Path, Path]:
    md, js = log_paths(repo, state)
    md.parent.mkdir(parents=True, exist_ok=True)
    data = to_json(state)
    atomic_write(js, json.dumps(data, indent=1) + "\n")
    atomic_write(md, to_markdown(data))
    return md, js
