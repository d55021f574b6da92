"""The tooling package: every module imports, no import cycle, layers import downwards."""

import ast
import importlib

import pytest

from vllm_overlay.common.paths import REPO

PACKAGE = REPO / "vllm_overlay"
# What each layer may import from the package (besides itself). The in-image scripts run
# with a plain python3 inside the image, so they import nothing of the package at all.
ALLOWED = {
    "common": {"common"},
    "wheelbuild": {"common", "wheelbuild"},
    "publishing": {"common", "publishing"},
    "upstream": {"common", "wheelbuild", "testing", "upstream"},  # release trees; the runtime venv of a rebase
    "testing": {"common", "wheelbuild", "testing"},
    "commands": {"common", "wheelbuild", "publishing", "upstream", "testing", "commands"},
}


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


def package_imports(name: str) -> set[str]:
    """The vllm_overlay modules `name` imports, at any depth of its code."""
    path = REPO.joinpath(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{name}: relative import (use vllm_overlay.<...>)")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vllm_overlay"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vllm_overlay")}
    return found - {name}


@pytest.mark.parametrize("name", [m for m in MODULES if m != "vllm_overlay.__main__"])
def test_every_module_imports(name):  # __main__ runs the CLI when imported
    importlib.import_module(name)


def test_no_import_cycle():
    graph = {name: {m for m in package_imports(name) if m in MODULES} for name in MODULES}
    done, path = set(), []

    def visit(node):
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        path.append(node)
        for dep in sorted(graph[node]):
            visit(dep)
        path.pop()
        done.add(node)

    for name in MODULES:
        visit(name)


def test_the_cycle_check_can_fail(monkeypatch):
    """Negative control: a made-up edge common.pin -> build.fetch closes a cycle."""
    real = package_imports
    monkeypatch.setitem(globals(), "package_imports", lambda n: real(n) | (
        {"vllm_overlay.wheelbuild.fetch"} if n == "vllm_overlay.common.pin" else set()))
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle()


def test_layers_import_only_downwards():
    for name in MODULES:
        parts = name.split(".")
        if len(parts) < 3:
            continue  # vllm_overlay, __main__, cli and the subpackages' __init__
        layer = parts[1]
        used = {m.split(".")[1] for m in package_imports(name) if m.count(".") >= 1}
        if layer == "publishing" and parts[2] == "in_image":
            assert not package_imports(name), f"{name} must run without the package"
            continue
        assert used <= ALLOWED[layer], f"{name} imports {sorted(used - ALLOWED[layer])}"


@pytest.mark.parametrize("name", [m for m in MODULES if m.startswith("vllm_overlay.commands.")])
def test_drivers_import_no_drivers(name):
    """A command is a short driver: what two commands share lives in a layer below them."""
    drivers = {m for m in package_imports(name) if m.startswith("vllm_overlay.commands")}
    assert not drivers, f"{name} imports the driver(s) {sorted(drivers)}"


# The top-level builds: what `make wheel` runs. A stage that needs a wheel is handed the
# build by its command, so no stage climbs back up to the top of another.
TOP_LEVEL_BUILDS = {"vllm_overlay.wheelbuild.overlay_mode"}


def top_level_build_importers(modules=MODULES, imports=package_imports) -> list[str]:
    return [name for name in modules if not name.startswith("vllm_overlay.commands.")
            and name not in TOP_LEVEL_BUILDS and imports(name) & TOP_LEVEL_BUILDS]


def test_only_commands_call_the_top_level_build():
    assert top_level_build_importers() == []


def test_the_top_level_build_check_can_fail():
    """Negative control: the harness importing the build, as it did, is found."""
    fake = {"vllm_overlay.testing.harness": {"vllm_overlay.wheelbuild.overlay_mode"}}
    assert top_level_build_importers(list(fake), fake.get) == ["vllm_overlay.testing.harness"]
