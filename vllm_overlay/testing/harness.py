"""`make test`: tooling tests, the wheel, the runtime environment, behaviour tests, and the
upstream multimodal subset on pristine 0.19.1 and on the overlay, compared test by test.

Every test that touches vLLM runs in a cached venv against an installed wheel, from a copy
of its tests outside any source tree. Each stage is a function returning what it made or
found (testing/results.py); Stages.run times it and records its StageResult. Results, stage
times and the comparison go to reports/ (markdown + JSON, testing/report.py). The last line
printed is a pytest-style summary of the whole run.
"""

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from vllm_overlay.wheelbuild import apply
from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import pin
from vllm_overlay.common import series
from vllm_overlay.testing import memo, report, subset, testenv
from vllm_overlay.testing.results import (ERROR, FAILED, PASSED, SKIPPED, Environment, Options,
                                          PytestRun, Record, StageResult, SubsetRun, Tally, Trees)
from vllm_overlay.common import venvs
from vllm_overlay.common import log
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO

SUBSET_FILE = REPO / "tests" / "upstream" / "subset.txt"
BEHAVIOUR = REPO / "tests" / "behaviour"
TOOLING = REPO / "tests" / "tooling"
TOOLS_REQUIREMENTS = REPO / "tests" / "requirements-tools.txt"
WORK = REPO / "work" / "test"
REPORTS = REPO / "reports"
TIMEOUT_PER_TEST = 300  # s; a hung upstream test must not eat CI's 90 minutes
# pytest.ini for the copied behaviour tests: rootdir there, nothing read from the repo.
BEHAVIOUR_INI = "[pytest]\naddopts = -p no:cacheprovider\n"


# Stage name -> what it runs, in the order of the run.
STAGES = {
    "wheel": "the overlay wheel (wheelhouse/)",
    "tooling tests": "pytest tests/tooling -n auto in the tools venv, beside the stages below "
                     "(output: reports/logs/tooling.log, shown when they are done)",
    "environment": "the runtime venv (made beside the tooling tests), a thin venv per vLLM wheel",
    "test trees": "upstream's tests/ as published and after the series (work/test/)",
    "behaviour tests": "pytest tests/behaviour against the installed overlay wheel",
    "upstream subset": "tests/upstream/subset.txt on pristine and on the overlay, compared",
}


class Stages:
    """The stages run so far, each result recorded (and printed) as the stage ends."""

    def __init__(self):
        self.results: list[StageResult] = []
        self.reused: list[str] = []  # test stages skipped: passed before on the same inputs
        self.started = time.monotonic()

    def run(self, name: str, func, *args):
        """func(*args), timed; its value returned. The stage failed when the value says so
        (a `failed` property: its tests failed), and is an error when it raised."""
        print(f"\n=== {name} ===", file=sys.stderr, flush=True)
        return self._timed(self._result(name), func, *args)

    def run_once(self, name: str, key: str | None, func, *args):
        """run(name, func, *args) unless `name` passed before with inputs `key` (testing/
        memo.py): then skipped, saying when, and None returned. A pass is recorded."""
        if when := memo.passed(name, key):
            self.reuse(name, when)
            return None
        print(f"\n=== {name} ===", file=sys.stderr, flush=True)
        return self._recorded(self._result(name), key, func, *args)

    def start_once(self, name: str, key: str | None, func, *args) -> Future | None:
        """run_once in a thread, beside the stages that follow: a Future of its value, or
        None when it is reused. Its result keeps its place in the order of the run."""
        if when := memo.passed(name, key):
            self.reuse(name, when)
            return None
        print(f"\n=== {name}: started beside the next stages ===", file=sys.stderr, flush=True)
        beside = ThreadPoolExecutor(1, thread_name_prefix=name.replace(" ", "-"))
        future = beside.submit(self._recorded, self._result(name), key, func, *args)
        beside.shutdown(wait=False)
        return future

    def _result(self, name: str) -> StageResult:
        result = StageResult(name, STAGES[name], ERROR)
        self.results.append(result)
        return result

    def _recorded(self, result: StageResult, key: str | None, func, *args):
        value = self._timed(result, func, *args)
        if result.outcome == PASSED:
            memo.record(result.name, key)
        return value

    @staticmethod
    def _timed(result: StageResult, func, *args):
        t0 = time.monotonic()
        try:
            value = func(*args)
            result.outcome = FAILED if getattr(value, "failed", False) else PASSED
            return value
        except OverlayError as exc:
            result.reason = str(exc)
            raise
        finally:
            result.seconds = round(time.monotonic() - t0, 1)
            print(f"=== {result.name}: {result.seconds:.1f} s ===", file=sys.stderr, flush=True)

    def reuse(self, name: str, when: str) -> None:
        self.skip(name, f"passed {when} for the same inputs: not rerun ({memo.RERUN}=1 "
                        f"reruns it)")
        self.reused.append(name)

    def skip(self, name: str, reason: str) -> None:
        print(f"\n=== {name}: skipped, {reason} ===", file=sys.stderr, flush=True)
        self.results.append(StageResult(name, STAGES[name], SKIPPED, reason=reason))

    def skip_rest(self, reason: str) -> None:
        """The stages that did not run, skipped for `reason` (an earlier step broke)."""
        done = {r.name for r in self.results}
        self.results += [StageResult(name, ran, SKIPPED, reason=reason)
                         for name, ran in STAGES.items() if name not in done]


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




# --- the stages ---------------------------------------------------------------------------


def start_runtime_venv(arch: str) -> Future:
    """The runtime venv (11 GB from the locks, minutes on a fresh machine: mostly download),
    made in the background beside the tooling tests (mostly CPU); the environment stage
    waits for it."""
    runtime = ThreadPoolExecutor(1, thread_name_prefix="runtime-venv")
    base_future = runtime.submit(testenv.ensure_base, arch, REPO, REPORTS / "runtime-venv.log")
    runtime.shutdown(wait=False)
    return base_future


TOOLING_LOG = "tooling.log"  # in reports/logs/


def tooling_tests(junit_dir: Path, logs: Path) -> PytestRun:
    """The tooling tests, in the tools venv; pytest's output (and pip's, when the tools
    venv is made) to their logs: they run beside the other stages."""
    reqs = venvs.ensure_venv("tools", testenv.test_requirements(TOOLS_REQUIREMENTS),
                             log=logs / "tools-venv.log")
    junit = junit_dir / "tooling.xml"
    with open(logs / TOOLING_LOG, "a") as out:
        # one worker per core, a test module to one worker (its module fixtures run once)
        rc = subprocess.run(pytest_cmd(venvs.python_of(reqs), junit, "tests/tooling", "-n",
                                       "auto", "--dist", "loadfile"),
                            cwd=REPO, env=clean_env(), stdout=out,
                            stderr=subprocess.STDOUT).returncode
    if not junit.exists():
        raise OverlayError(f"tooling tests wrote no junit XML (pytest exit {rc}; output in "
                           f"{logs / TOOLING_LOG})")
    return PytestRun(subset.read_junit(junit))


def follow(log_file: Path, future: Future, poll: float = 1.0):
    """The future's value, once it is done; meanwhile its log, so far and as it grows, is
    copied to stderr (the progress of a stage that ran beside the others)."""
    print(f"\n=== waiting for the tooling tests: {log_file}, so far and as it grows ===",
          file=sys.stderr, flush=True)
    with open(log_file, errors="replace") as log:
        while True:
            done = future.done()
            sys.stderr.write(log.read())
            sys.stderr.flush()
            if done:
                return future.result()
            time.sleep(poll)


def environment(base_future: Future, arch: str, the_pin: pin.Pin, wheel: Path,
                upstream_wheel: Path, record: Record) -> Environment:
    """The base venv + one thin venv per vLLM wheel, each importing its own vLLM. The lock
    metadata check goes to the record at once: the report keeps it if a thin venv fails."""
    base = base_future.result()
    checked = record.lock_metadata_checked = testenv.check_metadata(base, arch)
    overlay_env = testenv.ensure_vllm_env(base, wheel)
    art = the_pin.wheel(arch)
    pristine_env = testenv.ensure_vllm_env(base, upstream_wheel, art.sha256, art.filename)
    vllm = {"overlay": check_vllm_import(overlay_env, the_pin.overlay_version),
            "pristine": check_vllm_import(pristine_env, the_pin.upstream_version)}
    return Environment(base, overlay_env, pristine_env, checked, vllm)


def build_test_trees(sdist: Path, patches: list[series.Patch], the_pin: pin.Pin) -> Trees:
    """The two test trees: upstream's tests/ as published, and after the series."""
    src = WORK / "src"
    shutil.rmtree(src, ignore_errors=True)
    pristine = apply.unpack_sdist(sdist, src / "pristine")
    patched = apply.apply_series(sdist, patches, src / "overlay", the_pin.released)
    return Trees(copy_tests(pristine, WORK / "pristine"), copy_tests(patched, WORK / "overlay"))


def behaviour_tests(wheel: Path, env: Environment, the_pin: pin.Pin,
                    junit_dir: Path) -> PytestRun:
    """Our behaviour tests, copied out of the repo, against the installed overlay wheel."""
    dest = WORK / "behaviour"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(BEHAVIOUR, dest, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "pytest.ini").write_text(BEHAVIOUR_INI)
    junit = junit_dir / "behaviour.xml"
    run_env = clean_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                        VLLM_OVERLAY_WHEEL=str(wheel),
                        VLLM_OVERLAY_VERSION=the_pin.overlay_version,
                        VLLM_OVERLAY_PRISTINE_PYTHON=str(venvs.python_of(env.pristine)),
                        VLLM_CACHE_ROOT=str(WORK / "vllm-cache" / "behaviour"))
    rc = run_to_log(pytest_cmd(venvs.python_of(env.overlay), junit, "."), dest, run_env, None)
    if not junit.exists():
        raise OverlayError(f"behaviour tests wrote no junit XML (pytest exit {rc})")
    return PytestRun(subset.read_junit(junit, dest))


def overlay_side(the_subset: subset.Subset, added: list[str]) -> subset.Subset:
    """The overlay runs the subset, and the test files the series adds that it leaves out."""
    return subset.Subset(the_subset.runs + ([subset.Run(added, 0)] if added else []),
                         the_subset.excludes)


def upstream_subset(env: Environment, trees: Trees, the_subset: subset.Subset,
                    added: list[str], patches: list[series.Patch], junit_dir: Path) -> SubsetRun:
    """The subset on both sides at once (2 cores), pristine's output to logs; compared."""
    with ThreadPoolExecutor(1, thread_name_prefix="pristine-subset") as background:
        pristine_side = background.submit(
            run_subset, "pristine", venvs.python_of(env.pristine), trees.pristine, the_subset,
            junit_dir, REPORTS / "logs" / "pristine.log")
        log.stage("subset").info(f"pristine runs in the background (logs: {REPORTS / 'logs'})")
        overlay_junits = run_subset("overlay", venvs.python_of(env.overlay), trees.overlay,
                                    overlay_side(the_subset, added), junit_dir, None)
    pristine = subset.read_junits(pristine_side.result(), trees.pristine)
    overlay = subset.read_junits(overlay_junits, trees.overlay)
    return SubsetRun(pristine, overlay, subset.compare(pristine, overlay, patches))


def subset_record(run: SubsetRun, the_subset: subset.Subset) -> dict:
    return {"pristine": subset.counts(run.pristine), "overlay": subset.counts(run.overlay),
            "comparison": run.comparison.as_dict(),
            "runs": [r.pytest_args() for r in the_subset.runs],
            "excluded": [{"target": e.target, "reason": e.reason}
                         for e in the_subset.excludes]}


# --- what each test stage's result depends on (testing/memo.py) ----------------------------


TESTING_CODE = Path(__file__).parent


def tooling_key() -> str | None:
    """The tooling tests read the whole checkout; and the tools venv they run in."""
    checkout = memo.checkout_digest(REPO)
    tools = venvs.venv_dir("tools", testenv.test_requirements(TOOLS_REQUIREMENTS))
    return checkout and memo.digest("tooling", checkout, tools.name, sys.version)


def behaviour_key(env: Environment) -> str:
    """The two installed wheels and the runtime under them (the thin venvs' names hold the
    wheels' sha256 and the locks' key), the behaviour tests and the harness."""
    return memo.digest("behaviour", env.overlay.name, env.pristine.name, BEHAVIOUR_INI,
                       memo.files_digest(REPO, ["tests/behaviour"]),
                       memo.files_digest(TESTING_CODE, ["."]))


def subset_key(env: Environment, the_pin: pin.Pin, patches: list[series.Patch]) -> str:
    """Both wheels and their runtime, the sdist and the series (the two test trees), the
    subset file and the harness."""
    return memo.digest("subset", env.overlay.name, env.pristine.name, the_pin.sdist.sha256,
                       *(f"{p.name}:{p.sha256()}" for p in patches),
                       memo.files_digest(REPO, ["tests/upstream"]),
                       memo.files_digest(TESTING_CODE, ["."]))


# --- the run ------------------------------------------------------------------------------


def run_stages(options: Options, base_future: Future, stages: Stages, tally: Tally,
               record: Record) -> None:
    """Every stage in order, the tooling tests beside the others (2 cores: they wait on
    downloads and git, the others on torch); what each finds goes to the tally and the
    record. An OverlayError ends the run (the caller records it)."""
    junit_dir, logs = REPORTS / "junit", REPORTS / "logs"
    (logs / TOOLING_LOG).write_text("")
    tooling = None
    try:
        try:  # the wheel first, alone: some tooling tests build in its work tree
            wheel = stages.run("wheel", options.build_wheel, options.arch)
        finally:  # the tooling tests need no wheel: they run whatever the wheel stage gave
            tooling = stages.start_once("tooling tests", tooling_key(), tooling_tests,
                                        junit_dir, logs)
        vllm_stages(options, wheel, base_future, stages, tally, record, junit_dir)
    finally:
        if tooling is not None:
            finish_tooling(tooling, logs / TOOLING_LOG, tally, record)


def finish_tooling(tooling: Future, log_file: Path, tally: Tally, record: Record) -> None:
    """Wait for the tooling tests (their output shown) and count them; a tooling stage that
    broke is a problem of the run, never a reason to lose what the others found."""
    try:
        record.tooling = tally.add_tests(follow(log_file, tooling), "tooling")
    except OverlayError as exc:
        tally.add_error(exc)


def vllm_stages(options: Options, wheel: Path, base_future: Future, stages: Stages,
                tally: Tally, record: Record, junit_dir: Path) -> None:
    """The stages that install vLLM: environment, test trees, behaviour, subset."""
    the_pin = pin.load()
    patches = series.read_series()
    record.patches = [p.name for p in patches]
    sdist = fetch.fetch(the_pin.sdist, the_pin.project)
    upstream_wheel = fetch.fetch(the_pin.wheel(options.arch), the_pin.project)
    env = stages.run("environment", environment, base_future, options.arch, the_pin, wheel,
                     upstream_wheel, record)
    record.vllm, record.venvs = env.vllm, env.venvs()
    key = subset_key(env, the_pin, patches)
    subset_passed = memo.passed("upstream subset", key)
    trees = None
    if subset_passed:  # the trees serve only the subset
        stages.skip("test trees", f"the subset passed {subset_passed} for the same inputs")
    else:
        trees = stages.run("test trees", build_test_trees, sdist, patches, the_pin)
    behaviour = stages.run_once("behaviour tests", behaviour_key(env), behaviour_tests, wheel,
                                env, the_pin, junit_dir)
    if behaviour:
        record.behaviour = tally.add_tests(behaviour, "behaviour")
    if subset_passed:
        stages.reuse("upstream subset", subset_passed)
        return
    the_subset = subset.read_subset(SUBSET_FILE)
    record.added_test_files = added_test_files(patches, trees.pristine, trees.overlay,
                                               the_subset)
    compared = stages.run_once("upstream subset", key, upstream_subset, env, trees,
                               the_subset, record.added_test_files, patches, junit_dir)
    tally.add_subset(compared)
    record.subset = subset_record(compared, the_subset)


def main(options: Options) -> int:
    """The whole run; the report in reports/, the closing line last. 1 when anything failed."""
    stages, tally, record = Stages(), Tally(), Record()
    shutil.rmtree(REPORTS, ignore_errors=True)
    for folder in ("junit", "logs"):
        (REPORTS / folder).mkdir(parents=True)
    WORK.mkdir(parents=True, exist_ok=True)
    base_future = start_runtime_venv(options.arch)
    try:
        run_stages(options, base_future, stages, tally, record)
    except OverlayError as exc:
        tally.add_error(exc)
        stages.skip_rest(f"not run: an earlier step failed ({exc})")
    seconds = time.monotonic() - stages.started
    line = report.closing_line(tally.passed, tally.failed, tally.skipped, tally.xfailed,
                               seconds, len(stages.reused))
    report.write_report(report.as_json(stages.results, record, tally, seconds, line), REPORTS)
    print(f"\nreport: {REPORTS / 'test-report.md'}", file=sys.stderr)
    for problem in tally.problems:
        print(f"FAILED {problem}", file=sys.stderr)
    sys.stderr.flush()
    print(f"{'=' * 20} {line} {'=' * 20}", flush=True)
    return 1 if tally.failed else 0
