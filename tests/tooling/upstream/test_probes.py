"""Probe kinds on a small source tree written here."""

import pytest

from vllm_overlay.upstream import probes
from vllm_overlay.common.errors import OverlayError

CONFIG = '''
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vllm.typing_only import Thing

MODULE_CONST = 1


@dataclass
class CompilationConfig:
    max_frames: int | None = None
    names: list[str] = field(default_factory=list)
    plain = 3

    class Inner:
        deep: "int"

    def method(self) -> int:
        import vllm.inside_function
        from vllm.pkg import sub, NAME
        from . import relative_is_ignored
        self.not_class_level = 1
        return 1

    def pack(self, frames):
        limit = min(self.max_batch, len(frames))
        self.replay(frames, self.max_frames)
        return [f for f in frames[:limit] if f <= self.max_total]
'''


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "vllm" / "config").mkdir(parents=True)
    (tmp_path / "vllm" / "config" / "c.py").write_text(CONFIG)
    (tmp_path / "vllm" / "typing_only.py").write_text("")
    (tmp_path / "vllm" / "inside_function.py").write_text("")
    (tmp_path / "vllm" / "pkg" / "sub").mkdir(parents=True)  # package dir; NAME is a name
    return tmp_path


def check(text, tree):
    return probes.check(probes._parse_one(text), tree)


@pytest.mark.parametrize("name, holds", [
    ("CompilationConfig", True), ("CompilationConfig.max_frames", True),
    ("CompilationConfig.names", True), ("CompilationConfig.plain", True),
    ("CompilationConfig.method", True), ("CompilationConfig.Inner.deep", True),
    ("MODULE_CONST", True), ("CompilationConfig.not_class_level", False),
    ("CompilationConfig.missing", False), ("MODULE_CONST.x", False), ("Nope", False)])
def test_defines(tree, name, holds):
    assert check(f"defines vllm/config/c.py::{name}", tree).holds is holds


def test_annotation(tree):
    assert check("annotation vllm/config/c.py::CompilationConfig.max_frames int | None",
                 tree).holds
    assert check("annotation vllm/config/c.py::CompilationConfig.max_frames Optional[int]",
                 tree).why.endswith("not 'Optional[int]'")
    assert not check("annotation vllm/config/c.py::CompilationConfig.plain int", tree).holds


def test_imports_resolve(tree):
    assert check("imports-resolve vllm/config/c.py", tree).holds
    (tree / "vllm" / "inside_function.py").unlink()
    result = check("imports-resolve vllm/config/c.py", tree)
    assert not result.holds and "vllm.inside_function" in result.why
    assert not check("imports-resolve vllm/absent.py", tree).holds


@pytest.mark.parametrize("ident, mentions, compares", [
    ("max_batch", True, False), ("max_frames", True, False), ("max_total", True, True),
    ("frames", True, False), ("f", True, True), ("min", True, False), ("absent", False, False)])
def test_mentions_and_compares(tree, ident, mentions, compares):
    target = "vllm/config/c.py::CompilationConfig.pack"
    assert check(f"mentions {target} {ident}", tree).holds is mentions
    result = check(f"compares {target} {ident}", tree)
    assert result.holds is compares
    if not compares:
        assert result.why.endswith(f"never compares {ident}")
    assert not check("mentions vllm/config/c.py::CompilationConfig.nope x", tree).holds


@pytest.mark.parametrize("text, message", [
    ("mentions vllm/a.py::A.b", "one identifier"),
    ("compares vllm/a.py::A.b x y", "one identifier"),
    ("compares vllm/a.py::A.b self.x", "one identifier"),
    ("exists vllm/a.py", "unknown kind 'exists'"),
    ("defines vllm/a.py", "<path>::<Dotted.Name>"),
    ("defines /etc/a.py::X", "relative path"),
    ("defines ../a.py::X", "relative path"),
    ("defines vllm/a.py::X extra", "unexpected text"),
    ("imports-resolve", "exactly one argument"),
    ("annotation vllm/a.py::Cls.attr", "expected annotation text"),
    ("annotation vllm/a.py::attr int", "<Class.attr>"),
    ("annotation vllm/a.py::C.a int |", "not a Python expression")])
def test_malformed_probes(text, message):
    with pytest.raises(ValueError, match=message.replace("|", r"\|")):
        probes._parse_one(text)


def test_parse_names_patch_and_line(tmp_path):
    from vllm_overlay.common.series import parse_patch

    path = tmp_path / "0001-x.patch"
    path.write_text("From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] x\n\nbody\n\n"
                    "Probe: defines vllm/a.py::A\nProbe: sniff vllm/a.py\n---\n"
                    "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n")
    with pytest.raises(OverlayError, match=r"0001-x.patch:7: patch 0001-x.patch: bad probe "
                                           r"'Probe: sniff vllm/a.py': unknown kind"):
        probes.parse(parse_patch(path))


def test_probes_parse_one_file_at_a_time_across_threads(tmp_path, monkeypatch):
    """make status checks releases in parallel threads; CPython 3.11's AST constructor is
    not thread-safe ("AST constructor recursion depth mismatch" on a cold cache), so every
    parse of upstream code is serialised (pydefs.parse)."""
    import ast
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    (tmp_path / "m.py").write_text("def f():\n    return 1\n")
    real, inside, most, guard = ast.parse, [0], [0], threading.Lock()

    def watched_parse(*args, **kwargs):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.01)  # long enough for another thread to come in, if it may
        try:
            return real(*args, **kwargs)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(ast, "parse", watched_parse)
    probe = probes._parse_one("defines m.py::f")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: probes.check(probe, tmp_path), range(16)))
    assert all(r.holds for r in results) and most[0] == 1
