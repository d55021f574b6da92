"""The definitions of one Python source file, by dotted name, normalised for comparison.

A definition is a class or a function (method) directly in the module or in a class body;
a function's nested defs are part of that function. A class's own code is its body without
its methods and nested classes (those are definitions of their own); `<module>` is the
module's code outside its top-level definitions. Each definition has its line range
(decorators included), the hash of its normalised AST (ast.dump without positions, bare
string statements such as docstrings removed: formatting, comments and docstrings do not
count) and the same hash with its own name blanked (to recognise a renamed definition).
AST only: nothing is imported.
"""

import ast
import hashlib
import threading
from dataclasses import dataclass

MODULE = "<module>"
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_KEEP_IDENTS = 3  # identifiers per definition used to pre-select files when searching
# CPython 3.11's AST constructor is not thread-safe: parses in parallel threads (make status
# evaluates releases side by side) can fail with "SystemError: AST constructor recursion
# depth mismatch" (seen on a cold cache). One parse at a time.
_PARSE = threading.Lock()


def parse(source: str | bytes, filename: str = "<unknown>", mode: str = "exec") -> ast.AST:
    """ast.parse, one thread at a time (every parse of upstream code goes through here)."""
    with _PARSE:
        return ast.parse(source, filename=filename, mode=mode)


@dataclass(frozen=True)
class Definition:
    name: str              # dotted, or MODULE
    start: int             # first line (decorators included), 1-based
    end: int               # last line
    dump: str              # hash of the normalised AST
    body: str              # the same with the definition's own name blanked
    idents: tuple = ()     # a few long identifiers it uses (never its own name)
    skip: tuple = ()       # (start, end) ranges inside it that belong to child definitions

    def source(self, lines: list[str]) -> list[str]:
        """Its own source lines (child definitions of a class or module left out)."""
        out, at = [], self.start
        for a, b in sorted(self.skip):
            out += lines[at - 1:a - 1]
            at = max(at, b + 1)
        return out + lines[at - 1:self.end]


class _StripStrings(ast.NodeTransformer):
    """Drop bare string statements (docstrings, attribute docstrings): no runtime effect."""

    def generic_visit(self, node):
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                setattr(node, field, [s for s in block if not (
                    isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                    and isinstance(s.value.value, str))])
        return node


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _own(node):
    """A shallow copy of a class / module without its child definitions."""
    copy = type(node)(**{f: getattr(node, f) for f in node._fields})
    copy.body = [s for s in node.body if not isinstance(s, _DEFS)]
    return copy


def _hashes(node) -> tuple[str, str]:
    """(hash of the dump, the same with the node's own name blanked)."""
    dump = ast.dump(node)  # "FunctionDef(name='f', ..." / "ClassDef(name='K', ..."
    return _hash(dump), _hash(dump.replace(f"(name={node.name!r}", "(name=''", 1))


def _idents(node, own_name: str) -> tuple:
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            names.add(sub.attr)
        elif isinstance(sub, ast.arg):
            names.add(sub.arg)
    names.discard(own_name)
    return tuple(sorted(names, key=lambda n: (-len(n), n))[:_KEEP_IDENTS])


def _first_line(node) -> int:
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def index(source: str) -> dict[str, Definition]:
    """name -> Definition of every definition in the source (SyntaxError if it does not
    parse)."""
    tree = _StripStrings().visit(parse(source))  # line ranges of the rest stay
    out: dict[str, Definition] = {}
    total = len(source.splitlines())

    def children(body):
        return [s for s in body if isinstance(s, _DEFS)]

    def ranges(body):
        return tuple((_first_line(c), c.end_lineno) for c in children(body))

    def add(node, prefix: str):
        name = prefix + node.name
        kept = _own(node) if isinstance(node, ast.ClassDef) else node
        dump, body = _hashes(kept)
        out[name] = Definition(name, _first_line(node), node.end_lineno, dump, body,
                               _idents(kept, node.name),
                               ranges(node.body) if kept is not node else ())
        if kept is not node:
            for child in children(node.body):
                add(child, name + ".")

    for node in children(tree.body):
        add(node, "")
    own = _hash(ast.dump(_own(tree)))
    out[MODULE] = Definition(MODULE, 1, max(total, 1), own, own, (), ranges(tree.body))
    return out


def innermost(defs: dict[str, Definition], line: int) -> str:
    """The definition a source line belongs to: the smallest one containing it (classes
    are entered, functions are not: their nested defs have no entry), else MODULE."""
    best, size = MODULE, None
    for d in defs.values():
        if d.name != MODULE and d.start <= line <= d.end and (size is None or
                                                              d.end - d.start < size):
            best, size = d.name, d.end - d.start
    return best
