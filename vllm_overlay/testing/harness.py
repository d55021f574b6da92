"""`make test`: tooling tests, the wheel, the runtime environment, behaviour tests, and the
upstream multimodal subset on pristine 0.19.1 and on the overlay, compared test by test.

Every test that touches vLLM runs in a cached venv against an installed wheel, from a copy
of its tests outside any source tree. Results, stage times and the comparison go to
reports/ (markdown + JSON). The last line printed is a pytest-style summary of the whole run.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
import time
from pathlib import Path

from vllm_overlay.wheelbuild import apply
from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import pin
from vllm_overlay.common import series
from vllm_overlay.testing import subset
from vllm_overlay.testing import testenv
from vllm_overlay.common import venvs
from vllm_overlay.wheelbuild.overlay_mode import build_overlay_wheel
from vllm_overlay.common import log
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write
from vllm_overlay.common.paths import REPO

SUBSET_FILE = REPO / "tests" / "upstream" / "subset.txt"
BEHAVIOUR = REPO / "tests" / "behaviour"
TOOLING = REPO / "tests" / "tooling"
WORK = REPO / "work" / "test"
REPORTS = REPO / "reports"
TIMEOUT_PER_TEST = 300  # s; a hung upstream test must not eat CI's 90 minutes
# pytest.ini for the copied behaviour tests: rootdir there, nothing read from the repo.
BEHAVIOUR_INI = "[pytest]\naddopts = -p no:cacheprovider\n"


class Stages:
    """Stage name -> seconds, printed as each stage ends."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self.started = time.monotonic()

    def run(self, name: str, func, *args):
        print(f"\n=== {name} ===", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            return func(*args)
        finally:
            self.times[name] = round(time.monotonic() - t0, 1)
            print(f"=== {name}: {self.times[name]:.1f} s ===", file=sys.stderr, flush=True)


def pytest_cmd(python: Path, junit: Path, *args: str) -> list[str]:
    return [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE",
            "-o", "junit_family=xunit1", "-o", "asyncio_default_fixture_loop_scope=function",
            f"--junitxml={junit}", *args]


def run_to_log(cmd: list[str], cwd: Path, env: dict, log: Path | None) -> int:
    """Run; output to the terminal (log=None) or to a log file."""
    if log is None:
        return subprocess.run(cmd, cwd=cwd, env=env).returncode
    with open(log, "w") as out:
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
                              ).returncode


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME",
                                                            "VIRTUAL_ENV")}
    return {**env, **extra}


def check_vllm_import(venv: Path, version: str) -> str:
    """`import vllm` in the venv must be the installed wheel of `version`, in site-packages."""
    probe = ("import vllm, importlib.metadata as m; "
             "print(vllm.__file__); print(vllm.__version__); print(m.version('vllm'))")
    proc = subprocess.run([str(venvs.python_of(venv)), "-c", probe], capture_output=True,
                          text=True, cwd=WORK, env=clean_env())
    lines = proc.stdout.split()
    site = testenv.site_packages(venv)
    if proc.returncode or len(lines) < 3:
        raise OverlayError(f"{venv}: `import vllm` failed:\n{proc.stderr[-2000:]}")
    if not Path(lines[0]).is_relative_to(site) or lines[1:3] != [version, version]:
        raise OverlayError(f"{venv}: import vllm gave {lines[0]} version {lines[1]} "
                           f"(metadata {lines[2]}); expected {version} from {site}")
    return lines[0]


def copy_tests(tree: Path, dest: Path) -> Path:
    """dest/tests + dest/pyproject.toml (upstream's pytest options) from a vLLM tree."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copytree(tree / "tests", dest / "tests", symlinks=True)
    shutil.copy2(tree / "pyproject.toml", dest / "pyproject.toml")
    return dest


def run_subset(side: str, python: Path, root: Path, the_subset: subset.Subset, out: Path,
               log_file: Path | None) -> list[Path]:
    """Every `run` of the subset with this side's python, in root; junit files returned."""
    junits = []
    env = clean_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                    VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
                    VLLM_CACHE_ROOT=str(WORK / "vllm-cache" / side))
    for number, run in enumerate(the_subset.runs, 1):
        junit = out / f"{side}-{number}.xml"
        junit.unlink(missing_ok=True)
        cmd = pytest_cmd(python, junit, f"--timeout={TIMEOUT_PER_TEST}",
                         "--continue-on-collection-errors", *run.pytest_args())
        log.stage(f"subset[{side}]").info(f"{number}/{len(the_subset.runs)}: pytest "
                                          f"{' '.join(run.pytest_args())}")
        rc = run_to_log(cmd, root, env,
                        log_file and log_file.with_name(f"{log_file.stem}-{number}.log"))
        if not junit.exists():
            raise OverlayError(f"subset[{side}] run {number} ({' '.join(run.args)}, line "
                               f"{run.line} of {SUBSET_FILE.name}) wrote no junit XML "
                               f"(pytest exit {rc})")
        if rc not in (0, 1):  # 1 = some tests failed: compared below; others: pytest broke
            if rc != 5:  # 5 = nothing collected (everything deselected): fine
                raise OverlayError(f"subset[{side}] run {number} ({' '.join(run.args)}): "
                                   f"pytest exit {rc}")
        junits.append(junit)
    return junits


def added_test_files(patches: list[series.Patch], pristine_root: Path, overlay_root: Path,
                     the_subset: subset.Subset) -> list[str]:
    """Test files the series adds that no `run` covers: run on the overlay, reported as new."""
    covered = [path for run in the_subset.runs for path in run.paths]
    found = []
    for file in dict.fromkeys(f for p in patches for f in p.files):
        name = Path(file).name
        if (file.startswith("tests/") and name.startswith("test_") and name.endswith(".py")
                and (overlay_root / file).is_file() and not (pristine_root / file).exists()
                and not any(subset.covers(path, file) for path in covered)):
            found.append(file)
    return found


def closing_line(passed: int, failed: int, skipped: int, xfailed: int, seconds: float) -> str:
    parts = [f"{failed} failed"] if failed else []
    parts += [f"{passed} passed"]
    parts += [f"{skipped} skipped"] if skipped else []
    parts += [f"{xfailed} xfailed"] if xfailed else []
    return f"{', '.join(parts)} in {seconds:.2f}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllm_overlay test")
    parser.add_argument("--arch", default="x86_64")
    args = parser.parse_args(argv)
    stages, totals, problems = Stages(), {"passed": 0, "failed": 0, "skipped": 0}, []
    report: dict = {"stages": stages.times}
    junit_dir = REPORTS / "junit"
    shutil.rmtree(REPORTS, ignore_errors=True)
    junit_dir.mkdir(parents=True)
    WORK.mkdir(parents=True, exist_ok=True)

    def add(results: dict[str, subset.Result], what: str) -> dict[str, int]:
        c = subset.counts(results)
        totals["passed"] += c["passed"]
        totals["skipped"] += c["skipped"]
        totals["failed"] += c["failed"] + c["error"]
        for r in results.values():
            if r.outcome in subset.BAD:
                problems.append(f"{what}: {r.test_id} {r.outcome}: {r.message}")
        return c

    # The runtime venv (11 GB from the locks, minutes on a fresh machine: mostly download)
    # is made beside the tooling tests (mostly CPU); the environment stage waits for it.
    runtime = ThreadPoolExecutor(1, thread_name_prefix="runtime-venv")
    base_future = runtime.submit(testenv.ensure_base, args.arch, REPO, REPORTS / "runtime-venv.log")
    runtime.shutdown(wait=False)
    try:
        # 1. tooling tests, in the tools venv
        def tooling():
            reqs = venvs.ensure_venv("tools", testenv.test_requirements(
                REPO / "tests" / "requirements-tools.txt"))
            junit = junit_dir / "tooling.xml"
            rc = subprocess.run(pytest_cmd(venvs.python_of(reqs), junit, "tests/tooling"),
                                cwd=REPO, env=clean_env()).returncode
            if not junit.exists():
                raise OverlayError(f"tooling tests wrote no junit XML (pytest exit {rc})")
            report["tooling"] = add(subset.read_junit(junit), "tooling")
        stages.run("tooling tests", tooling)

        the_pin = pin.load()
        patches = series.read_series()
        report["patches"] = [p.name for p in patches]
        wheel = stages.run("wheel", build_overlay_wheel, args.arch)
        sdist = fetch.fetch(the_pin.sdist, the_pin.project)
        upstream_wheel = fetch.fetch(the_pin.wheel(args.arch), the_pin.project)

        # 2. the environment: base venv + one thin venv per vLLM wheel
        def environment():
            base = base_future.result()
            report["lock_metadata_checked"] = testenv.check_metadata(base, args.arch)
            overlay_env = testenv.ensure_vllm_env(base, wheel)
            art = the_pin.wheel(args.arch)
            pristine_env = testenv.ensure_vllm_env(base, upstream_wheel, art.sha256, art.filename)
            report["vllm"] = {
                "overlay": check_vllm_import(overlay_env, the_pin.overlay_version),
                "pristine": check_vllm_import(pristine_env, the_pin.upstream_version)}
            report["venvs"] = {"base": str(base), "overlay": str(overlay_env),
                               "pristine": str(pristine_env)}
            return overlay_env, pristine_env
        overlay_env, pristine_env = stages.run("environment", environment)

        # 3. the two test trees: upstream's tests/ as published, and after the series
        def trees():
            src = WORK / "src"
            shutil.rmtree(src, ignore_errors=True)
            pristine = apply.unpack_sdist(sdist, src / "pristine")
            patched = apply.apply_series(sdist, patches, src / "overlay", the_pin.released)
            return copy_tests(pristine, WORK / "pristine"), copy_tests(patched, WORK / "overlay")
        pristine_root, overlay_root = stages.run("test trees", trees)

        # 4. our behaviour tests, against the installed overlay wheel
        def behaviour():
            dest = WORK / "behaviour"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(BEHAVIOUR, dest, ignore=shutil.ignore_patterns("__pycache__"))
            (dest / "pytest.ini").write_text(BEHAVIOUR_INI)
            junit = junit_dir / "behaviour.xml"
            env = clean_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                            VLLM_OVERLAY_WHEEL=str(wheel),
                            VLLM_OVERLAY_VERSION=the_pin.overlay_version,
                            VLLM_OVERLAY_PRISTINE_PYTHON=str(venvs.python_of(pristine_env)),
                            VLLM_CACHE_ROOT=str(WORK / "vllm-cache" / "behaviour"))
            rc = run_to_log(pytest_cmd(venvs.python_of(overlay_env), junit, "."), dest, env,
                            None)
            if not junit.exists():
                raise OverlayError(f"behaviour tests wrote no junit XML (pytest exit {rc})")
            report["behaviour"] = add(subset.read_junit(junit, dest), "behaviour")
        stages.run("behaviour tests", behaviour)

        # 5. the upstream subset on both sides at once (2 cores); pristine's output to logs
        the_subset = subset.read_subset(SUBSET_FILE)
        added = added_test_files(patches, pristine_root, overlay_root, the_subset)
        overlay_subset = subset.Subset(the_subset.runs + ([subset.Run(added, 0)] if added else []),
                                       the_subset.excludes)
        report["added_test_files"] = added

        def upstream_subset():
            results: dict = {}

            def pristine_side():
                try:
                    results["pristine"] = run_subset(
                        "pristine", venvs.python_of(pristine_env), pristine_root, the_subset,
                        junit_dir, REPORTS / "logs" / "pristine.log")
                except Exception as exc:  # re-raised in the main thread below
                    results["pristine_error"] = exc
            (REPORTS / "logs").mkdir(exist_ok=True)
            thread = threading.Thread(target=pristine_side)
            thread.start()
            log.stage("subset").info(f"pristine runs in the background (logs: {REPORTS / 'logs'})")
            try:
                overlay_junits = run_subset("overlay", venvs.python_of(overlay_env),
                                            overlay_root, overlay_subset, junit_dir, None)
            finally:
                thread.join()
            if "pristine_error" in results:
                raise results["pristine_error"]
            return results["pristine"], overlay_junits
        pristine_junits, overlay_junits = stages.run("upstream subset", upstream_subset)

        # 6. compare
        pristine = subset.read_junits(pristine_junits, pristine_root)
        overlay = subset.read_junits(overlay_junits, overlay_root)
        cmp = subset.compare(pristine, overlay, patches)
        c = subset.counts(overlay)
        totals["passed"] += c["passed"]
        totals["skipped"] += c["skipped"]
        totals["failed"] += len(cmp.regressions) + len(cmp.new_failing)
        xfailed = len(cmp.failed_both)
        problems += [f"regression: {r.test} ({r.overlay}; {r.message}) -- patches: "
                     f"{r.patches}" for r in cmp.regressions]
        problems += [f"new test failing: {n.test} ({n.overlay})"
                     for n in cmp.new_failing]
        report["subset"] = {"pristine": subset.counts(pristine), "overlay": c,
                            "comparison": cmp.as_dict(),
                            "runs": [r.pytest_args() for r in the_subset.runs],
                            "excluded": [{"target": e.target, "reason": e.reason}
                                         for e in the_subset.excludes]}
    except OverlayError as exc:
        problems.append(f"error: {exc}")
        totals["failed"] += 1
        xfailed = 0
    report["problems"] = problems
    seconds = time.monotonic() - stages.started
    report["stages"]["total"] = round(seconds, 1)
    line = closing_line(totals["passed"], totals["failed"], totals["skipped"], xfailed, seconds)
    report["summary"] = line
    write_report(report)
    print(f"\nreport: {REPORTS / 'test-report.md'}", file=sys.stderr)
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    sys.stderr.flush()
    print(f"{'=' * 20} {line} {'=' * 20}", flush=True)
    return 1 if totals["failed"] else 0


def _counts_row(name: str, c: dict | None) -> str:
    if not c:
        return f"| {name} | - | - | - | - |"
    return f"| {name} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']} |"


def write_report(report: dict) -> None:
    REPORTS.mkdir(parents=True, exist_ok=True)
    atomic_write(REPORTS / "test-report.json", json.dumps(report, indent=2) + "\n")
    upstream = pin.load().upstream_version
    md = ["# make test report", "", f"**{report['summary']}**", "", "## Stage times", "",
          "| stage | seconds |", "| --- | ---: |"]
    md += [f"| {k} | {v:.1f} |" for k, v in report["stages"].items()]
    md += ["", "## Test counts", "", "| run | passed | failed | error | skipped |",
           "| --- | ---: | ---: | ---: | ---: |",
           _counts_row("tooling tests", report.get("tooling")),
           _counts_row("behaviour tests (overlay wheel)", report.get("behaviour"))]
    sub = report.get("subset")
    if sub:
        md += [_counts_row(f"upstream subset, pristine {upstream}", sub["pristine"]),
               _counts_row("upstream subset, overlay", sub["overlay"])]
        cmp = sub["comparison"]
        md += ["", "## Pristine vs overlay", "",
               f"- passed on both: {len(cmp['passed_both'])}",
               f"- fixed by the overlay: {len(cmp['fixed'])}",
               f"- regressions: {len(cmp['regressions'])}",
               f"- failing on both (upstream {upstream}'s own failures here): "
               f"{len(cmp['failed_both'])}",
               f"- skipped on both: {len(cmp['skipped_both'])}",
               f"- new tests from the series: {len(cmp['new'])}",
               f"- removed by the series: {len(cmp['removed'])}",
               f"- other changes (e.g. passed -> skipped): {len(cmp['other'])}", ""]
        if cmp["regressions"]:
            md += ["### Regressions", ""] + [
                f"- `{r['test']}`: {r['overlay']} ({r['message']}); patches: {r['patches']}"
                for r in cmp["regressions"]] + [""]
        for key, title in (("fixed", "Fixed by the overlay"),
                           ("failed_both", "Failing on both")):
            if cmp[key]:
                md += [f"### {title}", ""] + [f"- `{t}`" for t in cmp[key]] + [""]
        if cmp["new"]:
            md += ["### New tests from the series", ""] + [
                f"- `{n['test']}`: {n['overlay']}" + (f" ({n['patches']})" if n["patches"]
                                                      else "") for n in cmp["new"]] + [""]
        if cmp["other"]:
            md += ["### Other changes", ""] + [
                f"- `{o['test']}`: {o['pristine']} -> {o['overlay']}" for o in cmp["other"]]
        md += ["", "## Subset", ""] + [f"- `pytest {' '.join(r)}`" for r in sub["runs"]]
        md += ["", "Excluded:", ""] + [f"- `{e['target']}`: {e['reason']}"
                                        for e in sub["excluded"]]
    if report["problems"]:
        md += ["", "## Problems", ""] + [f"- {p}" for p in report["problems"]]
    atomic_write(REPORTS / "test-report.md", "\n".join(md) + "\n")
