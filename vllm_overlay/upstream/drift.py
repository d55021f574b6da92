"""Drift: upstream's later changes to the code each patch touches.

1. Targets: the definitions (pydefs.py) each patch's hunks change or add, found by applying
   the series to the pinned tree with `git am` and mapping the lines of `git diff -U0` of
   each patch's commit to the innermost definition before and after it (blank and comment
   lines do not count). A definition the pinned upstream lacks is one the series adds: its
   reference is our version; otherwise the pinned upstream's.
2. Tracking: per release after the pin, in order, the target is looked up where it was in
   the release before; if it is not there: the same dotted name in a file that changed since
   the release before (moved; for one of ours not yet seen upstream, a public name only),
   else a definition with the same normalised body in such a file (renamed, or moved and
   renamed; a few identifiers of the definition pre-select the files); else it is deleted.
3. Changes: a release where the found version differs from the one before (normalised
   AST), or the location differs, is a change; the diff against the reference and against
   the release before is kept for the report.
Everything is read from git objects (the releases' commits in the cache's store, never a
work tree) and cached by content (blob, commit) under the cache's drift/.
"""

import difflib
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from vllm_overlay.common import log
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write
from vllm_overlay.common.gittree import BASE_TAG, GitTree
from vllm_overlay.common.paths import cache_dir
from vllm_overlay.common.series import Patch
from vllm_overlay.upstream import pydefs, releases
from vllm_overlay.upstream.drift_report import Change, Definition, Drift, PatchDrift

_log = log.stage("drift")

SCHEMA = 1
_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _cache(*parts: str) -> Path:
    return cache_dir() / "drift" / f"v{SCHEMA}-py{sys.version_info[0]}{sys.version_info[1]}" \
        / Path(*parts)


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):  # a damaged entry is recomputed
        return None


def _save(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data))


# --- reading a cached tree's committed files ----------------------------------------------


class Source:
    """The committed files of one commit (rev) of a repository (tree)."""

    def __init__(self, tree: Path, label: str, rev: str = BASE_TAG):
        self.tree, self.label = tree, label
        self.commit = GitTree(tree).out("rev-parse", f"{rev}^{{commit}}")
        self._listing: dict[str, str] | None = None
        self._texts: dict[str, str] = {}

    def listing(self) -> dict[str, str]:
        """path -> blob of every .py file (one ls-tree per commit, kept in the cache)."""
        if self._listing is None:
            entry = _cache("trees", self.commit + ".json")
            self._listing = _load(entry)
            if self._listing is None:
                out = GitTree(self.tree).git("ls-tree", "-r", "-z", self.commit).stdout
                self._listing = {}
                for item in filter(None, out.split("\0")):
                    meta, path = item.split("\t", 1)
                    if meta.split()[1] == "blob" and path.endswith(".py"):
                        self._listing[path] = meta.split()[2]
                _save(entry, self._listing)
        return self._listing

    def blob(self, path: str) -> str | None:
        return self.listing().get(path)

    def texts(self, blobs, keep: bool = True) -> dict[str, str]:
        """blob -> text; keep=False for one-off reads (not held in memory)."""
        store = self._texts if keep else dict(self._texts)
        wanted = sorted({b for b in blobs if b not in store})
        if wanted:
            for blob, data in GitTree(self.tree).cat_blobs(wanted).items():
                store[blob] = data.decode("utf-8", "replace")
        return {b: store[b] for b in blobs}

    def text(self, blob: str) -> str:
        return self.texts([blob])[blob]


class Index:
    """pydefs.index per blob, memoised here and on disk (content-addressed)."""

    def __init__(self):
        self._memo: dict[str, dict | None] = {}
        self.errors: dict[str, str] = {}  # "label:path" -> why it was not read

    def defs(self, source: Source, path: str, blob: str | None = None
             ) -> dict[str, pydefs.Definition] | None:
        """None when the file is absent (or does not parse: noted in errors)."""
        blob = blob or source.blob(path)
        if blob is None:
            return None
        if blob not in self._memo:
            self._memo[blob] = self._read(source, path, blob)
        if self._memo[blob] is None:
            self.errors.setdefault(f"{source.label}:{path}", "does not parse")
        return self._memo[blob]

    def _read(self, source: Source, path: str, blob: str):
        entry = _cache("defs", blob[:2], blob + ".json")
        data = _load(entry)
        if data is None:
            try:
                found = pydefs.index(source.text(blob))
                data = {"defs": [[d.name, d.start, d.end, d.dump, d.body, list(d.idents),
                                  [list(r) for r in d.skip]] for d in found.values()]}
            except (SyntaxError, ValueError) as exc:
                data = {"error": f"{type(exc).__name__}: {exc}"}
            _save(entry, data)
        if "error" in data:
            self.errors[f"{source.label}:{path}"] = data["error"]
            return None
        return {row[0]: pydefs.Definition(row[0], row[1], row[2], row[3], row[4],
                                          tuple(row[5]), tuple(tuple(r) for r in row[6]))
                for row in data["defs"]}


# --- 1. the definitions each patch touches -------------------------------------------------


@dataclass(frozen=True)
class Target:
    file: str
    name: str
    new: bool  # the pinned upstream lacks it: the series adds it


@dataclass
class PatchTargets:
    targets: list[Target] = field(default_factory=list)
    ours: dict[str, dict] = field(default_factory=dict)  # "file::name" of new ones -> version
    not_python: list[str] = field(default_factory=list)
    skipped: str = ""  # why the patch has no targets (it does not apply on the pin)


def _code_lines(diff: str) -> dict[str, tuple[set[int], set[int]]]:
    """path -> (old line numbers removed, new line numbers added), code lines only."""
    out: dict[str, tuple[set[int], set[int]]] = {}
    path, header, old_no, new_no = None, False, 0, 0
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            path, header = None, True
        elif header and line.startswith(("--- a/", "+++ b/")):
            path = line[6:]  # the +++ line, unless the file is deleted
        elif m := _HUNK_RE.match(line):
            header, old_no, new_no = False, int(m[1]), int(m[3])
            removed_added = out.setdefault(path, (set(), set()))
        elif not header and line[:1] in "+-":
            text = line[1:].strip()
            code = bool(text) and not text.startswith("#")
            if line[0] == "-":
                if code:
                    removed_added[0].add(old_no)
                old_no += 1
            else:
                if code:
                    removed_added[1].add(new_no)
                new_no += 1
    return out


def _ours(defs: dict, name: str, lines: list[str]) -> dict:
    d = defs[name]
    return {"dump": d.dump, "body": d.body, "lines": d.source(lines)}


def find_targets(pinned: Source, patches: list[Patch], index: Index
                 ) -> dict[str, PatchTargets]:
    """patch name -> its targets (cached by the pin's commit and the patches' bytes)."""
    pin = Source(pinned.tree, "pin", pinned.commit)
    key = hashlib.sha256("\0".join([pin.commit] + [p.name + p.sha256() for p in patches])
                         .encode()).hexdigest()
    entry = _cache("targets", key + ".json")
    if (data := _load(entry)) is not None:
        return {name: PatchTargets([Target(**t) for t in v["targets"]], v["ours"],
                                   v["not_python"], v["skipped"]) for name, v in data.items()}
    out: dict[str, PatchTargets] = {}
    with releases.work_tree(pin.tree, pin.commit) as pin_tree:
        work = GitTree(pin_tree)
        for patch in patches:
            before = work.head()
            if not work.am(patch).applied:  # (the words git am's error used to start with)
                out[patch.name] = PatchTargets(skipped=f"does not apply on the pin: "
                                               f"{patch.name}: git am failed in {pin_tree}:")
                continue
            after = Source(pin_tree, patch.name, "HEAD")
            prior = Source(pin_tree, "before", before)
            out[patch.name] = _patch_targets(pin, prior, after, index)
    _save(entry, {name: {"targets": [t.__dict__ for t in v.targets], "ours": v.ours,
                         "not_python": v.not_python, "skipped": v.skipped}
                  for name, v in out.items()})
    return out


def _patch_targets(pin: Source, prior: Source, after: Source, index: Index) -> PatchTargets:
    diff = GitTree(after.tree).git("diff", "-U0", "--no-renames", "--no-color",
                                   "--no-ext-diff", prior.commit, after.commit).stdout
    result = PatchTargets()
    for path, (removed, added) in _code_lines(diff).items():
        if not path.endswith(".py"):
            result.not_python.append(path)
            continue
        old, new = index.defs(prior, path) or {}, index.defs(after, path) or {}
        names = {pydefs.innermost(old, n) for n in removed} | \
            {pydefs.innermost(new, n) for n in added}
        pristine = index.defs(pin, path) or {}
        for name in sorted(names):
            target = Target(path, name, name not in pristine)
            if target.new and name not in new:
                continue  # added and removed again by the same patch: nothing to compare
            result.targets.append(target)
            if target.new:
                lines = after.text(after.blob(path)).splitlines()
                result.ours[f"{path}::{name}"] = _ours(new, name, lines)
    return result


# --- 2. tracking a definition through the releases ----------------------------------------


@dataclass(frozen=True)
class Seen:
    """One version of a definition, where it was found."""
    file: str
    name: str
    dump: str
    body: str
    blob: str
    start: int = 0
    end: int = 0
    skip: tuple = ()
    idents: tuple = ()

    def lines(self, source: Source) -> list[str]:
        d = pydefs.Definition(self.name, self.start, self.end, "", "", (), self.skip)
        return d.source(source.text(self.blob).splitlines())


def _seen(path: str, d: pydefs.Definition, blob: str) -> Seen:
    return Seen(path, d.name, d.dump, d.body, blob, d.start, d.end, d.skip, d.idents)


# A line that starts a def or class, and the name it defines (in the lookahead, so that a
# line start inside the whitespace after the keyword is tried too).
_DEF_LINE = re.compile(r"^\s*(?:async\s+def|def|class)(?=\s+(\w+))", re.M)


def _defined_names(text: str, memo: dict[str, set[str]], blob: str) -> set[str]:
    """The names the text's def / class lines define, found in one pass (a name query is
    then a set lookup, not a scan of every changed file per name)."""
    if blob not in memo:
        memo[blob] = {m[1] for m in _DEF_LINE.finditer(text)}
    return memo[blob]


class Searcher:
    """Definitions in the files that changed between two releases, by name or by body;
    which files match a query is cached per pair of commits."""

    def __init__(self, index: Index):
        self.index = index
        self._results: dict[tuple[str, str], dict] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._changed: tuple = (None, {}, {}, {})

    def _query(self, source: Source, before: Source, query: list[str]) -> list[str]:
        pair = (source.commit, before.commit)
        if pair not in self._results:
            self._results[pair] = _load(_cache("search", f"{pair[0]}-{pair[1]}.json")) or {}
        results = self._results[pair]
        key = json.dumps(query)
        if key not in results:
            if self._changed[0] != pair:  # the texts of one pair at a time are held
                old = before.listing()
                changed = {p: b for p, b in source.listing().items() if old.get(p) != b}
                self._changed = (pair, changed, source.texts(changed.values(), keep=False), {})
            _, changed, texts, defined = self._changed
            if query[0] == "name":
                results[key] = sorted(p for p, b in changed.items()
                                      if query[1] in _defined_names(texts[b], defined, b))
            else:
                results[key] = sorted(p for p, b in changed.items()
                                      if all(word in texts[b] for word in query[1:]))
            self._dirty.add(pair)
        return results[key]

    def save(self) -> None:
        for pair in self._dirty:
            _save(_cache("search", f"{pair[0]}-{pair[1]}.json"), self._results[pair])
        self._dirty.clear()

    def find(self, source: Source, before: Source, file: str, name: str,
             last: Seen | None) -> Seen | None:
        """The definition `name` of `file` (or `last`, its version in an earlier release,
        if it was found) in `source`; see the module doc for the order of the searches."""
        where_file, where_name = (last.file, last.name) if last else (file, name)
        defs = self.index.defs(source, where_file)
        blob = source.blob(where_file)
        if defs and where_name in defs:
            return _seen(where_file, defs[where_name], blob)
        if where_name == pydefs.MODULE or (last is None and where_name.startswith("_")):
            return None  # a private name of ours elsewhere upstream is no evidence
        for path in self._query(source, before, ["name", where_name.split(".")[0]]):
            found = self.index.defs(source, path)
            if found and where_name in found:
                return _seen(path, found[where_name], source.blob(path))
        if last and last.idents:
            for path in self._query(source, before, ["ids", *last.idents]):
                for d in (self.index.defs(source, path) or {}).values():
                    if d.name != pydefs.MODULE and d.body == last.body:
                        return _seen(path, d, source.blob(path))
        return None


# --- 3. changes, the report ---------------------------------------------------------------


def _kind(prev: Seen | None, cur: Seen | None, seen_before: bool) -> str | None:
    if prev is None:
        return None if cur is None else ("reappeared" if seen_before else "appeared")
    if cur is None:
        return "deleted"
    moved, renamed = cur.file != prev.file, cur.name != prev.name
    if moved or renamed:
        kind = "moved and renamed" if moved and renamed else "moved" if moved else "renamed"
        return kind + (" and changed" if cur.body != prev.body else "")
    return "changed" if cur.dump != prev.dump else None


def _diff(a: list[str], b: list[str], a_label: str, b_label: str) -> tuple[str, int]:
    lines = list(difflib.unified_diff(a, b, a_label, b_label, lineterm=""))
    count = sum(1 for line in lines[2:] if line[:1] in "+-")
    return "\n".join(lines) + "\n" if lines else "", count


def _safe(part: str) -> str:
    return "_module_" if part == pydefs.MODULE else re.sub(r"[^\w.+-]", "_", part)


def for_matrix(pin, patches: list[Patch], matrix) -> Drift:
    """Drift over the releases of a status matrix (their commits are in the store)."""
    def source(version: str, sha256: str) -> Source:
        return Source(releases.store(), version, releases.sdist_ref(sha256))

    return compute(source(pin.upstream_version, pin.sdist.sha256), patches,
                   [(r.version, source(r.version, r.sha256)) for r in matrix.releases])


def compute(pin: Source, patches: list[Patch], sources: list[tuple[str, Source]]) -> Drift:
    """pin: labelled with its version; sources: (version, its files) in order, those not
    newer than the pin skipped."""
    index = Index()
    searcher = Searcher(index)
    targets = find_targets(pin, patches, index)
    pin_version = pin.label
    later = [(v, source) for v, source in sources
             if releases.version_key(v) > releases.version_key(pin_version)]
    chains: dict[tuple[str, str], list[Seen | None]] = {}
    for pt in targets.values():
        for t in pt.targets:
            chains.setdefault((t.file, t.name), [])
    starts = {}
    for file, name in chains:
        defs = index.defs(pin, file) or {}
        starts[(file, name)] = _seen(file, defs[name], pin.blob(file)) if name in defs else None
    before, started = pin, time.monotonic()
    for number, (version, source) in enumerate(later, 1):
        for key, chain in chains.items():
            last = next((s for s in reversed(chain) if s), starts[key])
            chain.append(searcher.find(source, before, key[0], key[1], last))
        before = source
        _log.info(f"[{number}/{len(later)}] {version}: {len(chains)} definition(s) looked up "
                  f"({time.monotonic() - started:.1f} s)")
    searcher.save()
    sources = {v: s for v, s in later}
    pin.texts({seen.blob for seen in starts.values() if seen})  # one read per tree
    for number, (_, source) in enumerate(later):
        source.texts({c[number].blob for c in chains.values() if c[number]})
    drift = Drift(pin_version, [v for v, _ in later],
                  notes=[f"{where}: {why}; its definitions count as missing there"
                         for where, why in sorted(index.errors.items())])
    short = [p.name[:4] for p in patches]
    for patch in patches:  # diffs under drift/<0002>/... (the full stem if not unique)
        stem = _safe(patch.name[:4]) if short.count(patch.name[:4]) == 1 else \
            _safe(patch.name.removesuffix(".patch"))
        drift.patches.append(_patch_report(patch, stem, targets[patch.name], chains,
                                                   starts, later, pin, sources, drift.diffs))
    return drift


def _patch_report(patch, stem, pt: PatchTargets, chains, starts, later, pin, sources, diffs
                  ) -> PatchDrift:
    header = (patch.trailers.get("Applied-Upstream") or [None])[0]
    try:
        landed = releases.version_key(header) if header else None
    except OverlayError:  # not a release number: every change is shown
        landed = None
    definitions = []
    for t in pt.targets:
        key = (t.file, t.name)
        if t.new:
            ours = pt.ours[f"{t.file}::{t.name}"]
            ref_lines, prev, seen_before = ours["lines"], None, False
        else:
            ref = starts[key]
            ref_lines, prev, seen_before = ref.lines(pin), ref, True
        ref_label = f"{pin.label}{' + ' + patch.name[:4] if t.new else ''}/{t.file}::{t.name}"
        changes, prev_version = [], None
        for (version, source), cur in zip(later, chains[key]):
            kind = _kind(prev, cur, seen_before)
            if kind:
                where = f"{cur.file}::{cur.name}" if cur else ""
                base = f"drift/{stem}/{t.file}/{_safe(t.name)}/{version}"
                cur_lines = cur.lines(source) if cur else []
                text, count = _diff(ref_lines, cur_lines, ref_label,
                                    f"{version}/{where or t.file + '::' + t.name}")
                change = Change(version, kind, where, landed is None
                                or releases.version_key(version) > landed, count,
                                f"{base}.diff")
                diffs[change.diff] = text
                if prev is not None and prev_version is not None and cur is not None:
                    step, step_count = _diff(prev.lines(sources[prev_version]), cur_lines,
                                             f"{prev_version}/{prev.file}::{prev.name}",
                                             f"{version}/{where}")
                    change.step_from, change.step_changed_lines = prev_version, step_count
                    change.step_diff = f"{base}.since-{prev_version}.diff"
                    diffs[change.step_diff] = step
                changes.append(change)
            if cur is not None:
                seen_before, prev, prev_version = True, cur, version
            elif prev is not None:
                prev, prev_version = None, None
        definitions.append(Definition(t.file, t.name, t.new, changes[::-1]))
    return PatchDrift(patch.name, patch.subject, header, pt.skipped, pt.not_python,
                      definitions)
