"""The upstream test subset (tests/upstream/subset.txt) and the pristine-vs-overlay comparison.

subset.txt, one entry a line ('#' starts a comment):
    run <pytest args>                 one pytest invocation (paths relative to the tree root)
    exclude <path or node id> -- <reason>
An exclusion inside a `run` path is passed to that run (--ignore for a path, --deselect for a
node id); one outside every run only documents an upstream CI step left out. Every
exclusion must say why.

The comparison reads pytest's junit XML of both sides and sorts every test into: passed on
both, fixed by the overlay, regressions, failing on both (upstream's own failures here),
new tests from the series, tests the series removed, skipped on both.
"""

import re
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.series import Patch

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"
BAD = (FAILED, ERROR)
_EXCLUDE_RE = re.compile(r"^(\S+)(?:\s+--(?:\s+(.*))?)?$")


@dataclass
class Exclusion:
    target: str
    reason: str
    line: int


@dataclass
class Run:
    args: list[str]
    line: int
    excludes: list[Exclusion] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        """Positional args (test paths), skipping option values like `-m cpu_test`."""
        out, skip = [], False
        for arg in self.args:
            if skip:
                skip = False
            elif arg in ("-m", "-k"):
                skip = True
            elif not arg.startswith("-"):
                out.append(arg)
        return out

    def pytest_args(self) -> list[str]:
        extra = []
        for ex in self.excludes:
            extra += ["--deselect", ex.target] if "::" in ex.target else ["--ignore", ex.target]
        return [*self.args, *extra]


@dataclass
class Subset:
    runs: list[Run]
    excludes: list[Exclusion]


def covers(path: str, target: str) -> bool:
    path, target = path.rstrip("/"), target.split("::")[0].rstrip("/")
    return target == path or target.startswith(path + "/")


def parse_subset(text: str, source: str = "subset.txt") -> Subset:
    runs, excludes = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        rest = rest.strip()
        if kind == "run":
            if not rest:
                raise OverlayError(f"{source}:{number}: `run` needs pytest arguments")
            runs.append(Run(shlex.split(rest), number))
        elif kind == "exclude":
            match = _EXCLUDE_RE.match(rest)
            if not match or not match[2]:
                raise OverlayError(f"{source}:{number}: exclusion of {(rest.split() or ['?'])[0]}"
                                   f" has no reason (write `exclude <path> -- <why>`)")
            excludes.append(Exclusion(match[1], match[2].strip(), number))
        else:
            raise OverlayError(f"{source}:{number}: unknown entry {kind!r} "
                               f"(expected `run` or `exclude`)")
    if not runs:
        raise OverlayError(f"{source}: no `run` entry")
    for ex in excludes:
        for run in runs:
            if any(covers(p, ex.target) for p in run.paths):
                run.excludes.append(ex)
    return Subset(runs, excludes)


def read_subset(path: Path) -> Subset:
    try:
        return parse_subset(path.read_text(), str(path))
    except OSError as exc:
        raise OverlayError(f"{path}: cannot read the subset file: {exc}") from exc


# --- junit results ---------------------------------------------------------------------


@dataclass
class Result:
    test_id: str  # "tests/x/test_y.py::TestC::test_z[param]", or the module for a collection error
    file: str
    outcome: str
    message: str = ""

    @property
    def collection_error(self) -> bool:
        return "::" not in self.test_id


def _file_of(classname: str, name: str, file_attr: str | None, root: Path | None) -> str:
    """The test's file: junit's `file` attribute (xunit1), else derived from the dotted name."""
    if file_attr:
        return file_attr
    parts = (classname or name).split(".")  # a collection error has no classname
    if root is not None:
        for cut in range(len(parts), 0, -1):
            if (root / ("/".join(parts[:cut]) + ".py")).is_file():
                return "/".join(parts[:cut]) + ".py"
    while len(parts) > 1 and parts[-1][:1].isupper():
        parts.pop()  # class names (upstream's modules are lower case)
    return "/".join(parts) + ".py"


def read_junit(path: Path, root: Path | None = None) -> dict[str, Result]:
    """test id -> Result for one junit XML file (xunit1 or xunit2)."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise OverlayError(f"{path}: unreadable junit XML: {exc}") from exc
    results: dict[str, Result] = {}
    for case in tree.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        file = _file_of(classname, name, case.get("file"), root)
        if classname:
            module = file[:-3].replace("/", ".") if file.endswith(".py") else ""
            inner = classname[len(module):].lstrip(".") if classname.startswith(module) else ""
            test_id = "::".join([file, *([inner] if inner else []), name])
        else:
            test_id = file
        outcome, message = PASSED, ""
        for tag, kind in (("failure", FAILED), ("error", ERROR), ("skipped", SKIPPED)):
            node = case.find(tag)
            if node is not None:
                outcome, message = kind, (node.get("message") or "").strip()
                break
        prior = results.get(test_id)
        # a test can report a teardown error after passing: the worse outcome wins
        if prior is None or (prior.outcome not in BAD and outcome in BAD):
            results[test_id] = Result(test_id, file, outcome, message.splitlines()[0][:300]
                                      if message else "")
    return results


def read_junits(paths: list[Path], root: Path | None = None) -> dict[str, Result]:
    merged: dict[str, Result] = {}
    for path in paths:
        merged.update(read_junit(path, root))
    return merged


# --- comparison ------------------------------------------------------------------------


@dataclass
class Regression:
    """A test that passes on pristine and fails (or no longer collects) on the overlay."""

    test: str
    overlay: str          # its outcome there
    message: str
    patches: str          # the patches that touch its file (blame)

    def to_json(self) -> dict:
        return {"test": self.test, "overlay": self.overlay, "message": self.message,
                "patches": self.patches}


@dataclass
class NewTest:
    """A test only the overlay has (the series adds it)."""

    test: str
    overlay: str
    patches: str

    def to_json(self) -> dict:
        return {"test": self.test, "overlay": self.overlay, "patches": self.patches}


@dataclass
class Comparison:
    passed_both: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    regressions: list[Regression] = field(default_factory=list)
    failed_both: list[str] = field(default_factory=list)
    skipped_both: list[str] = field(default_factory=list)
    new: list[NewTest] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    other: list[dict] = field(default_factory=list)  # e.g. passed on pristine, skipped on overlay

    @property
    def new_failing(self) -> list[NewTest]:
        return [n for n in self.new if n.overlay in BAD]

    def as_dict(self) -> dict:
        """The JSON form (the test report's "comparison")."""
        out = {k: getattr(self, k) for k in ("passed_both", "fixed", "regressions",
                                             "failed_both", "skipped_both", "new", "removed",
                                             "other")}
        out["regressions"] = [r.to_json() for r in self.regressions]
        out["new"] = [n.to_json() for n in self.new]
        return out


def patches_touching(patches: list[Patch], file: str) -> list[str]:
    return [p.name for p in patches if file in p.files]


def blame(patches: list[Patch], file: str) -> str:
    names = patches_touching(patches, file)
    if names:
        return ", ".join(names)
    suspects = [p.name for p in patches if any(f.startswith("vllm/") for f in p.files)]
    return (f"no patch touches {file}; patches changing vllm/: {', '.join(suspects)}"
            if suspects else f"no patch touches {file}")


def compare(pristine: dict[str, Result], overlay: dict[str, Result],
            patches: list[Patch]) -> Comparison:
    cmp = Comparison()
    broken_on_pristine = {r.file for r in pristine.values()
                          if r.collection_error and r.outcome in BAD}
    broken_on_overlay = {r.file: r for r in overlay.values()
                         if r.collection_error and r.outcome in BAD}
    for test_id in sorted(set(pristine) | set(overlay)):
        old, new = pristine.get(test_id), overlay.get(test_id)
        if old and new:
            pair = (old.outcome, new.outcome)
            if pair == (PASSED, PASSED):
                cmp.passed_both.append(test_id)
            elif old.outcome in BAD and new.outcome == PASSED:
                cmp.fixed.append(test_id)
            elif old.outcome == PASSED and new.outcome in BAD:
                cmp.regressions.append(Regression(test_id, new.outcome, new.message,
                                                  blame(patches, new.file)))
            elif old.outcome in BAD and new.outcome in BAD:
                cmp.failed_both.append(test_id)
            elif pair == (SKIPPED, SKIPPED):
                cmp.skipped_both.append(test_id)
            else:
                cmp.other.append({"test": test_id, "pristine": old.outcome,
                                  "overlay": new.outcome})
        elif new:  # only on the overlay
            if new.file in broken_on_pristine and not new.collection_error:
                # the module did not even collect on pristine: it was failing there
                if new.outcome == PASSED:
                    cmp.fixed.append(test_id)
                elif new.outcome in BAD:
                    cmp.failed_both.append(test_id)
                else:
                    cmp.skipped_both.append(test_id)
            elif new.collection_error and new.outcome in BAD:
                cmp.regressions.append(Regression(test_id, new.outcome, new.message,
                                                  blame(patches, new.file)))
            else:
                cmp.new.append(NewTest(test_id, new.outcome,
                                       ", ".join(patches_touching(patches, new.file))))
        else:  # only on pristine
            if old.collection_error and old.file not in broken_on_overlay:
                continue  # the module collects on the overlay: its tests are counted above
            if old.file in broken_on_overlay and old.outcome == PASSED:
                cmp.regressions.append(Regression(
                    test_id, "error (module no longer collects)",
                    broken_on_overlay[old.file].message, blame(patches, old.file)))
            else:
                cmp.removed.append(test_id)
    return cmp


def counts(results: dict[str, Result]) -> dict[str, int]:
    out = {PASSED: 0, FAILED: 0, ERROR: 0, SKIPPED: 0}
    for r in results.values():
        out[r.outcome] += 1
    return out
