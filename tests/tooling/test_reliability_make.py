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
