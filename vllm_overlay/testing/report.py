"""The `make test` report (testing/harness.py runs the stages): reports/test-report.json and
test-report.md, and the pytest-style closing line of the whole run."""

import json
from dataclasses import asdict
from pathlib import Path

from vllm_overlay.common import pin
from vllm_overlay.common.fs import atomic_write
from vllm_overlay.testing.results import SKIPPED, Record, StageResult, Tally


def closing_line(passed: int, failed: int, skipped: int, xfailed: int, seconds: float,
                 reused: int = 0) -> str:
    """pytest's closing line; `reused`: test stages not run, having passed before on the
    same inputs (their tests are in none of the counts)."""
    parts = [f"{failed} failed"] if failed else []
    parts += [f"{passed} passed"]
    parts += [f"{skipped} skipped"] if skipped else []
    parts += [f"{xfailed} xfailed"] if xfailed else []
    parts += [f"{reused} test stage{'s' * (reused > 1)} reused (passed before on the same "
              f"inputs)"] if reused else []
    return f"{', '.join(parts)} in {seconds:.2f}s"


def as_json(stages: list[StageResult], record: Record, tally: Tally, seconds: float,
            summary: str) -> dict:
    """The report: stage times (the stages that ran, and the total), what the stages found,
    the problems, the closing line, and each stage's result."""
    times = {s.name: s.seconds for s in stages if s.outcome != SKIPPED}
    times["total"] = round(seconds, 1)
    found = {k: v for k, v in asdict(record).items() if v is not None}
    return {"stages": times, **found, "problems": tally.problems, "summary": summary,
            "stage_results": [asdict(s) for s in stages]}


def write_report(report: dict, reports: Path) -> None:
    reports.mkdir(parents=True, exist_ok=True)
    atomic_write(reports / "test-report.json", json.dumps(report, indent=2) + "\n")
    atomic_write(reports / "test-report.md", "\n".join(markdown(report)) + "\n")


def _cell(text: str, width: int = 200) -> str:
    """One table cell: one line, no column bar, at most `width` characters."""
    flat = " ".join(text.split()).replace("|", "/")
    return flat if len(flat) <= width else flat[:width - 3] + "..."


def _counts_row(name: str, c: dict | None) -> str:
    if not c:
        return f"| {name} | - | - | - | - |"
    return f"| {name} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']} |"


def markdown(report: dict) -> list[str]:
    upstream = pin.load().upstream_version
    md = ["# make test report", "", f"**{report['summary']}**", "", "## Stage times", "",
          "| stage | outcome | seconds | what ran, or why not |", "| --- | --- | ---: | --- |"]
    md += [f"| {s['name']} | {s['outcome']} | {s['seconds']:.1f} | "
           f"{_cell(s['reason'] or s['ran'])} |" for s in report["stage_results"]]
    md += [f"| total | | {report['stages']['total']:.1f} | |"]
    md += ["", "## Test counts", "", "| run | passed | failed | error | skipped |",
           "| --- | ---: | ---: | ---: | ---: |",
           _counts_row("tooling tests", report.get("tooling")),
           _counts_row("behaviour tests (overlay wheel)", report.get("behaviour"))]
    if report.get("subset"):
        md += _subset_section(report["subset"], upstream)
    if report["problems"]:
        md += ["", "## Problems", ""] + [f"- {p}" for p in report["problems"]]
    return md


def _subset_section(sub: dict, upstream: str) -> list[str]:
    md = [_counts_row(f"upstream subset, pristine {upstream}", sub["pristine"]),
          _counts_row("upstream subset, overlay", sub["overlay"])]
    cmp = sub["comparison"]
    md += ["", "## Pristine vs overlay", "",
           f"- passed on both: {len(cmp['passed_both'])}",
           f"- fixed by the overlay: {len(cmp['fixed'])}",
           f"- regressions: {len(cmp['regressions'])}",
           f"- failing on both (upstream {upstream}'s own failures here): "
           f"{len(cmp['failed_both'])}",
           f"- skipped on both: {len(cmp['skipped_both'])}",
           f"- new tests from the series: {len(cmp['new'])}",
           f"- removed by the series: {len(cmp['removed'])}",
           f"- other changes (e.g. passed -> skipped): {len(cmp['other'])}", ""]
    if cmp["regressions"]:
        md += ["### Regressions", ""] + [
            f"- `{r['test']}`: {r['overlay']} ({r['message']}); patches: {r['patches']}"
            for r in cmp["regressions"]] + [""]
    for key, title in (("fixed", "Fixed by the overlay"), ("failed_both", "Failing on both")):
        if cmp[key]:
            md += [f"### {title}", ""] + [f"- `{t}`" for t in cmp[key]] + [""]
    if cmp["new"]:
        md += ["### New tests from the series", ""] + [
            f"- `{n['test']}`: {n['overlay']}" + (f" ({n['patches']})" if n["patches"] else "")
            for n in cmp["new"]] + [""]
    if cmp["other"]:
        md += ["### Other changes", ""] + [
            f"- `{o['test']}`: {o['pristine']} -> {o['overlay']}" for o in cmp["other"]]
    md += ["", "## Subset", ""] + [f"- `pytest {' '.join(r)}`" for r in sub["runs"]]
    md += ["", "Excluded:", ""] + [f"- `{e['target']}`: {e['reason']}" for e in sub["excluded"]]
    return md
