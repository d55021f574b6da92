"""Virtual environments the project creates itself, in the cache, keyed by what goes in.

A venv is re-created only when its inputs change: the requirement lines (or lock texts), the
Python version and the installer (the pip that `python -m venv` brings: ensurepip's). It
counts as ready only once its `.complete` marker is written, so an interrupted install is
never mistaken for a ready environment (it is wiped and redone).

A venv made from hash locks (`ensure_locked_venv`) never resolves: the locks are complete,
so pip installs exactly the locked files (`--no-deps --require-hashes`) and `pip check`
then proves they fit together. No pip version, and nothing the index gained since the lock
was written, can change what goes in (pip 23.2's resolver, given the extra in
`uvicorn[standard]>=0.15`, asks the index again and refuses the newer uvicorn it finds).
"""

import ensurepip
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


def installer() -> str:
    """The pip a new venv gets (what `python -m venv` bootstraps)."""
    return f"pip {ensurepip.version()}"


def venv_key(requirements: list[str], extra: str = "") -> str:
    text = "\n".join([sys.version, installer(), *requirements, extra])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_dir(name: str, requirements: list[str], extra_key: str = "") -> Path:
    return cache_dir() / "venvs" / f"{name}-{venv_key(requirements, extra_key)}"


def locked_venv_dir(name: str, locks: list[Path]) -> Path:
    """Where ensure_locked_venv keeps the venv of `locks` (keyed by their text)."""
    return venv_dir(name, [], "\n".join(path.read_text() for path in locks))


def ensure_locked_venv(name: str, locks: list[Path], *, rebuild: bool = False,
                       log: Path | None = None) -> Path:
    """A venv holding exactly the packages of `locks` (hash-locked, complete): installed
    with --no-deps --require-hashes, then `pip check`; keyed by the locks' text."""
    texts = [path.read_text() for path in locks]
    args = ("--no-deps", "--require-hashes", *(a for path in locks for a in ("-r", str(path))))
    return ensure_venv(name, [], extra_key="\n".join(texts), install_args=args, check=True,
                       rebuild=rebuild, log=log)


def ensure_venv(name: str, requirements: list[str], extra_key: str = "",
                install_args: tuple[str, ...] = (), *, check: bool = False,
                rebuild: bool = False, log: Path | None = None) -> Path:
    """Path of a ready venv with `requirements` installed (pip output shown as progress, or
    written to `log` when the venv is made beside other work); `check`: run `pip check`
    after the install (a lock that is not closed fails it); `rebuild`: create it again even
    if it is marked ready (its user found it broken)."""
    venv = venv_dir(name, requirements, extra_key)
    if (venv / ".complete").exists() and not rebuild:
        return venv
    try:
        with file_lock(venv.parent / f".{venv.name}.lock", _log):  # one creator, others wait
            if rebuild:
                (venv / ".complete").unlink(missing_ok=True)
            if (venv / ".complete").exists():
                return venv
            return _create(venv, name, requirements, install_args, check, log)
    except OSError as exc:  # a read-only or full cache
        raise OverlayError(f"venv {name}: cannot create {venv}: {exc}") from exc


def _create(venv: Path, name: str, requirements: list[str], install_args: tuple[str, ...],
            check: bool, log: Path | None) -> Path:
    shutil.rmtree(venv, ignore_errors=True)
    _log.info(f"creating {name} environment in {venv} ({len(requirements)} requirement(s), "
              f"{installer()}{', output in ' + str(log) if log else ''})")
    started = time.monotonic()
    out = open(log, "w") if log else None
    try:
        run = {"check": True, "stdout": out, "stderr": out and subprocess.STDOUT}
        subprocess.run([sys.executable, "-m", "venv", str(venv)], **run)
        if requirements or install_args:
            subprocess.run([str(python_of(venv)), "-m", "pip", "install",
                            "--progress-bar", "off", *install_args, *requirements], **run)
        if check:
            subprocess.run([str(python_of(venv)), "-m", "pip", "check"], **run)
    except subprocess.CalledProcessError as exc:
        raise OverlayError(f"venv {name}: `{' '.join(map(str, exc.cmd[:4]))} ...` failed "
                           f"(exit {exc.returncode}); see pip's output "
                           f"{'in ' + str(log) if log else 'above'}") from exc
    finally:
        if out:
            out.close()
    (venv / ".complete").write_text(f"{time.monotonic() - started:.0f} s\n")
    _log.info(f"{name} ready in {time.monotonic() - started:.0f} s")
    return venv
