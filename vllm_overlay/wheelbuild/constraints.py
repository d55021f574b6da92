"""The hash-locked runtime: locks/runtime-<arch>.txt, and wheelhouse/constraints-<arch>.txt.

`make lock` resolves the pin's runtime (the upstream wheel's Requires-Dist without extras,
written to locks/runtime-<arch>.in) with `uv pip compile --generate-hashes` for CPython
3.11 on manylinux_2_31, and the test packages on top of it (locks/test-<arch>.txt: only
what the runtime lock does not already pin). Both are committed: a build never resolves.
`make test` installs its runtime venv from exactly these files (--no-deps --require-hashes,
then pip check), so every test run proves the lock; `make wheel` publishes the runtime lock
plus the wheel's own hash as wheelhouse/constraints-<arch>.txt, for the user's install
(INSTALL_COMMAND, printed at the top of that file). It installs the complete lock without
resolving: pip 23.2 (what a stock Python 3.11 venv brings) given `-c constraints vllm==X`
resolves again, asks the index about `uvicorn[standard]` as a requirement of its own and
refuses the newer uvicorn it finds there; with --no-deps no pip asks the index anything but
the locked files, and `pip check` proves they fit together.
"""

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

from vllm_overlay.wheelbuild import supplyenv
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.http import redact
from vllm_overlay.common.paths import REPO, cache_dir
from vllm_overlay.common.requirements import drop_entries, requirement_lines
# the compiled-lock parser, under the name this module's callers use
from vllm_overlay.common.requirements import lock_entries as entries
from vllm_overlay.common.requirements import read_lock  # noqa: F401
from vllm_overlay.common import pipindex, wheelfile

PYTHON = "3.11"  # the interpreter the locks are resolved for (the test environment's)
PLATFORM = "manylinux_2_31"  # the upstream wheels' platform tag
TEST_REQUIREMENTS = Path("tests") / "upstream" / "requirements-test.txt"
RUNTIME_REQUIREMENTS = "requirements/cuda.txt"  # inside the sdist; it includes common.txt


_snapshots = threading.local()  # repo -> the locks/ snapshot of the build this thread runs


def sdist_requirements(sdist: Path, top: str = RUNTIME_REQUIREMENTS) -> list[str]:
    """The runtime pins the sdist declares: `top` with its `-r` includes expanded, in order.
    The runtime venv no longer installs these directly: it installs locks/runtime-<arch>.txt,
    which `make lock` resolves from the wheel's Requires-Dist (setup.py's copy of them); after
    a pin move (`make rebase`) run `make lock` so the two agree again."""
    try:
        with tarfile.open(sdist) as tar:
            root = tar.getmembers()[0].name.split("/", 1)[0]

            def read(name: str, seen: tuple[str, ...]) -> list[str]:
                if name in seen:
                    raise OverlayError(f"{sdist.name}: {name} includes itself via -r")
                member = tar.extractfile(f"{root}/{name}")
                if member is None:
                    raise OverlayError(f"{sdist.name}: {name} is not a file")
                out = []
                for line in requirement_lines(member.read().decode()):
                    if line.startswith(("-r ", "--requirement ")):
                        include = str(Path(name).parent / line.split(None, 1)[1])
                        out += read(include, (*seen, name))
                    else:
                        out.append(line)
                return out

            return read(top, ())
    except KeyError as exc:
        raise OverlayError(f"{sdist.name}: no {exc.args[0]} in the sdist") from exc
    except (tarfile.TarError, OSError) as exc:
        raise OverlayError(f"{sdist}: cannot read requirements: {exc}") from exc


def lock_dir(repo: Path = REPO) -> Path:
    """repo/locks; while a build runs (snapshot_locks), the copy it took under its lock."""
    return getattr(_snapshots, "dirs", {}).get(Path(repo).resolve(), repo / "locks")


def lock_label(path: Path) -> str:
    """How SBOM, provenance and constraints name a lock file: its path in the repository."""
    return f"locks/{path.name}"


@contextlib.contextmanager
def snapshot_locks(repo: Path, dest: Path):
    """Copy repo/locks to `dest` and read every lock of this thread from there until the
    block ends: the build key, the SBOM, the provenance and the constraints all name the
    lock as it was when the build took it (an edit made later is the next build's input).
    Errors name the user's files, not the copy."""
    source, key = repo / "locks", Path(repo).resolve()
    try:
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            dest.mkdir()
    except OSError as exc:
        raise OverlayError(f"{source}: cannot read the locks: {exc}") from exc
    before = getattr(_snapshots, "dirs", {})
    _snapshots.dirs = {**before, key: dest}
    try:
        yield dest
    except OverlayError as exc:
        if str(dest) not in str(exc):
            raise
        raise OverlayError(str(exc).replace(str(dest), str(source))) from exc
    finally:
        _snapshots.dirs = before


def runtime_lock(arch: str, repo: Path = REPO) -> Path:
    return lock_dir(repo) / f"runtime-{arch}.txt"


def test_lock(arch: str, repo: Path = REPO) -> Path:
    return lock_dir(repo) / f"test-{arch}.txt"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


INSTALL_COMMAND = "pip install --no-deps --require-hashes -r constraints-{arch}.txt && pip check"


def constraints_text(arch: str, wheels: dict[str, str], version: str, repo: Path = REPO) -> str:
    """The runtime lock plus `vllm==<version>` with the sha256 of each wheel of it."""
    lock = runtime_lock(arch, repo)
    return render_constraints(arch, wheels, version, lock_label(lock), read_lock(lock)[0])


def render_constraints(arch: str, wheels: dict[str, str], version: str, label: str,
                       text: str) -> str:
    """constraints-<arch>.txt from the lock's text, named by its `label` in the repository."""
    names = "".join(f"# vllm wheel: {name}\n" for name in sorted(wheels))
    hashes = "".join(f" \\\n    --hash=sha256:{wheels[name]}" for name in sorted(wheels))
    return (f"# Hash-locked runtime of vllm {version} ({arch}, CPython {PYTHON}), from "
            f"{label} (make lock).\n"
            f"# Install (with the internal index in pip's index settings):\n"
            f"# {INSTALL_COMMAND.format(arch=arch)}\n"
            f"{text}{names}vllm=={version}{hashes}\n")


def requires_dist(wheel: Path, version: str, name: str | None = None) -> list[str]:
    """The runtime Requires-Dist lines of a vLLM wheel (extras left out); `name`: the wheel's
    file name when it is stored under another (the sha256 cache)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            metadata = zf.read(wheelfile.dist_info(version) + "METADATA").decode()
    except (zipfile.BadZipFile, KeyError) as exc:
        raise OverlayError(f"{name or wheel.name} ({wheel}): not a valid wheel of vllm "
                           f"{version}: {exc}") from exc
    lines = [m[1] for m in re.finditer(r"^Requires-Dist: (.+)$", metadata, re.M)]
    return [line for line in lines if "extra ==" not in line]


def uv_compile(sources: list[str], out: str, arch: str,
               constraints: list[str] = ()) -> tuple[list[str], dict[str, str]]:
    """The `uv pip compile` command line and environment: pip's index settings (pip config
    and PIP_INDEX_URL / PIP_EXTRA_INDEX_URL, as common/pipindex.py reads them) passed as
    uv's own flags, so the lock is resolved where pip installs from; uv's cache inside
    VLLM_OVERLAY_CACHE (UV_CACHE_DIR), like every other download of the project."""
    cmd = [str(supplyenv.bin_dir() / "uv"), "pip", "compile", "--generate-hashes", "--quiet",
           "--python-version", PYTHON, "--python-platform", f"{arch}-{PLATFORM}",
           *_index_args(), "--custom-compile-command", f"make lock ARCH={arch}",
           "--output-file", out, *sources, *(a for c in constraints for a in ("-c", c))]
    return cmd, _uv_env()


def _index_args() -> list[str]:
    """pip's indexes as uv flags, with pip's semantics: pip takes the best match over all its
    indexes, while uv by default takes a package from the first index that has it, and puts
    --extra-index-url before --index-url (a partial local mirror in pip's extra indexes then
    hides PyPI's versions: `lark==1.2.2` unsatisfiable)."""
    indexes = pipindex.pip_index_urls()
    return ["--index-url", indexes[0], *(a for url in indexes[1:]
                                         for a in ("--extra-index-url", url)),
            "--index-strategy", "unsafe-best-match"]


def _uv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UV_INDEX", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX"))}
    return {**env, "UV_CACHE_DIR": str(cache_dir() / "uv")}


def compile_tool_lock(source: Path, out: Path) -> None:
    """A tool venv's lock (the supply tools, twine): `source`'s pins and all they need, with
    hashes, for every platform and CPython >= 3.11 (`--universal`), so the venv is the same
    whenever and wherever it is made (venvs.ensure_locked_venv)."""
    cmd = [str(supplyenv.bin_dir() / "uv"), "pip", "compile", "--universal", "--generate-hashes",
           "--quiet", "--python-version", PYTHON, *_index_args(),
           "--custom-compile-command", "make lock", "--output-file", out.name, source.name]
    print(f"lock: {' '.join(redact(a) for a in cmd[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=source.parent, capture_output=True, text=True, env=_uv_env())
    if proc.returncode:
        raise OverlayError(f"uv pip compile ({out}) failed (exit {proc.returncode}):\n"
                           f"{proc.stderr.strip()}")


def compile_lock(sources: list[str], out: str, arch: str, cwd: Path,
                 constraints: list[str] = ()) -> str:
    """`uv pip compile --generate-hashes` of `sources` (paths relative to cwd) -> text."""
    cmd, env = uv_compile(sources, out, arch, constraints)
    print(f"lock: {' '.join(redact(a) for a in cmd[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise OverlayError(f"uv pip compile ({out}) failed (exit {proc.returncode}):\n"
                           f"{proc.stderr.strip()}")
    return (cwd / out).read_text()


def source_header(upstream_version: str, wheel_name: str) -> str:
    """The first line of locks/runtime-<arch>.in: which pin the lock was resolved for."""
    return f"# Requires-Dist of vllm {upstream_version} ({wheel_name}), extras left out (make lock)\n"


def make_lock(arch: str, upstream_wheel: Path, wheel_name: str, upstream_version: str,
              repo: Path = REPO) -> None:
    """Write locks/runtime-<arch>.{in,txt} and locks/test-<arch>.txt (network: PyPI)."""
    locks = lock_dir(repo)
    locks.mkdir(exist_ok=True)
    source = locks / f"runtime-{arch}.in"
    lines = requires_dist(upstream_wheel, upstream_version, wheel_name)
    source.write_text(source_header(upstream_version, wheel_name)
                      + "".join(f"{line}\n" for line in lines))
    runtime = compile_lock([source.name], runtime_lock(arch, repo).name, arch, locks)
    test_in = Path("..") / TEST_REQUIREMENTS
    joint = compile_lock([source.name, str(test_in)], f".test-{arch}.joint.txt", arch, locks,
                         [runtime_lock(arch, repo).name])
    (locks / f".test-{arch}.joint.txt").unlink()
    test_lock(arch, repo).write_text(drop_entries(joint, set(entries(runtime))))
    print(f"lock: {runtime_lock(arch, repo)} ({len(entries(runtime))} packages), "
          f"{test_lock(arch, repo)} ({len(entries(test_lock(arch, repo).read_text()))} more "
          "for the tests)", file=sys.stderr)
