"""The `once_per_inputs` marker (tests/tooling/helpers/once_per_inputs.py): a minutes-long
real check is skipped only when it passed before for exactly the same inputs, and says so."""

import os
import subprocess
import sys

from vllm_overlay.common.paths import REPO

CONFTEST = ("from tests.tooling.helpers.once_per_inputs import pytest_runtest_setup, "
            "pytest_runtest_makereport\n")


def run(folder, cache, **env) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-o",
         "markers=once_per_inputs: x", str(folder)], cwd=folder, capture_output=True, text=True,
        env={**{k: v for k, v in os.environ.items() if k != "VLLM_OVERLAY_RERUN"},  # the
             # caller's own `VLLM_OVERLAY_RERUN=1 make test` must not reach this run
             "PYTHONPATH": str(REPO), "VLLM_OVERLAY_CACHE": str(cache), **env})
    return proc.stdout


def test_skipped_only_after_a_pass_with_the_same_inputs(tmp_path):
    folder, cache = tmp_path / "t", tmp_path / "cache"
    folder.mkdir()
    (folder / "conftest.py").write_text(CONFTEST)
    test = folder / "test_real.py"
    test.write_text("import pytest\n\n@pytest.mark.once_per_inputs\ndef test_ok():\n    pass\n\n"
                    "@pytest.mark.once_per_inputs\ndef test_bad():\n    assert False\n")
    first = run(folder, cache)
    assert "1 failed, 1 passed" in first, first
    second = run(folder, cache)
    assert "1 failed, 1 skipped" in second and "for the same inputs" in second, second
    assert "1 failed, 1 passed" in run(folder, cache, VLLM_OVERLAY_RERUN="1")
    test.write_text(test.read_text() + "# an edit of the test module is a new input\n")
    assert "1 failed, 1 passed" in run(folder, cache)
