"""`make bench` keeps working (issue 28): every benchmark it runs imports what exists, and
runs with --smoke (one pass, the smallest cases) to exit 0 printing its figure lines.

Figures are never asserted: only that each benchmark ran and printed them.
"""

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
import time
import types

import pytest

from vllm_overlay.common.paths import REPO

BENCHMARKS = REPO / "benchmarks"
BEHAVIOUR = REPO / "tests" / "behaviour"
NUMBER = r"[\d.]+"
# benchmark -> lines its --smoke run must print (a figure where the full run prints one)
FIGURES = {
    "bench_wheel.py": [rf"cp of the upstream wheel +{NUMBER} s",
                       rf"make wheel after a series change +{NUMBER} s += {NUMBER} x cp",
                       r"  phases \(the build's log\):",
                       rf"    apply \(git am of the series\) +{NUMBER} s",
                       rf"      read\+hash upstream \(worker thread\) +{NUMBER} s",
                       rf"    install \+ files beside the wheel +{NUMBER} s",
                       rf"make wheel with nothing changed +{NUMBER} s",
                       rf"rm wheelhouse/\*\.whl && make wheel +{NUMBER} s += {NUMBER} x cp",
                       rf"rebuild vs cp \(same run\): +{NUMBER} x",
                       rf"rm \+ build vs cp \(paired\): +{NUMBER} x"],
    "bench_modes.py": [rf"MODE=overlay +{NUMBER} s +vllm-\S+\.whl"],
    "bench_encoder_graphs.py": [r"  1 image, 64 tokens +\d+ +\d+ +\d+ \+ 1 +\d+",
                                r" +1024 auto \(0004\) +\d+( +[\d,]+){5}"],
}


def bench_recipe() -> list[str]:
    """The benchmark scripts `make bench` runs, in order, from the Makefile."""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", text, re.M)[1]
    return re.findall(r"benchmarks/(\w+\.py)", recipe)


def test_make_bench_runs_the_smoked_benchmarks():
    assert bench_recipe() == list(FIGURES)


def _imports(path) -> list[tuple[str, str]]:
    """(module, name) of every `from X import name` in the file, at any depth."""
    return [(node.module, alias.name) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module for alias in node.names]


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_imports_exist(script):
    """No network, no torch: every package name a benchmark imports exists, and every
    helper it takes from tests/behaviour is defined there (the figures run in the overlay
    venv, so a stale name would surface only in `make bench`)."""
    for module, name in _imports(BENCHMARKS / script):
        if module.startswith("vllm_overlay"):
            found = importlib.import_module(module)
            assert hasattr(found, name) or importlib.util.find_spec(f"{module}.{name}"), (
                f"{script}: from {module} import {name}: no such name")
        elif (BEHAVIOUR / f"{module}.py").is_file():
            tree = ast.parse((BEHAVIOUR / f"{module}.py").read_text())
            defined = {n.name for n in tree.body
                       if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            defined |= {t.id for n in tree.body if isinstance(n, ast.Assign)
                        for t in n.targets if isinstance(t, ast.Name)}
            assert name in defined, f"{script}: tests/behaviour/{module}.py has no {name}"


def _module_attributes(path) -> list[tuple[str, str, str]]:
    """(alias, package module, attribute) of every `alias.attribute` in the file where the
    alias is a vllm_overlay module imported by `from vllm_overlay.x import alias [as a]`."""
    tree = ast.parse(path.read_text())
    modules = {alias.asname or alias.name: f"{node.module}.{alias.name}"
               for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and (node.module or "").startswith("vllm_overlay") for alias in node.names
               if isinstance(getattr(importlib.import_module(node.module), alias.name, None),
                             types.ModuleType)}
    return [(node.value.id, modules[node.value.id], node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in modules]


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_module_attributes_exist(script):
    """`apply.git(...)` after git moved out of apply fails only when the benchmark runs:
    every attribute a benchmark takes from a package module exists."""
    for alias, module, attr in _module_attributes(BENCHMARKS / script):
        assert hasattr(importlib.import_module(module), attr), (
            f"{script}: {alias}.{attr}: {module} has no {attr}")


@pytest.mark.slow
@pytest.mark.network
def test_benchmark_smokes(tmp_path):
    """The real artifacts and venvs of the cache: each benchmark exits 0 and prints its
    figure lines. All start at once (the wheel benchmarks mostly read, hash and write, the
    encoder one computes), each a process of its own with its output in files; one test, so
    that a parallel runner never starts them twice over the same scratch folders."""
    started = time.monotonic()
    procs = {}
    for script in FIGURES:
        with open(tmp_path / f"{script}.out", "w") as out, \
                open(tmp_path / f"{script}.err", "w") as err:
            procs[script] = subprocess.Popen([sys.executable, str(BENCHMARKS / script),
                                              "--smoke"], cwd=REPO, stdout=out, stderr=err)
    problems = []
    for script, proc in procs.items():
        returncode = proc.wait(timeout=600)
        out, err = ((tmp_path / f"{script}.{kind}").read_text() for kind in ("out", "err"))
        print(f"{script} --smoke: exit {returncode}, done after "
              f"{time.monotonic() - started:.1f} s")
        if returncode:
            problems.append(f"{script} --smoke: exit {returncode}\n{out[-3000:]}\n{err[-3000:]}")
            continue
        lines = out.splitlines()
        problems += [f"{script} --smoke printed no line matching {pattern!r}:\n{out}"
                     for pattern in FIGURES[script]
                     if not any(re.fullmatch(pattern + ".*", line) for line in lines)]
    print(f"benchmark smokes, side by side: {time.monotonic() - started:.1f} s wall")
    assert not problems, "\n\n".join(problems)
