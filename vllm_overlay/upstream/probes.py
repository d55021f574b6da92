"""Probes: does an upstream release already have what a patch introduces?

Each patch declares `Probe: <kind> <args>` trailers. A probe reads the release's source tree
(never imports or installs it), so it is side-effect free. Kinds:

  defines <path>::<Dotted.Name>          the module defines that class / function / method /
                                         class-level attribute (assigned or annotated)
  imports-resolve <path>                 every absolute `vllm.*` module the file imports
                                         (anywhere in it) exists as a .py file or package dir
  annotation <path>::<Class.attr> <text> the attribute's annotation, as ast.unparse prints
                                         it, equals <text>
  mentions <path>::<Dotted.Name> <ident> the definition's code uses the identifier <ident>
                                         (a name or an attribute: `x` or `self.x`)
  compares <path>::<Dotted.Name> <ident> a comparison (<, <=, ==, ...) in the definition's
                                         code has an operand that uses <ident>: the name
                                         is checked, not only passed along

A patch is "already upstream" in a release when all of its probes hold there.
"""

import ast
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.series import Patch
from vllm_overlay.upstream import pydefs

KINDS = ("defines", "imports-resolve", "annotation", "mentions", "compares")
_IDENT_RE = re.compile(r"^[A-Za-z_]\w*$")
_DOTTED_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class Probe:
    kind: str
    path: str
    name: str = ""      # dotted name for defines / annotation
    expected: str = ""  # annotation text, normalised through ast
    line: str = ""      # the trailer as written

    def __str__(self) -> str:
        return self.line


@dataclass(frozen=True)
class Result:
    holds: bool
    why: str


def _line_number(patch: Patch, text: str) -> int:
    for number, line in enumerate(patch.path.read_text(errors="replace").splitlines(), 1):
        if line.strip() == f"Probe: {text}":
            return number
    return 0


def parse(patch: Patch) -> list[Probe]:
    """The patch's probes; a malformed one is an error naming the patch and the line."""
    probes = []
    for text in patch.probes:
        try:
            probes.append(_parse_one(text))
        except ValueError as exc:
            where = f"{patch.path}:{_line_number(patch, text)}"
            raise OverlayError(f"{where}: patch {patch.name}: bad probe 'Probe: {text}': "
                               f"{exc}") from None
    return probes


def _check_path(path: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or not path.endswith(".py"):
        raise ValueError(f"{path!r} must be a relative path to a .py file inside the tree")
    return path


def _parse_one(text: str) -> Probe:
    kind, _, rest = text.strip().partition(" ")
    rest = rest.strip()
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if kind == "imports-resolve":
        if not rest or " " in rest:
            raise ValueError("expected exactly one argument: <path>")
        return Probe(kind, _check_path(rest), line=text)
    target, _, extra = rest.partition(" ")
    path, sep, name = target.partition("::")
    if not sep or not _DOTTED_RE.match(name):
        raise ValueError(f"expected <path>::<Dotted.Name>, got {target!r}")
    _check_path(path)
    if kind == "defines":
        if extra.strip():
            raise ValueError(f"unexpected text after the name: {extra.strip()!r}")
        return Probe(kind, path, name, line=text)
    if kind in ("mentions", "compares"):
        if not _IDENT_RE.match(extra.strip()):
            raise ValueError(f"{kind} needs one identifier after the name, got "
                             f"{extra.strip()!r}")
        return Probe(kind, path, name, extra.strip(), line=text)
    if "." not in name:
        raise ValueError(f"annotation needs <Class.attr>, got {name!r}")
    if not extra.strip():
        raise ValueError("annotation needs the expected annotation text after the name")
    try:
        expected = ast.unparse(pydefs.parse(extra.strip(), mode="eval").body)
    except SyntaxError as exc:
        raise ValueError(f"annotation text {extra.strip()!r} is not a Python expression: "
                         f"{exc.msg}") from None
    return Probe(kind, path, name, expected, line=text)


# --- evaluation ----------------------------------------------------------------------------


def _module(tree: Path, path: str) -> ast.Module | str:
    """The parsed file, or a reason string when it is missing or unparsable."""
    file = tree / path
    if not file.is_file():
        return f"{path} does not exist"
    try:
        return pydefs.parse(file.read_bytes(), filename=path)
    except (SyntaxError, ValueError) as exc:
        return f"{path} does not parse: {exc}"


def _scope_statements(body: list[ast.stmt]):
    """Statements of one scope, looking into if/try/with blocks (TYPE_CHECKING, fallbacks)."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try, ast.With, ast.AsyncWith)):
            for block in ("body", "orelse", "finalbody"):
                yield from _scope_statements(getattr(stmt, block, []) or [])
            for handler in getattr(stmt, "handlers", []):
                yield from _scope_statements(handler.body)


def _defined(body: list[ast.stmt], name: str) -> list[ast.AST]:
    """Nodes in this scope that bind `name` (class, def, assignment, annotated field)."""
    found = []
    for stmt in _scope_statements(body):
        if isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if stmt.name == name:
                found.append(stmt)
        elif isinstance(stmt, ast.AnnAssign):
            if isinstance(stmt.target, ast.Name) and stmt.target.id == name:
                found.append(stmt)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                if any(isinstance(t, ast.Name) and t.id == name for t in names):
                    found.append(stmt)
    return found


def _lookup(module: ast.Module, dotted: str) -> tuple[list[ast.AST], str]:
    """Resolve A.B.c through class bodies; returns (nodes binding the last part, reason)."""
    body, parts = module.body, dotted.split(".")
    for depth, part in enumerate(parts):
        nodes = _defined(body, part)
        if not nodes:
            where = ".".join(parts[:depth]) or "module level"
            return [], f"{part} is not defined at {where}"
        if depth < len(parts) - 1:
            classes = [n for n in nodes if isinstance(n, ast.ClassDef)]
            if not classes:
                return [], f"{'.'.join(parts[:depth + 1])} is not a class"
            body = [stmt for cls in classes for stmt in cls.body]
    return nodes, ""


def _module_exists(tree: Path, module: str) -> bool:
    base = tree.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or base.is_dir()


def _imported_modules(module: ast.Module) -> set[str]:
    """Absolute vllm.* modules named by every import statement in the file."""
    names = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {n for n in names if n == "vllm" or n.startswith("vllm.")}


def _uses(node: ast.AST, ident: str) -> bool:
    """Whether the code under `node` names `ident` (as a name or an attribute)."""
    return any((isinstance(n, ast.Name) and n.id == ident)
               or (isinstance(n, ast.Attribute) and n.attr == ident) for n in ast.walk(node))


def _code_probe(probe: Probe, nodes: list[ast.AST]) -> Result:
    """mentions / compares: look through the code of the definition(s) found."""
    for node in nodes:
        if probe.kind == "mentions" and _uses(node, probe.expected):
            return Result(True, f"{probe.name} uses {probe.expected}")
        if probe.kind == "compares":
            for cmp in ast.walk(node):
                if isinstance(cmp, ast.Compare) and any(
                        _uses(operand, probe.expected) for operand in [cmp.left, *cmp.comparators]):
                    return Result(True, f"{probe.name} compares {probe.expected} at line "
                                        f"{cmp.lineno}")
    verb = "uses" if probe.kind == "mentions" else "compares"
    return Result(False, f"{probe.path}: {probe.name} never {verb} {probe.expected}")


def check(probe: Probe, tree: Path) -> Result:
    module = _module(tree, probe.path)
    if isinstance(module, str):
        return Result(False, module)
    if probe.kind == "imports-resolve":
        modules = _imported_modules(module)
        missing = sorted(m for m in modules if not _module_exists(tree, m))
        if missing:
            return Result(False, f"{probe.path}: no module {', '.join(missing)}")
        return Result(True, f"all {len(modules)} vllm module(s) it imports exist")
    nodes, why = _lookup(module, probe.name)
    if not nodes:
        return Result(False, f"{probe.path}: {why}")
    if probe.kind == "defines":
        return Result(True, f"{probe.name} defined at line {nodes[-1].lineno}")
    if probe.kind in ("mentions", "compares"):
        return _code_probe(probe, nodes)
    annotated = [n for n in nodes if isinstance(n, ast.AnnAssign)]
    if not annotated:
        return Result(False, f"{probe.path}: {probe.name} has no annotation")
    got = ast.unparse(annotated[-1].annotation)
    if got != probe.expected:
        return Result(False, f"{probe.path}: {probe.name} is annotated {got!r}, "
                             f"not {probe.expected!r}")
    return Result(True, f"{probe.name}: {got}")
