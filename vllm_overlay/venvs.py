"""Virtual environments the project creates itself, in the cache, keyed by what goes in.

A venv is re-created only when its inputs (the requirement lines and the Python version)
change; it counts as ready only once its `.complete` marker is written, so an interrupted
install is never mistaken for a ready environment (it is wiped and redone).
"""

import fcntl
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .errors import OverlayError
from .paths import cache_dir


def venv_key(requirements: list[str], extra: str = "") -> str:
    text = "\n".join([sys.version, *requirements, extra])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(name: str, requirements: list[str], extra_key: str = "",
                install_args: tuple[str, ...] = ()) -> Path:
    """Path of a ready venv with `requirements` installed (pip output shown as progress)."""
    venv = cache_dir() / "venvs" / f"{name}-{venv_key(requirements, extra_key)}"
    if (venv / ".complete").exists():
        return venv
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        lock = open(venv.parent / f".{venv.name}.lock", "w")
    except OSError as exc:
        raise OverlayError(f"venv {name}: cannot create {venv}: {exc}") from exc
    with lock:  # two cold runs: one creates, the other waits and then uses it
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"venv: waiting for another process creating {venv}", file=sys.stderr,
                  flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".complete").exists():
            return venv
        return _create(venv, name, requirements, install_args)


def _create(venv: Path, name: str, requirements: list[str], install_args: tuple[str, ...],
            ) -> Path:
    shutil.rmtree(venv, ignore_errors=True)
    print(f"venv: creating {name} environment in {venv} ({len(requirements)} requirement(s))",
          file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        if requirements:
            subprocess.run([str(python_of(venv)), "-m", "pip", "install",
                            "--progress-bar", "off", *install_args, *requirements], check=True)
    except subprocess.CalledProcessError as exc:
        raise OverlayError(f"venv {name}: `{' '.join(map(str, exc.cmd[:4]))} ...` failed "
                           f"(exit {exc.returncode}); see pip's output above") from exc
    (venv / ".complete").write_text(f"{time.monotonic() - started:.0f} s\n")
    print(f"venv: {name} ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return venv
