"""Makefile variables reach the CLI as one argument each (issue 20: `ARCH='x86_64 --mode
source'` injected an option). Checked on the commands `make -n` prints."""

import shlex
import subprocess

import pytest

from vllm_overlay.common.paths import REPO

EVIL = ["x86_64 --mode source", "it's; touch INJECTED", 'a"b `id` c']  # ($ is make's own syntax)
CASES = [("wheel", "ARCH", "--arch"), ("wheel", "MODE", "--mode"), ("fetch", "ARCH", "--arch"),
         ("wheel-dry-run", "ARCH", "--arch"), ("cross-check", "ARCH", "--arch"),
         ("publish", "INDEX_URL", "--index-url"), ("publish", "SIMPLE_URL", "--simple-url"),
         ("publish", "WHEELHOUSE", "--wheelhouse"), ("docker", "IMAGE", "--image"),
         ("docker", "ARCH", "--arch"), ("status", "RELEASES", "--releases"),
         ("status", "PATCHES", "--patches"), ("bisect", "GOOD", "--good"),
         ("bisect", "BAD", "--bad"), ("bisect", "CHECK", "--check"), ("rebase", "TO", "--to"),
         ("rebase", "ARCH", "--arch")]


def commands(target: str, **variables: str) -> list[list[str]]:
    proc = subprocess.run(["make", "-s", "-n", "-C", str(REPO), target,
                           *(f"{k}={v}" for k, v in variables.items())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.replace("\\\n", " ").splitlines()
            if "build.sh" in line]


@pytest.mark.parametrize("value", EVIL)
@pytest.mark.parametrize(("target", "variable", "option"), CASES)
def test_a_variable_is_one_argument(target, variable, option, value):
    extra = {"INDEX_URL": "http://127.0.0.1:1/"} if target == "publish" else {}
    [argv] = commands(target, **{**extra, variable: value})
    assert argv[argv.index(option) + 1] == value
    assert argv.count("--mode") <= 1


@pytest.mark.parametrize("value", EVIL)
def test_docker_build_args_stay_one_argument(value):
    [argv] = commands("docker", MAX_JOBS=value, TORCH_CUDA_ARCH_LIST=value)
    assert f"MAX_JOBS={value}" in argv and f"TORCH_CUDA_ARCH_LIST={value}" in argv


# --- issue 27, case 7: every target that takes a variable, run for real ---------------------
# Each value below injects `touch F` into an unquoted word or into a '...'-quoted one. The
# other variables make the tool fail at once (argparse refuses ARCH=bogus, a patches folder
# that does not exist, an empty wheelhouse), so nothing is built or downloaded: the target
# must hand the value over as one argument (no F) and exit non-zero, as the tool did.
BOGUS = {"ARCH": "bogus"}
NO_PATCHES = {"PATCHES": "/nonexistent/patches"}
RUN_CASES = [
    ("wheel", "ARCH", {}), ("wheel", "MODE", BOGUS), ("lock", "ARCH", {}),
    ("changelog", "ARCH", {}), ("changelog", "PREVIOUS", BOGUS),
    ("wheel-dry-run", "ARCH", {}), ("fetch", "ARCH", {}), ("cross-check", "ARCH", {}),
    ("test", "ARCH", {}),  # run with -o check-patches: only its own recipe
    ("publish", "INDEX_URL", {"WHEELHOUSE": "EMPTY"}),
    ("publish", "SIMPLE_URL", {"INDEX_URL": "http://127.0.0.1:9/", "WHEELHOUSE": "EMPTY"}),
    ("publish", "WHEELHOUSE", {"INDEX_URL": "http://127.0.0.1:9/"}),
    ("docker", "ARCH", {}), ("docker", "MODE", BOGUS), ("docker", "IMAGE", BOGUS),
    ("docker", "TORCH_CUDA_ARCH_LIST", BOGUS), ("docker", "MAX_JOBS", BOGUS),
    ("status", "PATCHES", {}), ("status", "RELEASES", NO_PATCHES),
    ("status", "STATUS_OUT", NO_PATCHES),
    ("bisect", "CHECK", {}), ("bisect", "GOOD", {"CHECK": "bogus"}),
    ("bisect", "BAD", {"CHECK": "bogus"}), ("bisect", "PATCHES", {"CHECK": "bogus"}),
    ("bisect", "CMD", {"CHECK": "bogus"}), ("bench-status", "PATCHES", {}),
    ("rebase", "TO", BOGUS), ("rebase", "ARCH", {}),
]
INJECT = ["x; touch {F}", "x'; touch {F}; echo '"]


@pytest.mark.parametrize("template", INJECT, ids=["unquoted", "quoted"])
@pytest.mark.parametrize(("target", "variable", "others"), RUN_CASES,
                         ids=[f"{t}-{v}" for t, v, _ in RUN_CASES])
def test_an_injected_command_never_runs_and_the_failure_is_make_s(target, variable, others,
                                                                   template, tmp_path):
    flag = tmp_path / "F"
    (tmp_path / "empty").mkdir()
    settings = {k: str(tmp_path / "empty") if v == "EMPTY" else v for k, v in others.items()}
    settings[variable] = template.format(F=flag)
    proc = subprocess.run(["make", "-C", str(REPO), "-o", "check-patches", target,
                           *(f"{k}={v}" for k, v in settings.items())],
                          capture_output=True, text=True, timeout=120)
    assert not flag.exists(), f"make {target} ran the command injected through {variable}"
    assert proc.returncode != 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("target", "variables"), [
    ("publish", {"INDEX_URL": "http://h/"}),
    ("publish", {"INDEX_URL": "http://h/", "SIMPLE_URL": "http://h/s/", "WHEELHOUSE": "w"}),
    ("rebase", {"TO": "latest"}), ("rebase", {"CONTINUE": "1", "NO_WHEEL": "1"}),
    ("docker", {}), ("docker", {"IMAGE": "i", "MAX_JOBS": "2", "TORCH_CUDA_ARCH_LIST": "9.0"}),
    ("bisect", {"GOOD": "0.19.1", "BAD": "0.20.0"}), ("status", {"RELEASES": "0.19.1"}),
])
def test_a_recipe_echoes_one_command_line(target, variables):
    """The echoed command is the command: no trailing backslash, no blank continuation line."""
    proc = subprocess.run(["make", "-n", "-C", str(REPO), target,
                           *(f"{k}={v}" for k, v in variables.items())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if not ln.startswith("make")]
    assert [ln for ln in lines if ln.rstrip().endswith("\\") or not ln.strip()] == [], lines
