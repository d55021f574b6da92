"""`make status` on the real releases 0.19.1 (the pin) and 0.20.0 (downloads on a cold cache).

The patch, written here against 0.19.1, fixes one import that 0.19.1 gets wrong (upstream
#38982): its probe fails on the pin and holds on 0.20.0, where upstream fixed it.
"""

import json
import subprocess

import pytest

from vllm_overlay.wheelbuild import apply
from vllm_overlay.common.git import git
from vllm_overlay.wheelbuild import export
from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import pin
from vllm_overlay.common.paths import REPO

pytestmark = pytest.mark.network

TARGET = "vllm/v1/worker/encoder_cudagraph.py"


def test_make_status_on_0_19_1_and_0_20_0(tmp_path):
    the_pin = pin.load()
    tree = tmp_path / "dev"
    apply.unpack_sdist(fetch.fetch(the_pin.sdist, the_pin.project), tree)
    apply.init_base(tree, the_pin.released)
    source = (tree / TARGET).read_text()
    assert "vllm.v1.worker.gpu.mm.encoder_cudagraph_defs" in source
    (tree / TARGET).write_text(source.replace("vllm.v1.worker.gpu.mm.encoder_cudagraph_defs",
                                              "vllm.v1.worker.encoder_cudagraph_defs"))
    git(tree, "commit", "-q", "-am", "Import the defs from where they live\n\n"
              f"Origin: vendor\nRisk: none\nProbe: imports-resolve {TARGET}\n")
    export.export(tree, tmp_path / "patches")
    out = tmp_path / "out"
    proc = subprocess.run(["make", "--no-print-directory", "status", "RELEASES=0.19.1,0.20.0",
                           f"PATCHES={tmp_path / 'patches'}", f"STATUS_OUT={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "status.json").read_text())
    cells = {r["version"]: r["cells"] for r in data["releases"]}
    (name,) = cells["0.19.1"]
    assert cells["0.19.1"][name]["status"] == "clean"
    assert cells["0.20.0"][name]["status"] == "upstream"
    assert data["patches"][0]["suggested_applied_upstream"] == "0.20.0"
    assert data["bad_probes"] == []
    assert "| 0001 Import the defs from where they live | clean | upstream" in proc.stdout
