"""The GitHub Actions workflow for the user's CI: valid YAML, clean under actionlint, and
wired to `make status` over a release matrix and `make bisect` on the schedule."""

import yaml

from tests.tooling.helpers.actionlint import lint
from vllm_overlay.common.paths import REPO

WORKFLOW = REPO / ".github" / "workflows" / "upstream-status.yml"


def test_workflow_passes_actionlint():
    proc = lint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_copy(tmp_path):
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest",
                                                   "runs-onn: ubuntu-latest", 1))
    proc = lint(broken)
    assert proc.returncode != 0 and "runs-onn" in proc.stdout


def test_workflow_runs_status_per_release_and_bisect_on_schedule():
    flow = yaml.safe_load(WORKFLOW.read_text())
    triggers = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["schedule"][0]["cron"]
    jobs = flow["jobs"]
    assert "--list-releases" in jobs["releases"]["steps"][-1]["run"]
    matrix = jobs["status"]["strategy"]["matrix"]["release"]
    assert "fromJSON(needs.releases.outputs.list)" in matrix
    runs = " ".join(step.get("run", "") for step in jobs["status"]["steps"])
    assert 'make status RELEASES="$RELEASE"' in runs
    assert "schedule" in jobs["bisect"]["if"]
    assert "make bisect" in " ".join(step.get("run", "") for step in jobs["bisect"]["steps"])


def test_workflow_uploads_the_drift_report():
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    steps = jobs["drift"]["steps"]
    assert 'make status RELEASES="$RELEASES"' in " ".join(s.get("run", "") for s in steps)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["name"] == "drift-report"
    assert "reports/drift/" in upload["with"]["path"].split()
    status_upload = jobs["status"]["steps"][-1]["with"]["path"].split()
    assert "reports/drift/" in status_upload and "reports/status.*" in status_upload


def test_the_scheduled_status_fails_when_something_changed_since_the_last_report():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["drift"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    status = next(s for s in steps if "make status" in s.get("run", ""))
    assert 'make status RELEASES="$RELEASES" FAIL_ON_CHANGE=1' in status["run"]
    # the last report comes back before the run, the new one is kept even when it fails,
    # and the job fails after the report is uploaded and kept
    restore = steps[uses.index("actions/cache/restore@v4")]
    save = steps[uses.index("actions/cache/save@v4")]
    assert restore["with"]["path"] == save["with"]["path"] == "reports/status.json"
    assert uses.index("actions/cache/restore@v4") < steps.index(status) < \
        uses.index("actions/cache/save@v4")
    assert save["if"].startswith("always()")
    alert = steps[-1]
    assert alert["if"] == "steps.status.outputs.rc != '0'" and "exit 1" in alert["run"]
