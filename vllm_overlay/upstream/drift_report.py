"""The drift report (drift.py computes it): the Drift section of reports/status.md, the
terminal summary, and the diffs under reports/drift/."""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

SUMMARY_PER_PATCH = 8


@dataclass
class Change:
    """A release where a definition a patch touches changed (drift.py finds them)."""

    release: str
    kind: str            # changed, deleted, moved, renamed, appeared, ... (drift._kind)
    location: str        # "file::name" where it is now ("" when gone)
    follow_up: bool      # after the patch's Applied-Upstream release (or it has none)
    changed_lines: int
    diff: str            # "drift/..." against the pinned upstream (or ours)
    step_from: str | None = None           # the release before, when it had it too
    step_changed_lines: int | None = None
    step_diff: str | None = None

    def to_json(self) -> dict:
        data = {"release": self.release, "kind": self.kind, "location": self.location,
                "follow_up": self.follow_up, "changed_lines": self.changed_lines,
                "diff": self.diff}
        if self.step_from is not None:
            data.update(step_from=self.step_from, step_changed_lines=self.step_changed_lines,
                        step_diff=self.step_diff)
        return data


@dataclass
class Definition:
    file: str
    name: str
    new: bool                      # added by the series
    changes: list[Change]          # newest first

    def to_json(self) -> dict:
        return {"file": self.file, "name": self.name, "new": self.new,
                "changes": [c.to_json() for c in self.changes]}


@dataclass
class PatchDrift:
    name: str
    subject: str
    applied_upstream: str | None
    skipped: str
    not_python: list[str]
    definitions: list[Definition]

    def to_json(self) -> dict:
        return {"name": self.name, "subject": self.subject,
                "applied_upstream": self.applied_upstream, "skipped": self.skipped,
                "not_python": self.not_python,
                "definitions": [d.to_json() for d in self.definitions]}


@dataclass
class Drift:
    """The drift of the series' definitions over the releases after the pin."""

    pin: str
    releases: list[str]
    patches: list[PatchDrift] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    diffs: dict[str, str] = field(default_factory=dict)     # "drift/..." -> diff text

    def to_json(self) -> dict:
        """The JSON section (status.json's "drift")."""
        return {"pin": self.pin, "releases": self.releases,
                "patches": [p.to_json() for p in self.patches], "notes": self.notes}

    @property
    def data(self) -> dict:
        return self.to_json()

    def markdown(self) -> str:
        return to_markdown(self)

    def write(self, out_dir: Path) -> None:
        write_diffs(self.diffs, out_dir)


def reported(patch: PatchDrift) -> list[tuple[Definition, list[Change]]]:
    """(definition, its changes to show): for a patch already upstream only those after
    its Applied-Upstream release (the rest is the patch landing)."""
    out = []
    for d in patch.definitions:
        shown = [c for c in d.changes if c.follow_up]
        if shown:
            out.append((d, shown))
    return out


def _cell(change: Change) -> str:
    text = f"{change.release} {change.kind}"
    if "moved" in change.kind or "renamed" in change.kind:
        text += f": now `{change.location}`"
    text += f", {change.changed_lines} lines ([diff]({change.diff})"
    if change.step_diff is not None:
        text += f", [since {change.step_from}]({change.step_diff}): " \
                f"{change.step_changed_lines} lines"
    return text + ")"


def to_markdown(data: Drift) -> str:
    releases = data.releases
    lines = ["## Drift: upstream changes to the code each patch touches", ""]
    if not releases:
        return "\n".join(lines + ["No release after the pin in this range.", ""])
    lines += [f"Releases after the pin {data.pin}: {', '.join(releases)}. Per patch, the "
              "definitions its hunks change or add on the pin (functions, methods, a class's "
              "own code, `<module>` code), compared in each release with the release before "
              "(normalised AST: formatting, comments, docstrings do not count). Newest first; "
              "`diff`: the definition against the pinned upstream (ours, for a definition the "
              "series adds), with its count of changed lines; `since`: against the release "
              "before. For a patch with `Applied-Upstream: A` only changes after A are shown: "
              "candidate follow-up fixes (the JSON has all).", ""]
    lines += [f"- note: {n}" for n in data.notes] + ([""] if data.notes else [])
    for patch in data.patches:
        title = f"### {patch.name[:4]} {patch.subject}"
        if patch.applied_upstream:
            title += f" (Applied-Upstream {patch.applied_upstream}: changes after it)"
        lines += [title, ""]
        if patch.skipped:
            lines += [f"Not tracked: {patch.skipped}", ""]
            continue
        shown = reported(patch)
        if shown:
            lines += ["| file | definition | changes, newest first |", "| --- | --- | --- |"]
            for d, changes in shown:
                new = " (added by the series)" if d.new else ""
                lines.append(f"| `{d.file}` | `{d.name}`{new} | "
                             + "<br>".join(_cell(c) for c in changes) + " |")
            lines.append("")
        quiet = [d for d in patch.definitions if d not in [s[0] for s in shown]]
        if quiet:
            lines += [f"No {'later ' if patch.applied_upstream else ''}change: "
                      + ", ".join(f"`{d.file}::{d.name}`" for d in quiet), ""]
        if patch.not_python:
            lines += ["Not Python, not tracked: "
                      + ", ".join(f"`{p}`" for p in patch.not_python), ""]
    return "\n".join(lines)


def summary(data: Drift, report: Path) -> str:
    """A few lines for the terminal: changed definitions by patch, the report's path."""
    out, total = [], 0
    for patch in data.patches:
        shown = reported(patch)
        total += len(shown)
        since = f" after {patch.applied_upstream}" if patch.applied_upstream else ""
        out.append(f"  {patch.name[:4]}: {len(shown)} changed{since}"
                   + (f" ({patch.skipped})" if patch.skipped else ""))
        for d, changes in shown[:SUMMARY_PER_PATCH]:
            out.append(f"    {d.file}::{d.name}: "
                       + ", ".join(f"{c.release}" + ("" if c.kind == "changed" else
                                                     f" {c.kind}") for c in changes))
        if len(shown) > SUMMARY_PER_PATCH:
            out.append(f"    ... and {len(shown) - SUMMARY_PER_PATCH} more")
    head = (f"drift: {total} definition(s) the series touches changed upstream "
            f"({data.releases[0]} .. {data.releases[-1]})" if data.releases
            else "drift: no release after the pin")
    return "\n".join([head, *out, f"drift: report in {report} (Drift section), "
                                  f"diffs in {report.parent / 'drift'}"])


def write_diffs(diffs: dict[str, str], out_dir: Path) -> None:
    """out_dir/drift/... ("drift/..." -> diff text), replaced as a whole (written beside,
    then renamed)."""
    final = out_dir / "drift"
    staging = out_dir / f".drift.tmp{os.getpid()}"
    for rel, text in diffs.items():
        path = staging / Path(rel).relative_to("drift")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    staging.mkdir(parents=True, exist_ok=True)
    old = out_dir / f".drift.old{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)
