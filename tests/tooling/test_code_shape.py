"""The package stays readable: no function longer than a screen and a half."""

import ast

from vllm_overlay.common.paths import REPO

MAX_LINES = 80


def long_functions(root=REPO / "vllm_overlay", limit: int = MAX_LINES) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}: {lines} lines")
    return found


def test_no_function_is_longer_than_the_limit():
    assert long_functions() == []


def test_the_check_sees_a_long_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}")
    assert [line.split(":")[-1] for line in long_functions(tmp_path)] == [f" {MAX_LINES + 1} lines"]
