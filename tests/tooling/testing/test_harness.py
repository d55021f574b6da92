"""The `make test` harness (vllm_overlay.testing.harness) with every stage's heavy work
stubbed: the stage results, the tally, the closing line and reports/test-report.{md,json}."""

import json
import subprocess
import threading
import types
from pathlib import Path

import pytest

from vllm_overlay.common import venvs
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.testing import harness, testenv
from vllm_overlay.testing.results import Options
from vllm_overlay.wheelbuild import apply, fetch

INNER = {"passed": "", "failed": '<failure message="AssertionError: boom">tb</failure>',
         "error": '<error message="collection failure">tb</error>',
         "skipped": '<skipped type="pytest.skip" message="skip">x</skipped>'}


def write_junit(path, cases: dict[str, str]) -> None:
    """cases: test id ("file.py::name") -> outcome."""
    body = "".join(f'<testcase classname="{tid.split("::")[0][:-3].replace("/", ".")}" '
                   f'name="{tid.split("::")[1]}" file="{tid.split("::")[0]}" line="1" '
                   f'time="0.1">{INNER[outcome]}</testcase>' for tid, outcome in cases.items())
    Path(path).write_text('<?xml version="1.0" encoding="utf-8"?><testsuites>'
                          f'<testsuite name="pytest">{body}</testsuite></testsuites>')


def junit_arg(cmd) -> str:
    return next(c for c in cmd if c.startswith("--junitxml=")).split("=", 1)[1]


SUBSET = {"tests/x/test_a.py::test_both": ("passed", "passed"),
          "tests/x/test_a.py::test_reg": ("passed", "failed"),
          "tests/x/test_a.py::test_fix": ("failed", "passed"),
          "tests/x/test_a.py::test_fb": ("failed", "failed")}


@pytest.fixture
def stubbed(tmp_path, monkeypatch):
    """harness with its stages' work stubbed; fail(step) makes that step raise."""
    failing, hooks = set(), {}
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path / "cache"))  # passes recorded here
    monkeypatch.delenv("VLLM_OVERLAY_RERUN", raising=False)

    def maybe(step):
        if step in hooks:
            hooks[step]()
        if step in failing:
            raise OverlayError(f"boom in {step}")

    def tooling_run(cmd, **_):
        maybe("tooling")
        print("tooling output", file=_["stdout"], flush=True)
        write_junit(junit_arg(cmd), {"tests/tooling/test_t.py::test_ok": "passed",
                                     "tests/tooling/test_t.py::test_skip": "skipped"})
        return types.SimpleNamespace(returncode=0)

    def behaviour_run(cmd, cwd, env, log):
        maybe("behaviour")
        write_junit(junit_arg(cmd), {"test_b.py::test_ok": "passed"})
        return 0

    def run_subset(side, python, root, the_subset, out, log_file):
        junit = out / f"{side}-1.xml"
        write_junit(junit, {t: o[side == "overlay"] for t, o in SUBSET.items()})
        return [junit]

    def ensure_vllm_env(base, wheel, *_):
        maybe("environment")
        return Path(f"/env{wheel}")

    monkeypatch.setattr(harness, "REPORTS", tmp_path / "reports")
    monkeypatch.setattr(harness, "WORK", tmp_path / "work")
    monkeypatch.setattr(testenv, "ensure_base", lambda *a, **k: Path("/base"))
    monkeypatch.setattr(venvs, "ensure_venv", lambda *a, **k: Path("/tools"))
    monkeypatch.setattr(harness, "subprocess", types.SimpleNamespace(
        run=tooling_run, STDOUT=subprocess.STDOUT))
    monkeypatch.setattr(fetch, "fetch", lambda art, project: Path("/" + art.filename))
    monkeypatch.setattr(testenv, "check_metadata", lambda base, arch: 42)
    monkeypatch.setattr(testenv, "ensure_vllm_env", ensure_vllm_env)
    monkeypatch.setattr(harness, "check_vllm_import", lambda venv, version: f"{venv}/vllm")
    monkeypatch.setattr(apply, "unpack_sdist", lambda sdist, dest: dest)
    monkeypatch.setattr(apply, "apply_series", lambda sdist, patches, dest, released: dest)
    monkeypatch.setattr(harness, "copy_tests", lambda tree, dest: dest)
    monkeypatch.setattr(harness, "run_to_log", behaviour_run)
    monkeypatch.setattr(harness, "run_subset", run_subset)
    monkeypatch.setattr(harness, "added_test_files", lambda *a: [])
    return types.SimpleNamespace(fail=failing.add, reports=tmp_path / "reports",
                                 hooks=hooks)


def test_a_run_reports_every_stage_and_counts_subset_failures_on_both_as_xfailed(
        stubbed, capsys):
    assert harness.main(Options(lambda arch: Path("/overlay.whl"))) == 1  # the regression
    report = json.loads((stubbed.reports / "test-report.json").read_text())
    assert [(s["name"], s["outcome"]) for s in report["stage_results"]] == [
        ("wheel", "passed"), ("tooling tests", "passed"), ("environment", "passed"),
        ("test trees", "passed"), ("behaviour tests", "passed"), ("upstream subset", "failed")]
    assert list(report["stages"]) == [*harness.STAGES, "total"]
    assert report["lock_metadata_checked"] == 42
    assert report["tooling"] == {"passed": 1, "failed": 0, "error": 0, "skipped": 1}
    assert report["subset"]["comparison"]["regressions"][0]["test"] == "tests/x/test_a.py::test_reg"
    assert report["summary"].startswith("1 failed, 4 passed, 1 skipped, 1 xfailed in ")
    md = (stubbed.reports / "test-report.md").read_text()
    for section in ("## Stage times", "## Test counts", "## Pristine vs overlay",
                    "### Regressions", "### Fixed by the overlay", "### Failing on both",
                    "## Subset", "## Problems"):
        assert f"\n{section}\n" in md
    assert "| upstream subset, overlay | 2 | 2 | 0 | 0 |" in md
    out = capsys.readouterr()
    assert out.out.strip().endswith(f"{report['summary']} {'=' * 20}")
    assert "FAILED regression: tests/x/test_a.py::test_reg" in out.err


@pytest.mark.parametrize("step,ran", [("environment", ["wheel", "tooling tests", "environment"]),
                                      ("behaviour", [*list(harness.STAGES)[:5]])])
def test_a_stage_error_ends_the_run_and_skips_the_rest(stubbed, step, ran):
    stubbed.fail(step)
    assert harness.main(Options(lambda arch: Path("/overlay.whl"))) == 1
    report = json.loads((stubbed.reports / "test-report.json").read_text())
    assert list(report["stages"]) == [*ran, "total"]
    results = {s["name"]: s for s in report["stage_results"]}
    assert results[ran[-1]]["outcome"] == "error"
    assert results[ran[-1]]["reason"] == f"boom in {step}"
    skipped = [results[name] for name in harness.STAGES if name not in ran]
    assert all(s["outcome"] == "skipped" and f"boom in {step}" in s["reason"] for s in skipped)
    assert report["problems"][-1] == f"error: boom in {step}"
    assert report["lock_metadata_checked"] == 42  # recorded before the thin venvs failed
    assert "subset" not in report and "\n## Problems\n" in (
        stubbed.reports / "test-report.md").read_text()


def outcomes(reports) -> dict[str, tuple[str, str]]:
    report = json.loads((reports / "test-report.json").read_text())
    return {s["name"]: (s["outcome"], s["reason"]) for s in report["stage_results"]}


def test_a_stage_that_passed_is_skipped_while_its_inputs_stay_the_same(stubbed, monkeypatch):
    run = lambda: harness.main(Options(lambda arch: Path("/overlay.whl")))  # noqa: E731
    run()
    assert outcomes(stubbed.reports)["tooling tests"][0] == "passed"
    run()  # nothing changed: the stages that passed are skipped, saying when and why
    second = outcomes(stubbed.reports)
    for name in ("tooling tests", "behaviour tests"):
        assert second[name][0] == "skipped" and "for the same inputs" in second[name][1]
    summary = json.loads((stubbed.reports / "test-report.json").read_text())["summary"]
    assert ", 2 test stages reused (passed before on the same inputs) in " in summary
    assert second["upstream subset"][0] == "failed"  # it failed: never recorded, rerun
    monkeypatch.setattr(harness, "BEHAVIOUR_INI", harness.BEHAVIOUR_INI + "# changed\n")
    run()  # an input of the behaviour tests changed: they run again
    third = outcomes(stubbed.reports)
    assert third["behaviour tests"][0] == "passed" and third["tooling tests"][0] == "skipped"
    monkeypatch.setenv("VLLM_OVERLAY_RERUN", "1")
    run()
    assert all(outcome != "skipped" for outcome, _ in outcomes(stubbed.reports).values())


def test_the_tooling_tests_run_beside_the_stages_that_install_vllm(stubbed, capsys):
    both = threading.Barrier(2, timeout=10)  # broken unless both stages run at one time
    stubbed.hooks.update(tooling=both.wait, behaviour=both.wait)
    assert harness.main(Options(lambda arch: Path("/overlay.whl"))) == 1  # the regression
    report = json.loads((stubbed.reports / "test-report.json").read_text())
    assert report["tooling"] == {"passed": 1, "failed": 0, "error": 0, "skipped": 1}
    err = capsys.readouterr().err
    assert err.index("tooling tests: started beside") < err.index("=== behaviour tests ===")
    assert err.index("=== behaviour tests ===") < err.index("tooling output")  # its log, shown


def test_a_wheel_that_fails_still_gets_the_tooling_tests_run_and_counted(stubbed):
    def no_wheel(arch):
        raise OverlayError("boom in wheel")
    assert harness.main(Options(no_wheel)) == 1
    report = json.loads((stubbed.reports / "test-report.json").read_text())
    results = {s["name"]: s["outcome"] for s in report["stage_results"]}
    assert results["wheel"] == "error" and results["tooling tests"] == "passed"
    assert results["behaviour tests"] == "skipped"
    assert report["tooling"] == {"passed": 1, "failed": 0, "error": 0, "skipped": 1}
    assert report["problems"] == ["error: boom in wheel"]


def test_a_tooling_stage_that_breaks_loses_nothing_the_other_stages_found(stubbed):
    stubbed.fail("tooling")
    assert harness.main(Options(lambda arch: Path("/overlay.whl"))) == 1
    report = json.loads((stubbed.reports / "test-report.json").read_text())
    results = {s["name"]: (s["outcome"], s["reason"]) for s in report["stage_results"]}
    assert results["tooling tests"] == ("error", "boom in tooling")
    assert results["behaviour tests"][0] == "passed" and "behaviour" in report
    assert "error: boom in tooling" in report["problems"]
