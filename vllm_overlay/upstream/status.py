"""Status: the patch series against upstream releases, as a patch x release matrix.

Per release, on a private work tree of its sdist's files (releases.work_tree):
  1. every patch's probes run on the pristine release tree (all hold -> "already upstream");
  2. the series is applied in order: `git apply --check` (clean / shifted lines), else
     `git am --3way`; the work tree shares the store's objects (the pin's among them), so
     the merge base is the pinned file (plus earlier patches) our patch was written
     against. A patch that still does not apply is left out and the later ones are judged
     without it (the cell says so).
Conflicts are results, not errors: only failures of the tool itself raise OverlayError.
"""

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from vllm_overlay.upstream import installable as installability
from vllm_overlay.upstream import probes
from vllm_overlay.upstream import releases as upstream
from vllm_overlay.common import log
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write
from vllm_overlay.common.paths import cache_dir
from vllm_overlay.common.http import BatchProgress
from vllm_overlay.common import gittree
from vllm_overlay.common.git import version as git_version
from vllm_overlay.common.gittree import APPLIES, STOPS, AmResult, GitTree, Outcome
from vllm_overlay.common.pin import Pin
from vllm_overlay.common.series import Patch

_log = log.stage("status")
LEGEND = {
    "clean": "applies as is",
    "offset": "applies at shifted lines (git apply offset; no fuzz is ever used)",
    "3-way": "applies only through a 3-way merge against the pinned file",
    "conflict": "does not apply, not even 3-way (files listed below)",
    "deleted": "a file the patch changes was deleted upstream (not a merge conflict): port the "
               "hunk to where the code went (drift), or drop the patch if upstream has it",
    "upstream": "all of the patch's probes hold in the release: already upstream",
    "present": "the change is textually in the release, but its probes do not hold",
    "no-probe": "",
}


@dataclass
class Cell:
    status: Outcome       # upstream | clean | offset | 3-way | present | conflict | deleted
    apply: Outcome        # how the patch itself fared: clean | offset | 3-way | present |
                          # conflict | deleted
    detail: str = ""
    files: list[str] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)  # {"probe", "holds", "why"}
    without: list[str] = field(default_factory=list)  # earlier patches left out here
    hunks: int = 0        # a conflicting cell's cost: the patch's hunks in the files at
    lines: int = 0        # fault, and their changed (+/-) lines

    def short(self) -> str:
        text = self.status.value
        if self.status is Outcome.UPSTREAM and self.apply is not Outcome.CLEAN:
            text += f"/{self.apply}"
        return text + ("*" if self.without else "")

    @classmethod
    def from_json(cls, data: dict) -> "Cell":
        return cls(**{**data, "status": Outcome(data["status"]), "apply": Outcome(data["apply"])})


@dataclass
class Release:
    version: str
    sdist: str
    sha256: str
    cells: dict[str, Cell]
    seconds: float = 0.0
    installable: dict = field(default_factory=dict)  # installable.of_sdist's answer


def run_probes(tree: Path, patches: list[Patch], parsed: dict[str, list]) -> dict[str, list]:
    """patch name -> [{"probe", "holds", "why"}] on the tree as it is (pristine)."""
    out = {}
    for patch in patches:
        results = []
        for probe in parsed[patch.name]:
            result = probes.check(probe, tree)
            results.append({"probe": probe.line, "holds": result.holds, "why": result.why})
        out[patch.name] = results
    return out


def apply_three_way(tree: Path, patches: list[Patch]) -> dict[str, tuple[Outcome, str, list[str]]]:
    """Apply in series order; patch name -> (apply status, detail, files). See module doc."""
    work = GitTree(tree)
    return {patch.name: _fared(work.am(patch, three_way=True)) for patch in patches}


def _fared(result: AmResult) -> tuple[Outcome, str, list[str]]:
    """A cell's (apply status, detail, files) from how `git am` fared."""
    outcome, files = result.outcome, list(result.files)
    if outcome in APPLIES:
        if result.empty:
            return Outcome.PRESENT, "applies empty (no change)", []
        return outcome, result.detail, []
    if not result.three_way:  # (it reverse-applies)
        return outcome, result.detail, files
    if outcome is Outcome.THREE_WAY:
        return outcome, f"plain apply failed ({result.detail}); 3-way merge succeeded", \
            files
    if outcome is Outcome.DELETED:
        return outcome, f"upstream deleted {', '.join(result.deleted)}, which it " \
            "changes", list(result.deleted)
    if outcome is Outcome.PRESENT:
        return outcome, "3-way merge gives no change", files
    why = "3-way merge failed"
    if "could not build fake ancestor" in result.output or "lacks the necessary blob" \
            in result.output:
        why = "3-way impossible (base blobs unknown)"
    return outcome, f"{result.detail}\n({why})", files


def evaluate_release(tree: Path, patches: list[Patch], parsed: dict[str, list],
                     inside: Callable | None = None):
    """All cells of one release (tree: a pristine private work tree, releases.work_tree),
    and what inside(tree, cells) returned, called while the series is still applied."""
    probe_results = run_probes(tree, patches, parsed)
    applied = apply_three_way(tree, patches)
    cells = _cells(patches, probe_results, applied)
    return cells, (inside(tree, cells) if inside else None)


def patch_cost(patch: Patch, files: list[str]) -> tuple[int, int]:
    """(hunks, changed lines) of the patch in `files` (all its files when empty)."""
    hunks = lines = 0
    current = None
    for line in patch.path.read_text(errors="replace").splitlines():
        if line.startswith("diff --git "):
            current = line.split(" b/", 1)[-1]
        elif current is None or (files and current not in files):
            continue
        elif line.startswith("@@ "):
            hunks += 1
        elif line.startswith(("+", "-")) and not line.startswith(("+++ ", "--- ")):
            lines += 1
    return hunks, lines


def _cells(patches, probe_results, applied) -> dict[str, Cell]:
    cells, left_out = {}, []
    for patch in patches:
        status, detail, files = applied[patch.name]
        results = probe_results[patch.name]
        upstreamed = bool(results) and all(r["holds"] for r in results)
        cells[patch.name] = Cell(Outcome.UPSTREAM if upstreamed else status, status, detail,
                                 files if status in (*STOPS, Outcome.THREE_WAY) else [],
                                 results, list(left_out))
        if status in (*STOPS, Outcome.PRESENT) and not upstreamed:
            cells[patch.name].hunks, cells[patch.name].lines = patch_cost(
                patch, files if status is not Outcome.PRESENT else [])
        if status in STOPS:
            left_out.append(patch.name)
    return cells


# --- the whole matrix ---------------------------------------------------------------------


@dataclass
class PatchRow:
    """One patch of the matrix: its probes and the release they say has it."""

    name: str
    subject: str
    probes: list[str]
    applied_upstream_header: str | None
    suggested_applied_upstream: str | None  # the first release where all its probes hold
    probes_fail_again_in: list[str]         # later releases where they no longer do


@dataclass
class BadProbe:
    """A probe that already holds on the pin: it cannot tell that upstream has the patch."""

    patch: str
    probe: str
    why: str


@dataclass
class Matrix:
    project: str
    pin: str
    patches_dir: str
    patches: list[PatchRow]
    releases: list[Release]
    bad_probes: list[BadProbe]
    total_seconds: float = 0.0
    changes: list[str] | None = None  # since the last report (None: not compared)
    compared_with: str = ""


def _patch_rows(patches: list[Patch], parsed: dict[str, list], releases: list[Release],
                ) -> list[PatchRow]:
    """Per patch: its probes, and the first release where they all hold (its
    Applied-Upstream), against what its header says."""
    info = []
    for patch in patches:
        holds = [r.version for r in releases
                 if r.cells[patch.name].status is Outcome.UPSTREAM]
        first = holds[0] if holds else None
        _deleted_but_upstream(patch, first, releases)
        later_fail = [r.version for r in releases if first and upstream.version_key(r.version)
                      > upstream.version_key(first) and r.version not in holds]
        header = (patch.trailers.get("Applied-Upstream") or [None])[0]
        info.append(PatchRow(patch.name, patch.subject, [p.line for p in parsed[patch.name]],
                             header, first, later_fail))
    return info


def parse_all(patches: list[Patch]) -> dict[str, list]:
    return {patch.name: probes.parse(patch) for patch in patches}


def compute(pin: Pin, patches: list[Patch], versions: list[str], urls: dict[str, str] | None,
            patches_dir: Path, jobs: int = 4, check_installable: bool = True) -> Matrix:
    parsed = parse_all(patches)  # malformed probes fail before any download
    started = time.monotonic()
    with upstream.WorkTrees(upstream.store()) as trees:
        pin_cells, releases = _evaluate_all(pin, patches, parsed, versions, urls, jobs,
                                            check_installable, trees)
    bad = [BadProbe(name, r["probe"], r["why"])
           for name, cell in pin_cells.items() for r in cell.probes if r["holds"]]
    info = _patch_rows(patches, parsed, releases)
    return Matrix(pin.project, pin.upstream_version, str(patches_dir), info, releases, bad,
                  time.monotonic() - started)


def _evaluate_all(pin: Pin, patches: list[Patch], parsed: dict[str, list], versions: list[str],
                  urls: dict[str, str] | None, jobs: int, check_installable: bool,
                  trees: upstream.WorkTrees) -> tuple[dict[str, Cell], list[Release]]:
    """The pin's cells and every release, `jobs` at a time (the pin first)."""
    progress = BatchProgress()

    def evaluated(version: str) -> tuple[upstream.Sdist, dict[str, Cell]]:
        """The release's sdist and cells (from the cache, else from a work tree). Its
        files are imported into the store either way: drift reads them there."""
        sdist, commit = upstream.release_source(pin, version, urls, progress)
        cells = cells_key.load(sdist.sha256) if version != pin.upstream_version or all(
            cells_key.has(upstream.recorded_sha256(pin.project, v)) for v in versions
            if v != pin.upstream_version) else None
        if cells is None:
            with trees.checkout(commit) as tree:
                cells, _ = evaluate_release(tree, patches, parsed)
            cells_key.save(sdist.sha256, cells)
        return sdist, cells

    cells_key = CellCache(pin, patches)
    # The pin first: its probes are the sanity check, and applying the series there writes
    # the blobs that 3-way merges on the other releases use as their base (so the pin's
    # cached cells are used only when every other release's are cached too).
    t0 = time.monotonic()
    pin_sdist, pin_cells = evaluated(pin.upstream_version)
    pin_seconds = time.monotonic() - t0
    indexes = installability.lock_settings() if check_installable else None
    done, done_lock = [0], threading.Lock()

    def one(version: str) -> Release:
        t = time.monotonic()
        if version == pin.upstream_version:
            sdist, cells, seconds = pin_sdist, pin_cells, pin_seconds
        else:
            sdist, cells = evaluated(version)
            seconds = time.monotonic() - t
        can = installability.of_sdist(sdist.path, installability.arches(pin), indexes) \
            if check_installable else {}
        with done_lock:
            done[0] += 1
        summary = ", ".join(f"{name[:4]} {cell.short()}" for name, cell in cells.items())
        _log.info(f"[{done[0]}/{len(versions)}] {version}: {summary or 'no patches'}"
                  + (f"; installable: {can['text']}" if can else "") + f" ({seconds:.1f} s)")
        return Release(version, sdist.filename, sdist.sha256, cells, seconds, can)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return pin_cells, list(pool.map(one, versions))


# The code whose behaviour decides a release's cells: a change to it is a new cache key.
_CELL_CODE = [Path(__file__), Path(probes.__file__), Path(gittree.__file__)]
_CELLS_SCHEMA = 1


class CellCache:
    """A release's cells (before the matrix-wide `_deleted_but_upstream` pass), cached by
    content: the release sdist's and the pin's sha256, the series (names, bytes, paths),
    the git version and this code. A warm `status` then runs no git at all for a release."""

    def __init__(self, pin: Pin, patches: list[Patch]):
        digest = hashlib.sha256(json.dumps({
            "schema": _CELLS_SCHEMA, "pin": pin.sdist.sha256, "git": git_version(),
            "code": [hashlib.sha256(p.read_bytes()).hexdigest() for p in _CELL_CODE],
            "patches": [[p.name, str(p.path), hashlib.sha256(p.path.read_bytes()).hexdigest()]
                        for p in patches]}, sort_keys=True).encode())
        self.base = digest.hexdigest()

    def path(self, sha256: str) -> Path:
        key = hashlib.sha256(f"{self.base}\0{sha256}".encode()).hexdigest()
        return cache_dir() / "status-cells" / f"{key}.json"

    def has(self, sha256: str | None) -> bool:
        return bool(sha256) and self.path(sha256).exists()

    def load(self, sha256: str) -> dict[str, Cell] | None:
        try:
            data = json.loads(self.path(sha256).read_text())
            return {name: Cell.from_json(cell) for name, cell in data.items()}
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def save(self, sha256: str, cells: dict[str, Cell]) -> None:
        where = self.path(sha256)
        where.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(where, json.dumps({n: asdict(c) for n, c in cells.items()}) + "\n")


def _deleted_but_upstream(patch: Patch, first: str | None, releases: list[Release]) -> None:
    """A patch whose file upstream deleted, in a release from the one its Applied-Upstream
    header names (or the first where its probes held) on: upstream had it, then moved the
    code; its probes cannot hold on a file that is gone. "upstream/deleted", not a cell to
    port."""
    header = (patch.trailers.get("Applied-Upstream") or [None])[0]
    landed = [v for v in (header, first) if v]
    for release in releases:
        cell = release.cells[patch.name]
        if cell.status is not Outcome.DELETED:
            continue
        key = upstream.version_key(release.version)
        for version in landed:
            try:
                if upstream.version_key(version) <= key:
                    cell.status = Outcome.UPSTREAM
                    cell.detail += (f"; upstream has it since {version} "
                                    f"({'its Applied-Upstream header' if version == header else 'its probes held there'})")
                    break
            except OverlayError:  # a header that is no release number proves nothing
                continue


# --- rendering ----------------------------------------------------------------------------


def to_json(matrix: Matrix) -> dict:
    data = asdict(matrix)
    for release in data["releases"]:
        release.pop("seconds")
    data.pop("total_seconds")
    data["summary"] = {r.version: release_summary(r) for r in matrix.releases}
    data["legend"] = {k: v for k, v in LEGEND.items() if v}
    return data


def _suggestion_note(p: PatchRow) -> str:
    header, first = p.applied_upstream_header, p.suggested_applied_upstream
    if not p.probes:
        return "no probe: cannot tell"
    if first is None:
        note = "probes hold in none of these releases"
        return note + (f"; header says {header}" if header else "")
    note = ("header agrees" if header == first else
            f"header says {header}" if header else "header has no Applied-Upstream")
    if p.probes_fail_again_in:
        note += f"; probes fail again in {', '.join(p.probes_fail_again_in)}"
    return note


def to_markdown(matrix: Matrix) -> str:
    versions = [r.version for r in matrix.releases]
    lines = [f"# Upstream status of the patch series ({matrix.project})", "",
             f"Pin: {matrix.pin}; patches: `{matrix.patches_dir}` ({len(matrix.patches)}); "
             f"releases: {', '.join(versions)}", ""]
    lines += first_screen(matrix)
    if not matrix.patches:
        lines += ["The series is empty: nothing to check.", ""]
    else:
        head = [v + (" (pin)" if v == matrix.pin else "") for v in versions]
        lines += ["| patch | " + " | ".join(head) + " |",
                  "| --- |" + " --- |" * len(versions)]
        for p in matrix.patches:
            cells = [r.cells[p.name].short() for r in matrix.releases]
            label = f"{p.name[:4]} {p.subject}"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", "Legend: " + "; ".join(f"**{k}** {v}" for k, v in LEGEND.items() if v)
                  + "; **x/y** already upstream, and the patch itself fares y; "
                  "**\\*** judged without an earlier patch that does not apply there "
                  "(that patch is left out, the rest of the series is applied in order).", ""]
        lines += ["## Applied-Upstream", "",
                  "| patch | header | suggested (first release where all probes hold) | note |",
                  "| --- | --- | --- | --- |"]
        for p in matrix.patches:
            lines.append(f"| {p.name[:4]} | {p.applied_upstream_header or '-'} | "
                         f"{p.suggested_applied_upstream or '-'} | {_suggestion_note(p)} |")
        lines.append("")
    if matrix.bad_probes:
        lines += ["## Bad probes", "",
                  f"These already hold on the pin {matrix.pin}, so they cannot tell that "
                  "upstream has the patch's change; fix them:", ""]
        lines += [f"- {b.patch}: `Probe: {b.probe}` ({b.why})"
                  for b in matrix.bad_probes]
        lines.append("")
    grouped: dict[tuple, list[int]] = {}  # the same finding in several releases: one line
    for index, release in enumerate(matrix.releases):
        for name, cell in release.cells.items():
            if cell.apply in (*STOPS, Outcome.THREE_WAY, Outcome.OFFSET, Outcome.PRESENT) \
                    or cell.without:
                text = cell.detail.replace("\n", "; ")
                if cell.without:
                    text += f" (judged without {', '.join(w[:4] for w in cell.without)})"
                grouped.setdefault((name, cell.apply, text), []).append(index)
    if grouped:
        lines += ["## Details", ""]
        for (name, how, text), indexes in sorted(grouped.items(), key=lambda kv: (kv[0][0],
                                                                                  kv[1][0])):
            lines.append(f"- {_span([versions[i] for i in indexes], indexes)} {name[:4]} "
                         f"**{how}**: {text}")
        lines.append("")
    return "\n".join(lines)


MOVE = {Outcome.UPSTREAM: "dropped", Outcome.CLEAN: "clean", Outcome.OFFSET: "clean",
        Outcome.THREE_WAY: "3-way", Outcome.CONFLICT: "conflicting",
        Outcome.DELETED: "conflicting", Outcome.PRESENT: "conflicting"}


def release_summary(release: Release) -> dict:
    """What moving the pin to this release costs: how many patches a rebase drops (already
    upstream), applies as they are, merges 3-way, and leaves to a human (their hunks and
    changed lines), and whether its runtime installs."""
    out = {"dropped": [], "clean": [], "3-way": [], "conflicting": []}
    for name, cell in release.cells.items():
        out[MOVE[cell.status]].append(name)
    cost = [{"patch": n, "hunks": release.cells[n].hunks, "lines": release.cells[n].lines,
             "why": release.cells[n].status.value} for n in out["conflicting"]]
    return {**{k: len(v) for k, v in out.items()}, "conflicting_patches": cost,
            "installable": (release.installable or {}).get("installable")}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def first_screen(matrix: Matrix) -> list[str]:
    """Per release: can we move there, and what does it cost; what changed since the last
    report."""
    lines = ["## Can we move, and what does it cost?", "",
             "| release | installable (runtime from the configured indexes) | dropped (upstream)"
             " | clean | 3-way | conflicting (hunks, changed lines) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in matrix.releases:
        pin = " (pin)" if r.version == matrix.pin else ""
        s = release_summary(r)
        cost = ", ".join(f"{c['patch'][:4]}{' ' + c['why'] if c['why'] != 'conflict' else ''}"
                         f" ({_plural(c['hunks'], 'hunk')}, {_plural(c['lines'], 'line')})"
                         for c in s["conflicting_patches"])
        lines.append(f"| {r.version}{pin} | {(r.installable or {}).get('text', 'not checked')} "
                     f"| {s['dropped']} | {s['clean']} | {s['3-way']} | {s['conflicting']}"
                     f"{': ' + cost if cost else ''} |")
    lines += ["", "### Changed since the last report", ""]
    if matrix.changes is None:
        lines.append(f"- not compared: {matrix.compared_with or 'no earlier report'}")
    else:
        lines += [f"- {c}" for c in matrix.changes] or \
            [f"- nothing (compared with {matrix.compared_with})"]
    return lines + [""]


_CONFLICTING = tuple(o.value for o in STOPS)  # (status.json's words)


def _drifting(drift: dict | None) -> set[tuple[str, str, str]]:
    """(patch, definition, release) of every follow-up change drift reports."""
    out = set()
    for p in (drift or {}).get("patches", []):
        for d in p.get("definitions", []):
            for c in d.get("changes", []):
                if c.get("follow_up"):
                    out.add((p["name"], f"{d['file']}::{d['name']}", c["release"]))
    return out


def changes_since(old: dict, new: dict) -> list[str]:
    """What changed between two status.json reports: a patch newly upstream, newly
    conflicting (or deleted), no longer conflicting, newly drifting; a release newer than
    the last report's newest; a release's installability. Same pin only (else one line)."""
    if old.get("pin") != new["pin"]:
        return [f"the pin moved: {old.get('pin')} -> {new['pin']} (cells not compared)"]
    out = []
    before = {r["version"]: r for r in old.get("releases", [])}
    newest = max((upstream.version_key(v) for v in before), default=None)
    for r in new["releases"]:
        version, was = r["version"], before.get(r["version"])
        if was is None:
            if newest is None or upstream.version_key(version) > newest:
                can = (r.get("installable") or {}).get("text", "not checked")
                out.append(f"{version}: new release (installable: {can})")
            continue
        old_can = (was.get("installable") or {}).get("installable")
        new_can = (r.get("installable") or {}).get("installable")
        if old_can is not None and new_can is not None and old_can != new_can:
            out.append(f"{version}: installable now: {r['installable']['text']} "
                       f"(was {was['installable']['text']})")
        for name, cell in r["cells"].items():
            prev = was.get("cells", {}).get(name)
            if prev is None:
                continue
            if cell["status"] == "upstream" and prev["status"] != "upstream":
                out.append(f"{version}: {name} newly upstream (was {prev['status']})")
            elif cell["status"] in _CONFLICTING and prev["status"] not in _CONFLICTING:
                out.append(f"{version}: {name} newly {cell['status']} (was {prev['status']}; "
                           f"{cell['detail'].splitlines()[0] if cell['detail'] else ''})")
            elif prev["status"] in _CONFLICTING and cell["status"] not in _CONFLICTING:
                out.append(f"{version}: {name} no longer {prev['status']} (now "
                           f"{cell['status']})")
    if "drift" in old and "drift" in new:
        for name, where, version in sorted(_drifting(new["drift"]) - _drifting(old["drift"])):
            out.append(f"{version}: {name} newly drifting: upstream changed {where}")
    return out


def _span(names: list[str], indexes: list[int]) -> str:
    """'A' / 'A, B' / 'A .. D (4 releases)' when the indexes are one contiguous run."""
    if len(names) > 2 and indexes[-1] - indexes[0] == len(indexes) - 1:
        return f"{names[0]} .. {names[-1]} ({len(names)} releases)"
    return ", ".join(names)


def write_reports(matrix: Matrix, out_dir: Path, drift=None) -> tuple[Path, Path]:
    """reports/status.md and status.json, each written to a temp file then renamed; with
    drift (drift.Drift): its section in both, its diffs in reports/drift/."""
    out_dir.mkdir(parents=True, exist_ok=True)
    compare(matrix, out_dir / "status.json", drift)
    md, data = to_markdown(matrix), to_json(matrix)
    if drift is not None:
        drift.write(out_dir)
        md, data["drift"] = md + "\n" + drift.markdown(), drift.to_json()
    written = []
    for name, text in (("status.md", md), ("status.json", json.dumps(data, indent=1) + "\n")):
        atomic_write(out_dir / name, text)
        written.append(out_dir / name)
    return written[0], written[1]


def compare(matrix: Matrix, previous: Path, drift=None) -> None:
    """matrix.changes: what changed since the report at `previous` (the last one written)."""
    try:
        old = json.loads(previous.read_text())
    except FileNotFoundError:
        matrix.changes, matrix.compared_with = None, f"no earlier report ({previous})"
        return
    except (OSError, ValueError) as exc:
        matrix.changes, matrix.compared_with = None, f"{previous} unreadable ({exc})"
        return
    new = to_json(matrix)
    if drift is not None:
        new["drift"] = drift.to_json()
    if "drift" not in new:
        old.pop("drift", None)
    matrix.changes = changes_since(old, new)
    matrix.compared_with = f"{previous}, written before this run"


def timing_table(matrix: Matrix) -> str:
    rows = [f"  {r.version:>10}  {r.seconds:6.2f} s" for r in matrix.releases]
    return "\n".join(["time per release:", *rows, f"  {'total':>10}  {matrix.total_seconds:6.2f} s"])


def check_jobs(jobs: int) -> int:
    if jobs < 1:
        raise OverlayError(f"--jobs {jobs}: must be at least 1")
    return jobs
