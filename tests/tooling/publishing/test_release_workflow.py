"""The release workflow: clean under actionlint, and it attests the wheel `make wheel` built."""

import yaml

from tests.tooling.helpers.actionlint import lint
from vllm_overlay.common.paths import REPO

WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


def test_release_workflow_passes_actionlint():
    proc = lint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_release_workflow(tmp_path):
    broken = tmp_path / ".github" / "workflows" / "release.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace("steps.files.outputs.wheel",
                                                   "steps.filez.outputs.wheel", 1))
    proc = lint(broken)
    assert proc.returncode != 0 and "filez" in proc.stdout


def test_release_job_builds_then_attests_the_wheel_and_its_sbom():
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["release"]
    assert job["permissions"] == {"contents": "read", "id-token": "write",
                                  "attestations": "write"}
    steps = job["steps"]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    build = next(i for i, s in enumerate(steps) if "make wheel" in s.get("run", ""))
    provenance = uses.index("actions/attest-build-provenance")
    sbom = uses.index("actions/attest-sbom")
    assert build < provenance and build < sbom
    assert steps[provenance]["with"]["subject-path"] == "${{ steps.files.outputs.wheel }}"
    assert steps[sbom]["with"]["sbom-path"] == "${{ steps.files.outputs.sbom }}"
    assert "VLLM_OVERLAY_BUILDER_ID" in steps[build]["env"]
