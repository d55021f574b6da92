"""Virtual environments the project creates itself, in the cache, keyed by what goes in.

A venv is re-created only when its inputs (the requirement lines and the Python version)
change; it counts as ready only once its `.complete` marker is written, so an interrupted
install is never mistaken for a ready environment (it is wiped and redone).
"""

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from vllm_overlay.common import log
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import file_lock
from vllm_overlay.common.paths import cache_dir

_log = log.stage("venv")


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
        with file_lock(venv.parent / f".{venv.name}.lock", _log):  # one creator, others wait
            if (venv / ".complete").exists():
                return venv
            return _create(venv, name, requirements, install_args)
    except OSError as exc:  # a read-only or full cache
        raise OverlayError(f"venv {name}: cannot create {venv}: {exc}") from exc


def _create(venv: Path, name: str, requirements: list[str], install_args: tuple[str, ...],
            ) -> Path:
    shutil.rmtree(venv, ignore_errors=True)
    _log.info(f"creating {name} environment in {venv} ({len(requirements)} requirement(s))")
    started = time.monotonic()
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        if requirements or install_args:
            subprocess.run([str(python_of(venv)), "-m", "pip", "install",
                            "--progress-bar", "off", *install_args, *requirements], check=True)
    except subprocess.CalledProcessError as exc:
        raise OverlayError(f"venv {name}: `{' '.join(map(str, exc.cmd[:4]))} ...` failed "
                           f"(exit {exc.returncode}); see pip's output above") from exc
    (venv / ".complete").write_text(f"{time.monotonic() - started:.0f} s\n")
    _log.info(f"{name} ready in {time.monotonic() - started:.0f} s")
    return venv
