"""The `once_per_inputs` marker's hooks (imported by tests/tooling/conftest.py).

A test marked `once_per_inputs` runs when what it checks changed since it last passed on
this machine, and is skipped (with the reason in the report) otherwise. Its inputs: the
pipeline's code, the series, the pin, the locks, the tests' helpers and the test's own module
and conftests. VLLM_OVERLAY_RERUN=1 runs them all anyway.
"""

import hashlib
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
INPUT_PATHS = ("vllm_overlay", "patches", "locks", "VERSION", "upstream.lock.json",
               "tests/tooling/helpers")


def inputs_key(test_file: Path) -> str:
    from vllm_overlay.testing.memo import files_digest

    own = [test_file, *(folder / "conftest.py" for folder in test_file.parents
                        if REPO in folder.parents and (folder / "conftest.py").is_file())]
    return files_digest(REPO, [*INPUT_PATHS, *(os.path.relpath(f, REPO) for f in own)])


def _passed_marker(item) -> Path:
    from vllm_overlay.common.paths import cache_dir

    key = inputs_key(Path(str(item.fspath)))
    name = hashlib.sha256(f"{item.nodeid}\n{key}".encode()).hexdigest()[:24]
    return cache_dir() / "passed-checks" / f"{name}.json"


@pytest.hookimpl(tryfirst=True)  # before the fixtures (a real wheel build) are set up
def pytest_runtest_setup(item):
    if item.get_closest_marker("once_per_inputs"):
        # the inputs as they are when the test starts: a pass is recorded under these
        item.passed_marker = marker = _passed_marker(item)
        if marker.is_file() and not os.environ.get("VLLM_OVERLAY_RERUN"):
            when = json.loads(marker.read_text())["passed"]
            pytest.skip(f"passed {when} for the same inputs (pipeline code, series, pin, "
                        f"locks, test module): not rerun; VLLM_OVERLAY_RERUN=1 reruns it")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed and hasattr(item, "passed_marker"):
        import datetime

        marker = item.passed_marker
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"test": item.nodeid, "passed": datetime.datetime.now(
            datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}) + "\n")
