"""make cross-check: install two modes' wheels side by side and diff the installed trees."""

import subprocess
import sys
from pathlib import Path

from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import sha256_file


def install_tree(wheel: Path, target: Path, python: str = sys.executable) -> Path:
    """Install `wheel` (no deps, no bytecode) into `target` with pip: the installed tree."""
    proc = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-compile", "--no-index", "--target", str(target), str(wheel)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise OverlayError(f"pip install --target {target} {wheel.name} failed:\n"
                           f"{(proc.stdout + proc.stderr).strip()[-2000:]}")
    return target


def tree_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


def compare_installed(wheel_a: Path, wheel_b: Path, workdir: Path) -> dict[str, str]:
    """Install both wheels side by side; {path: 'only in A' | 'only in B' | 'differs'}."""
    a = tree_digests(install_tree(wheel_a, workdir / "a"))
    b = tree_digests(install_tree(wheel_b, workdir / "b"))
    diff = {p: "only in A" for p in a.keys() - b.keys()}
    diff.update({p: "only in B" for p in b.keys() - a.keys()})
    diff.update({p: "differs" for p in a.keys() & b.keys() if a[p] != b[p]})
    return dict(sorted(diff.items()))

