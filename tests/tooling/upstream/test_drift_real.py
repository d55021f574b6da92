"""`make status` with drift on the real releases 0.19.1 .. 0.22.0 and the real series.

Upstream fixed video pruning (EVS) with image graphs in 0.22.0 (#38040) inside
`Qwen3VLForConditionalGeneration.get_encoder_cudagraph_config`, code 0002 rewrites: the
drift report must show it as a follow-up of 0002 (Applied-Upstream 0.20.0). Nano-Nemotron-VL's
token code (0003) did not change after 0.20.0.
"""

import json
import subprocess

import pytest

from vllm_overlay.common.paths import REPO

pytestmark = pytest.mark.network

QWEN = "vllm/model_executor/models/qwen3_vl.py"
CONFIG = "Qwen3VLForConditionalGeneration.get_encoder_cudagraph_config"


@pytest.mark.once_per_inputs
def test_drift_of_the_series_0_19_1_to_0_22_0(tmp_path):
    out = tmp_path / "reports"
    proc = subprocess.run(["make", "--no-print-directory", "status", "RELEASES=0.19.1..0.22.0",
                           f"STATUS_OUT={out}"], cwd=REPO, capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "status.json").read_text())["drift"]
    assert data["releases"] == ["0.20.0", "0.20.1", "0.20.2", "0.21.0", "0.22.0"]
    patches = {p["name"][:4]: p for p in data["patches"]}
    config = next(d for d in patches["0002"]["definitions"]
                  if (d["file"], d["name"]) == (QWEN, CONFIG))
    by_release = {c["release"]: c for c in config["changes"]}
    fix = by_release["0.22.0"]
    assert fix["kind"] == "changed" and fix["follow_up"] and fix["step_from"] == "0.21.0"
    step = (out / fix["step_diff"]).read_text()
    assert "is_multimodal_pruning_enabled" in step and fix["step_changed_lines"] > 0
    assert by_release["0.20.0"]["follow_up"] is False  # 0002 landing upstream
    assert [c["release"] for c in config["changes"]] == sorted(
        by_release, key=lambda v: tuple(map(int, v.split("."))), reverse=True)
    nemotron = [d for d in patches["0003"]["definitions"] if d["file"].startswith("vllm/")]
    assert nemotron and not [c for d in nemotron for c in d["changes"] if c["follow_up"]]
    assert f"{QWEN}::{CONFIG}: 0.22.0" in proc.stdout
    assert f"report in {out / 'status.md'}" in proc.stdout
    assert "## Drift" in (out / "status.md").read_text()
