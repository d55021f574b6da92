"""`make help` prints the Makefile's own `##` texts: every documented target, once."""

import re
import shutil
import subprocess

import pytest

from vllm_overlay.common.paths import REPO


@pytest.mark.skipif(not shutil.which("make"), reason="no make")
def test_make_help_lists_every_documented_target():
    makefile = (REPO / "Makefile").read_text()
    documented = re.findall(r"^([a-z][a-z-]*):[^=#\n]*## (.+)$", makefile, re.M)
    assert len(documented) >= 15
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    rows = [line.split(None, 1) for line in out.splitlines()]
    assert [(target, text.strip()) for target, text in documented] == \
        [(t, text.strip()) for t, text in rows]
    assert "usage: vllm_overlay" not in out  # not ./build.sh --help
