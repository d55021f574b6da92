"""What `make test` (testing/harness.py) finds, typed: the options of a run, each stage's
result, the test counts and problems summed over the stages, and the record that
testing/report.py writes to reports/test-report.{json,md}."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm_overlay.testing import subset

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"


@dataclass(frozen=True)
class Options:
    """What `vllm_overlay test` was asked for (commands/test.py parses the command line),
    and the wheel build it runs (the top-level build is the commands' to call)."""
    build_wheel: Callable[[str], Path]  # arch -> the built, verified overlay wheel
    arch: str = "x86_64"


@dataclass
class StageResult:
    """One stage of the run as it ended: `failed` when its tests failed, `error` when the
    stage itself broke (reason: the error), `skipped` when an earlier stage broke (reason)."""
    name: str
    ran: str  # what the stage runs
    outcome: str
    seconds: float = 0.0
    reason: str = ""


@dataclass
class PytestRun:
    """The junit results of one pytest run of a test stage (tooling, behaviour)."""
    results: dict[str, subset.Result]

    @property
    def failed(self) -> bool:
        return any(r.outcome in subset.BAD for r in self.results.values())


@dataclass
class Environment:
    """The environment stage: the base venv, one thin venv per vLLM wheel, and what they hold."""
    base: Path
    overlay: Path
    pristine: Path
    lock_metadata_checked: int
    vllm: dict[str, str]  # side -> the vllm/__init__.py that `import vllm` gave

    def venvs(self) -> dict[str, str]:
        return {"base": str(self.base), "overlay": str(self.overlay),
                "pristine": str(self.pristine)}


@dataclass
class Trees:
    """The two copies of upstream's tests/: as published, and after the series."""
    pristine: Path
    overlay: Path


@dataclass
class SubsetRun:
    """The upstream subset on both sides, compared test by test."""
    pristine: dict[str, subset.Result]
    overlay: dict[str, subset.Result]
    comparison: subset.Comparison

    @property
    def failed(self) -> bool:
        return bool(self.comparison.regressions or self.comparison.new_failing)


@dataclass
class Tally:
    """The whole run's test counts (the closing line) and its problems (FAILED lines)."""
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    xfailed: int = 0
    problems: list[str] = field(default_factory=list)

    def add_tests(self, run: PytestRun, what: str) -> dict[str, int]:
        """A tooling or behaviour run: every failure and error counts as failed."""
        c = subset.counts(run.results)
        self.passed += c["passed"]
        self.skipped += c["skipped"]
        self.failed += c["failed"] + c["error"]
        self.problems += [f"{what}: {r.test_id} {r.outcome}: {r.message}"
                          for r in run.results.values() if r.outcome in subset.BAD]
        return c

    def add_subset(self, run: SubsetRun) -> None:
        """The subset: only regressions and failing new tests count as failed; tests failing
        on both sides are upstream's own failures (xfailed)."""
        cmp = run.comparison
        c = subset.counts(run.overlay)
        self.passed += c["passed"]
        self.skipped += c["skipped"]
        self.failed += len(cmp.regressions) + len(cmp.new_failing)
        self.xfailed = len(cmp.failed_both)
        self.problems += [f"regression: {r.test} ({r.overlay}; {r.message}) -- "
                          f"patches: {r.patches}" for r in cmp.regressions]
        self.problems += [f"new test failing: {n.test} ({n.overlay})"
                          for n in cmp.new_failing]

    def add_error(self, exc: Exception) -> None:
        self.problems.append(f"error: {exc}")
        self.failed += 1
        self.xfailed = 0


@dataclass
class Record:
    """What the run found, in the order test-report.json lists it; None: not reached."""
    tooling: dict[str, int] | None = None
    patches: list[str] | None = None
    lock_metadata_checked: int | None = None
    vllm: dict[str, str] | None = None
    venvs: dict[str, str] | None = None
    behaviour: dict[str, int] | None = None
    added_test_files: list[str] | None = None
    subset: dict[str, Any] | None = None
