"""The drift report (drift.py computes it): the Drift section of reports/status.md, the
terminal summary, and the diffs under reports/drift/."""

import os
import shutil
from pathlib import Path

SUMMARY_PER_PATCH = 8


def reported(patch: dict) -> list[tuple[dict, list[dict]]]:
    """(definition, its changes to show): for a patch already upstream only those after
    its Applied-Upstream release (the rest is the patch landing)."""
    out = []
    for d in patch["definitions"]:
        shown = [c for c in d["changes"] if c["follow_up"]]
        if shown:
            out.append((d, shown))
    return out


def _cell(change: dict) -> str:
    text = f"{change['release']} {change['kind']}"
    if "moved" in change["kind"] or "renamed" in change["kind"]:
        text += f": now `{change['location']}`"
    text += f", {change['changed_lines']} lines ([diff]({change['diff']})"
    if "step_diff" in change:
        text += f", [since {change['step_from']}]({change['step_diff']}): " \
                f"{change['step_changed_lines']} lines"
    return text + ")"


def to_markdown(data: dict) -> str:
    releases = data["releases"]
    lines = ["## Drift: upstream changes to the code each patch touches", ""]
    if not releases:
        return "\n".join(lines + ["No release after the pin in this range.", ""])
    lines += [f"Releases after the pin {data['pin']}: {', '.join(releases)}. Per patch, the "
              "definitions its hunks change or add on the pin (functions, methods, a class's "
              "own code, `<module>` code), compared in each release with the release before "
              "(normalised AST: formatting, comments, docstrings do not count). Newest first; "
              "`diff`: the definition against the pinned upstream (ours, for a definition the "
              "series adds), with its count of changed lines; `since`: against the release "
              "before. For a patch with `Applied-Upstream: A` only changes after A are shown: "
              "candidate follow-up fixes (the JSON has all).", ""]
    lines += [f"- note: {n}" for n in data["notes"]] + ([""] if data["notes"] else [])
    for patch in data["patches"]:
        title = f"### {patch['name'][:4]} {patch['subject']}"
        if patch["applied_upstream"]:
            title += f" (Applied-Upstream {patch['applied_upstream']}: changes after it)"
        lines += [title, ""]
        if patch["skipped"]:
            lines += [f"Not tracked: {patch['skipped']}", ""]
            continue
        shown = reported(patch)
        if shown:
            lines += ["| file | definition | changes, newest first |", "| --- | --- | --- |"]
            for d, changes in shown:
                new = " (added by the series)" if d["new"] else ""
                lines.append(f"| `{d['file']}` | `{d['name']}`{new} | "
                             + "<br>".join(_cell(c) for c in changes) + " |")
            lines.append("")
        quiet = [d for d in patch["definitions"] if d not in [s[0] for s in shown]]
        if quiet:
            lines += [f"No {'later ' if patch['applied_upstream'] else ''}change: "
                      + ", ".join(f"`{d['file']}::{d['name']}`" for d in quiet), ""]
        if patch["not_python"]:
            lines += ["Not Python, not tracked: "
                      + ", ".join(f"`{p}`" for p in patch["not_python"]), ""]
    return "\n".join(lines)


def summary(data: dict, report: Path) -> str:
    """A few lines for the terminal: changed definitions by patch, the report's path."""
    out, total = [], 0
    for patch in data["patches"]:
        shown = reported(patch)
        total += len(shown)
        since = f" after {patch['applied_upstream']}" if patch["applied_upstream"] else ""
        out.append(f"  {patch['name'][:4]}: {len(shown)} changed{since}"
                   + (f" ({patch['skipped']})" if patch["skipped"] else ""))
        for d, changes in shown[:SUMMARY_PER_PATCH]:
            out.append(f"    {d['file']}::{d['name']}: "
                       + ", ".join(f"{c['release']}" + ("" if c["kind"] == "changed" else
                                                         f" {c['kind']}") for c in changes))
        if len(shown) > SUMMARY_PER_PATCH:
            out.append(f"    ... and {len(shown) - SUMMARY_PER_PATCH} more")
    head = (f"drift: {total} definition(s) the series touches changed upstream "
            f"({data['releases'][0]} .. {data['releases'][-1]})" if data["releases"]
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
