"""The upstream-subset file parser and the pristine-vs-overlay comparison (vllm_overlay.testing.subset),
on synthetic subset files, junit XML written by the tests, and a real parsed patch."""

import re
import textwrap
from pathlib import Path

import pytest

from vllm_overlay.testing import harness as runtests
from vllm_overlay.testing import report
from vllm_overlay.common import series
from vllm_overlay.testing import subset
from vllm_overlay.common.errors import OverlayError

REPO = Path(__file__).resolve().parents[3]


def test_checked_in_subset_parses_and_every_exclusion_has_a_reason():
    parsed = subset.read_subset(REPO / "tests" / "upstream" / "subset.txt")
    assert parsed.runs and parsed.excludes
    assert all(ex.reason for ex in parsed.excludes)
    assert any("tests/v1/cudagraph/test_encoder_cudagraph.py" in r.args for r in parsed.runs)


def test_exclusions_become_ignore_or_deselect_of_the_covering_run():
    parsed = subset.parse_subset(textwrap.dedent("""\
        # comment
        run tests/config
        run tests/multimodal -m cpu_test
        exclude tests/config/test_hub.py -- needs a hub model
        exclude tests/multimodal/test_a.py::test_b -- needs a GPU
        exclude tests/models/multimodal/generation -- needs a GPU  # CI step left out
        """))
    config, mm = parsed.runs
    assert config.pytest_args() == ["tests/config", "--ignore", "tests/config/test_hub.py"]
    assert mm.pytest_args() == ["tests/multimodal", "-m", "cpu_test",
                                "--deselect", "tests/multimodal/test_a.py::test_b"]
    assert mm.paths == ["tests/multimodal"]
    assert [e.reason for e in parsed.excludes][-1] == "needs a GPU"


@pytest.mark.parametrize("line", ["exclude tests/config/test_hub.py",
                                  "exclude tests/config/test_hub.py -- ",
                                  "exclude tests/config/test_hub.py -- # only a comment"])
def test_exclusion_without_reason_is_an_error_naming_the_line(line):
    with pytest.raises(OverlayError, match=r"subset.txt:2: exclusion of tests/config/test_hub.py "
                                           r"has no reason"):
        subset.parse_subset(f"run tests/config\n{line}\n")


@pytest.mark.parametrize("text,message", [("runs tests/x\n", "unknown entry 'runs'"),
                                          ("run\n", "`run` needs pytest arguments"),
                                          ("# nothing\n", "no `run` entry")])
def test_malformed_subset_is_an_error(text, message):
    with pytest.raises(OverlayError, match=re.escape(message)):
        subset.parse_subset(text)


def junit(path: Path, cases: list[tuple[str, str, str, str]]) -> Path:
    """cases: (classname, name, file, outcome) -> a pytest-like xunit1 junit XML file."""
    body = []
    for classname, name, file, outcome in cases:
        inner = {"passed": "", "failed": '<failure message="AssertionError: boom">tb</failure>',
                 "error": '<error message="collection failure">tb</error>',
                 "skipped": '<skipped type="pytest.skip" message="needs GPU">x</skipped>'}[outcome]
        file_attr = f' file="{file}"' if file else ""
        body.append(f'<testcase classname="{classname}" name="{name}"{file_attr} line="1" '
                    f'time="0.1">{inner}</testcase>')
    path.write_text('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">'
                    + "".join(body) + "</testsuite></testsuites>")
    return path


PATCH = """\
From 0123456789abcdef0123456789abcdef01234567 Mon Sep 17 00:00:00 2001
From: Dev <dev@example.invalid>
Date: Thu, 1 Jan 2026 00:00:00 +0000
Subject: [PATCH] Change the budget and its test

Origin: other

---
diff --git a/tests/v1/test_budget.py b/tests/v1/test_budget.py
--- a/tests/v1/test_budget.py
+++ b/tests/v1/test_budget.py
@@ -1,1 +1,2 @@
 a
+b
diff --git a/vllm/budget.py b/vllm/budget.py
--- a/vllm/budget.py
+++ b/vllm/budget.py
@@ -1,1 +1,2 @@
 a
+b
"""


@pytest.fixture
def patches(tmp_path):
    path = tmp_path / "0002-change-the-budget.patch"
    path.write_text(PATCH)
    return [series.parse_patch(path)]


def test_comparison_sorts_every_category(tmp_path, patches):
    mod = "tests.v1.test_budget"
    pristine = junit(tmp_path / "p.xml", [
        (mod, "test_same", "tests/v1/test_budget.py", "passed"),
        (f"{mod}.TestBudget", "test_was_broken", "tests/v1/test_budget.py", "failed"),
        (mod, "test_breaks", "tests/v1/test_budget.py", "passed"),
        (mod, "test_upstream_bug", "tests/v1/test_budget.py", "failed"),
        (mod, "test_gpu", "tests/v1/test_budget.py", "skipped"),
        (mod, "test_dropped", "tests/v1/test_budget.py", "passed"),
        ("", "tests.v1.test_encoder", "", "error"),  # a module that fails to collect
    ])
    overlay = junit(tmp_path / "o.xml", [
        (mod, "test_same", "tests/v1/test_budget.py", "passed"),
        (f"{mod}.TestBudget", "test_was_broken", "tests/v1/test_budget.py", "passed"),
        (mod, "test_breaks", "tests/v1/test_budget.py", "failed"),
        (mod, "test_upstream_bug", "tests/v1/test_budget.py", "failed"),
        (mod, "test_gpu", "tests/v1/test_budget.py", "skipped"),
        (mod, "test_added[video]", "tests/v1/test_budget.py", "passed"),
        ("tests.v1.test_encoder.TestCpu", "test_ok", "tests/v1/test_encoder.py", "passed"),
        ("tests.v1.test_encoder.TestCpu", "test_bad", "tests/v1/test_encoder.py", "failed"),
    ])
    cmp = subset.compare(subset.read_junit(pristine), subset.read_junit(overlay), patches)
    assert cmp.passed_both == ["tests/v1/test_budget.py::test_same"]
    assert cmp.fixed == ["tests/v1/test_budget.py::TestBudget::test_was_broken",
                         "tests/v1/test_encoder.py::TestCpu::test_ok"]
    assert [r.to_json() for r in cmp.regressions] == [{"test": "tests/v1/test_budget.py::test_breaks",
                                "overlay": "failed", "message": "AssertionError: boom",
                                "patches": "0002-change-the-budget.patch"}]
    assert sorted(cmp.failed_both) == ["tests/v1/test_budget.py::test_upstream_bug",
                                       "tests/v1/test_encoder.py::TestCpu::test_bad"]
    assert cmp.skipped_both == ["tests/v1/test_budget.py::test_gpu"]
    assert [n.to_json() for n in cmp.new] == [{"test": "tests/v1/test_budget.py::test_added[video]",
                        "overlay": "passed", "patches": "0002-change-the-budget.patch"}]
    assert cmp.removed == ["tests/v1/test_budget.py::test_dropped"]
    assert cmp.new_failing == []


def test_module_that_stops_collecting_is_a_regression_with_suspects(tmp_path, patches):
    pristine = junit(tmp_path / "p.xml", [
        ("tests.config.test_cfg", "test_a", "tests/config/test_cfg.py", "passed")])
    overlay = junit(tmp_path / "o.xml", [("", "tests.config.test_cfg", "", "error")])
    cmp = subset.compare(subset.read_junit(pristine), subset.read_junit(overlay), patches)
    tests = sorted(r.test for r in cmp.regressions)
    assert tests == ["tests/config/test_cfg.py", "tests/config/test_cfg.py::test_a"]
    # no patch touches the test file: the patches changing vllm/ are the suspects
    assert all("0002-change-the-budget.patch" in r.patches for r in cmp.regressions)
    assert cmp.passed_both == cmp.fixed == []


def test_identical_runs_have_nothing_but_matches(tmp_path):
    cases = [("tests.a", "test_x", "tests/a.py", "passed"), ("tests.a", "test_y", "tests/a.py",
                                                             "failed")]
    results = subset.read_junit(junit(tmp_path / "a.xml", cases))
    cmp = subset.compare(results, results, [])
    assert (cmp.passed_both, cmp.failed_both) == (["tests/a.py::test_x"], ["tests/a.py::test_y"])
    assert not (cmp.fixed or cmp.regressions or cmp.new or cmp.removed)


def test_junit_without_file_attribute_derives_the_file_from_the_tree(tmp_path):
    (tmp_path / "tests" / "v1").mkdir(parents=True)
    (tmp_path / "tests" / "v1" / "test_enc.py").write_text("")
    xml = junit(tmp_path / "x.xml", [("tests.v1.test_enc.TestBudget", "test_a", "", "passed"),
                                     ("", "tests.v1.test_enc", "", "error")])
    results = subset.read_junit(xml, tmp_path)
    assert set(results) == {"tests/v1/test_enc.py::TestBudget::test_a", "tests/v1/test_enc.py"}
    assert results["tests/v1/test_enc.py"].collection_error


def test_unreadable_junit_names_the_file(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<testsuites><testcase")
    with pytest.raises(OverlayError, match="bad.xml: unreadable junit XML"):
        subset.read_junit(bad)


def test_closing_line_looks_like_pytest():
    pytest_line = re.compile(r"^(\d+ failed, )?\d+ passed(, \d+ skipped)?(, \d+ xfailed)? "
                             r"in \d+\.\d\ds$")
    assert pytest_line.match(report.closing_line(10, 0, 2, 1, 3.5))
    assert report.closing_line(10, 2, 0, 0, 61) == "2 failed, 10 passed in 61.00s"
    assert report.closing_line(0, 0, 0, 0, 5, reused=1) == (
        "0 passed, 1 test stage reused (passed before on the same inputs) in 5.00s")


def test_test_files_the_series_adds_run_on_the_overlay_only(tmp_path):
    added = "tests/v1/cudagraph/test_encoder_cudagraph_imports.py"
    covered = "tests/config/test_new.py"
    patch = tmp_path / "0001-add-tests.patch"
    patch.write_text(PATCH.replace("tests/v1/test_budget.py", added).replace(
        "vllm/budget.py", covered))
    pristine, overlay = tmp_path / "pristine", tmp_path / "overlay"
    for root, files in ((pristine, []), (overlay, [added, covered])):
        (root / "tests").mkdir(parents=True)
        for file in files:
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            (root / file).write_text("def test_x(): pass\n")
    the_subset = subset.parse_subset("run tests/config\n")
    found = runtests.added_test_files([series.parse_patch(patch)], pristine, overlay, the_subset)
    assert found == [added]  # the one under tests/config already runs with its `run`
