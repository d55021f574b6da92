""""Merged cleanly" is not "works": checks of a rebased work tree before it is built.

Each carried patch is one commit of the tree (base..HEAD). For each commit, on the tree as
that commit leaves it (no torch, nothing imported):
  - every Python file it adds or changes compiles (`compile()`, as `python -m py_compile`);
  - every call on a line it adds names something that exists: `name(...)` is defined,
    imported, assigned or a parameter in that module (or a builtin); `self.name(...)` /
    `cls.name(...)` is defined in the module or, by `def`/`class`/assignment, anywhere in the
    tree (a base class elsewhere); `from <a module of the tree> import name` finds name
    there. A 3-way merge that kept our call to a method upstream
    removed fails here.
With a runtime Python (the runtime venv of the new locks, when `make test` made it), every
module the series touches is imported in the tree, and the tests the series adds or changes (tests/**/test_*.py the commits touch) run in the tree,
and a failure names the test and the patch whose commit last touched its file.
Problems are results (dicts), stops for a human; only the tool's own failures raise.
"""

import ast
import builtins
import json
import os
import re
import subprocess
from pathlib import Path

from vllm_overlay.common.gittree import GitTree

BUILTINS = set(dir(builtins))


def commits(tree: Path, base: str) -> list[tuple[str, str]]:
    """(sha, subject) of the carried patches' commits, oldest first."""
    return GitTree(tree).commits(base)


def _added_lines(tree: Path, sha: str, path: str) -> set[int]:
    diff = GitTree(tree).git("diff", "-U0", f"{sha}~1", sha, "--", path).stdout
    added = set()
    for m in re.finditer(r"^@@ -\S+ \+(\d+)(?:,(\d+))? @@", diff, re.M):
        start, count = int(m[1]), int(m[2]) if m[2] is not None else 1
        added.update(range(start, start + count))
    return added


def _module_names(module: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(module):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif isinstance(node, ast.MatchAs) and node.name:
            names.add(node.name)
    return names


def _self_attrs(module: ast.Module) -> set[str]:
    """Names a `self.x(...)` may resolve to within the module: defs, class-level names,
    and attributes assigned anywhere (self.x = ...)."""
    names = set()
    for node in ast.walk(module):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _defined_in_tree(tree: Path, sha: str, name: str) -> bool:
    pattern = rf"(def|class)[[:space:]]+{name}[[:space:]]*[(:]|(^|[^A-Za-z0-9_.]){name}" \
              rf"[[:space:]]*(:|=[^=])|self\.{name}[[:space:]]*(:|=[^=])"
    proc = GitTree(tree).git("grep", "-q", "-E", pattern, sha, "--", "*.py", check=False)
    return proc.returncode == 0


def check_commit(tree: Path, sha: str, subject: str) -> list[dict]:
    files = GitTree(tree).changed_by(sha, "*.py")
    problems = []
    for path in files:
        source = GitTree(tree).show(sha, path).stdout
        try:
            module = ast.parse(compile(source, path, "exec", ast.PyCF_ONLY_AST))
        except SyntaxError as exc:
            problems.append({"commit": sha, "subject": subject, "file": path,
                             "line": exc.lineno, "check": "compile",
                             "detail": f"{path}:{exc.lineno} does not compile: {exc.msg}"})
            continue
        added = _added_lines(tree, sha, path)
        if not added:
            continue
        star = any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)
                   for n in ast.walk(module))
        names, attrs, seen = _module_names(module), _self_attrs(module), set()
        for node in ast.walk(module):
            if isinstance(node, ast.ImportFrom) and node.lineno in added:
                problems += _import_problems(tree, sha, subject, path, node)
            if not isinstance(node, ast.Call) or node.lineno not in added:
                continue
            func = node.func
            if isinstance(func, ast.Name):
                missing = not star and func.id not in names and func.id not in BUILTINS
                shown = f"{func.id}()"
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                    and func.value.id in ("self", "cls"):
                missing = func.attr not in attrs and not _defined_in_tree(tree, sha, func.attr)
                shown = f"{func.value.id}.{func.attr}()"
            else:
                continue
            if missing and (path, shown) not in seen:
                seen.add((path, shown))
                problems.append({
                    "commit": sha, "subject": subject, "file": path, "line": node.lineno,
                    "check": "names",
                    "detail": f"{path}:{node.lineno} calls {shown}, which is defined nowhere "
                              f"(not in the module, nor anywhere in the tree): upstream "
                              f"removed or renamed it?"})
    return problems


def _show(tree: Path, sha: str, path: str) -> str | None:
    proc = GitTree(tree).show(sha, path, check=False)
    return proc.stdout if proc.returncode == 0 else None


def _import_problems(tree: Path, sha: str, subject: str, path: str,
                     node: ast.ImportFrom) -> list[dict]:
    """`from tree.module import name` on an added line: the tree's module defines name (or
    it is a submodule). Modules outside the tree (torch, the stdlib) are not checked."""
    if node.level or not node.module:
        return []
    base = node.module.replace(".", "/")
    source = _show(tree, sha, f"{base}.py")
    package = source is None
    if package:
        source = _show(tree, sha, f"{base}/__init__.py")
    if source is None:
        return []
    try:
        names = _module_names(ast.parse(source))
    except SyntaxError:
        return []
    out = []
    for alias in node.names:
        if alias.name == "*" or alias.name in names or (
                package and (_show(tree, sha, f"{base}/{alias.name}.py") is not None or
                             _show(tree, sha, f"{base}/{alias.name}/__init__.py") is not None)):
            continue
        out.append({"commit": sha, "subject": subject, "file": path, "line": node.lineno,
                    "check": "names",
                    "detail": f"{path}:{node.lineno} imports {alias.name} from {node.module}, "
                              f"which does not define it: upstream removed or renamed it?"})
    return out


def static_problems(tree: Path, base: str) -> list[dict]:
    return [p for sha, subject in commits(tree, base) for p in check_commit(tree, sha, subject)]


def series_tests(tree: Path, base: str) -> dict[str, str]:
    """tests/**/test_*.py the carried commits add or change (still in the tree) -> the
    subject of the last commit that touched each."""
    out = {}
    for sha, subject in commits(tree, base):
        for path in GitTree(tree).changed_by(sha):
            name = Path(path).name
            if path.startswith("tests/") and name.startswith("test_") and name.endswith(".py"):
                out[path] = subject
    return {p: s for p, s in out.items() if (tree / p).is_file()}


_IMPORT_ALL = """
import importlib, json, sys, traceback
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:  # noqa: a module that exits or raises anything
        failed[name] = traceback.format_exception_only(type(exc), exc)[-1].strip()
print(json.dumps(failed))
"""


def touched_modules(tree: Path, base: str) -> dict[str, str]:
    """The importable modules (not tests) the carried commits add or change, still in the
    tree -> the subject of the last commit that touched each."""
    out = {}
    for sha, subject in commits(tree, base):
        for path in GitTree(tree).changed_by(sha, "*.py"):
            parts = Path(path).with_suffix("").parts
            if parts[0] in ("tests", "benchmarks", "examples", "docs", "tools") or \
                    not all(p.isidentifier() for p in parts) or not (tree / path).is_file():
                continue
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = subject
    return out


def _run_in(tree: Path, cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    """Run `cmd` in the tree with the tree's code first on the path."""
    return subprocess.run(cmd, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, timeout=timeout)


def _about_all(files: dict[str, str], check: str, detail: str) -> list[dict]:
    """One problem for a check that failed as a whole (files: name -> commit subject)."""
    return [{"subject": next(iter(files.values())), "file": ", ".join(sorted(files)),
             "check": check, "detail": detail}]


def import_problems(tree: Path, base: str, python: Path, timeout: int = 900) -> list[dict]:
    """Import every module the series touches, in the tree, with `python` (the runtime)."""
    modules = touched_modules(tree, base)
    if not modules:
        return []
    try:
        proc = _run_in(tree, [str(python), "-c", _IMPORT_ALL, *sorted(modules)], timeout)
        failed = json.loads(proc.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return _about_all(modules, "imports", f"importing them ran past {timeout} s")
    except (ValueError, IndexError):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        return _about_all(modules, "imports",
                          f"the import check exited {proc.returncode}: {tail[0]}")
    return [{"subject": modules[name], "file": name, "check": "imports",
             "detail": f"import {name} fails: {why}"} for name, why in sorted(failed.items())]


def run_tests(tree: Path, base: str, python: Path, timeout: int = 1800) -> list[dict]:
    """Run the series' own tests in the tree with `python`; one problem per failing test."""
    tests = series_tests(tree, base)
    if not tests:
        return []
    try:
        proc = _run_in(tree, [str(python), "-m", "pytest", "-q", "-rfE", "-p",
                              "no:cacheprovider", *sorted(tests)], timeout)
    except subprocess.TimeoutExpired:
        return _about_all(tests, "tests", f"the series' tests ran past {timeout} s")
    if proc.returncode in (0, 5):  # 5: nothing collected
        return []
    problems = []
    for m in re.finditer(r"^(FAILED|ERROR) (\S+?)(?:::(\S+))?(?: - (.*))?$", proc.stdout, re.M):
        path = m[2]
        problems.append({"subject": tests.get(path, "?"), "file": path, "check": "tests",
                         "test": f"{path}::{m[3]}" if m[3] else path,
                         "detail": f"{m[1].lower()}: {path}{'::' + m[3] if m[3] else ''}"
                                   + (f" ({m[4]})" if m[4] else "")})
    if not problems:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        problems.append({"subject": next(iter(tests.values())), "file": ", ".join(sorted(tests)),
                         "check": "tests", "detail": f"pytest exited {proc.returncode}: {tail[0]}"})
    return problems
