"""The runtime test environment: vLLM 0.19.1's real runtime + test packages + a vLLM wheel.

One base venv (cached, keyed by the hash-locked runtime and test packages in locks/ and the
Python version) holds everything except vLLM itself: about 11 GB, created once.
Each vLLM wheel (the overlay wheel, upstream's own wheel) gets a thin venv of its own,
keyed by the wheel's sha256, whose site-packages holds only that wheel (installed with
--no-deps) and a .pth line that adds the base venv's site-packages behind it. So
`import vllm` resolves to the installed wheel in site-packages, the `vllm` entry point
exists, and the 11 GB are installed once for both.
"""

import sys
from pathlib import Path

from vllm_overlay.wheelbuild import constraints
from vllm_overlay.common import log, venvs
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import sha256_file
from vllm_overlay.common.requirements import requirement_lines
from vllm_overlay.common.paths import REPO, cache_dir

TEST_REQUIREMENTS = REPO / "tests" / "upstream" / "requirements-test.txt"
_log = log.stage("venv")


def test_requirements(path: Path = TEST_REQUIREMENTS) -> list[str]:
    return requirement_lines(path.read_text())


def ensure_base(arch: str = "x86_64", repo: Path = REPO, log: Path | None = None) -> Path:
    """The cached base venv, no vLLM: the hash-locked runtime of the pin (locks/runtime-<arch>.txt,
    which make wheel publishes as constraints-<arch>.txt) and the locked test packages, installed
    exactly as locked (--no-deps --require-hashes, then pip check): a missing or wrong hash, or a
    lock that is not closed, fails the install, so each build proves the lock."""
    files = [constraints.runtime_lock(arch, repo), constraints.test_lock(arch, repo)]
    for path in files:
        constraints.read_lock(path)  # a missing or unpinned lock: the error names `make lock`
    return venvs.ensure_locked_venv("runtime", files, log=log)


_INSTALLED = ("import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: "
              "[d.version, d.requires or []] for d in m.distributions()}))")


def check_metadata(base: Path, arch: str = "x86_64", repo: Path = REPO) -> int:
    """The recorded lock metadata (locks/metadata-<arch>.json, read by the closure test) must
    be what the hash-checked install put into the venv: same version, same Requires-Dist.
    Returns the number of packages compared."""
    import json
    import subprocess

    from vllm_overlay.wheelbuild import lockmeta
    from vllm_overlay.common.requirements import normalize_name

    path = lockmeta.metadata_path(arch, repo)
    recorded = json.loads(path.read_text())["packages"]
    out = subprocess.run([str(venvs.python_of(base)), "-c", _INSTALLED], capture_output=True,
                         text=True, check=True).stdout
    installed = {normalize_name(k): v for k, v in json.loads(out).items()}
    wrong, missing = [], []
    for name, meta in recorded.items():
        if name not in installed:
            missing.append(f"{name}: not installed")
        elif installed[name][0] != meta["version"] or (
                sorted(installed[name][1]) != sorted(meta["requires_dist"])):
            wrong.append(f"{name}: recorded {meta['version']} {sorted(meta['requires_dist'])}, "
                         f"installed {installed[name][0]} {sorted(installed[name][1])}")
    if wrong or missing:
        raise OverlayError(f"{path} does not describe the installed locks ({base}): "
                           + "; ".join(wrong + missing))
    return len(recorded)


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise OverlayError(f"{venv}: no lib/python*/site-packages")
    return found[0]


def ensure_vllm_env(base: Path, wheel: Path, sha256: str | None = None,
                    filename: str | None = None) -> Path:
    """A thin venv over `base` with exactly `wheel` installed (keyed by its sha256).

    `filename` names a wheel stored under another name (the sha256-keyed download cache).
    """
    sha256 = sha256 or sha256_file(wheel)
    venv = cache_dir() / "venvs" / f"vllm-{sha256[:16]}-over-{base.name}"
    if (venv / ".complete").exists():
        (venv / ".complete").touch()  # last use, for prune_vllm_envs
        return venv
    prune_vllm_envs()
    check_free_space(cache_dir())
    import shutil
    import subprocess
    import tempfile
    import time

    shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    _log.info(f"installing {filename or wheel.name} (--no-deps) into {venv}")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # A .pth line starting with "import" runs at start-up: addsitedir also processes the
    # base's own .pth files, which a plain path line would not.
    (site_packages(venv) / "_overlay_runtime_base.pth").write_text(
        f"import site; site.addsitedir({str(site_packages(base))!r})\n")
    with tempfile.TemporaryDirectory(prefix="wheel-") as tmp:
        named = Path(tmp) / (filename or wheel.name)  # pip needs the wheel's own file name
        named.symlink_to(wheel.resolve())
        proc = subprocess.run([str(venvs.python_of(base)), "-m", "pip", "--python",
                               str(venvs.python_of(venv)), "install", "--no-deps",
                               "--no-compile", "--progress-bar", "off", "-q", str(named)])
    if proc.returncode:
        raise OverlayError(f"{filename or wheel.name}: pip install --no-deps into {venv} failed "
                           f"(exit {proc.returncode}); see pip's output above")
    (venv / ".complete").write_text(f"{filename or wheel.name} {sha256}\n")
    _log.info(f"{filename or wheel.name} installed in {time.monotonic() - started:.0f} s")
    return venv


STALE_DAYS = 3
KEEP = 4  # per-wheel venvs kept however recent: pristine + overlay, and a build or two back
BUSY_SECONDS = 3600  # used this recently: maybe another work tree's, never removed
NEEDED_BYTES = 2 * 1024**3  # one per-wheel venv (about 1.1 GB) with room to spare


def prune_vllm_envs(max_age_days: float = STALE_DAYS, keep: int = KEEP) -> None:
    """Remove per-wheel venvs (1.1 GB each; every overlay build makes a new one): those
    unused for days, and beyond the `keep` most recently used those unused for an hour.

    Never the recently used ones: other work trees may share this cache right now.
    """
    import shutil
    import time

    markers = sorted((cache_dir() / "venvs").glob("vllm-*-over-*/.complete"),
                     key=lambda marker: marker.stat().st_mtime, reverse=True)
    for rank, marker in enumerate(markers):
        idle = time.time() - marker.stat().st_mtime
        if idle > max_age_days * 86400 or (rank >= keep and idle > BUSY_SECONDS):
            _log.info(f"removing {marker.parent.name} (unused for {idle / 3600:.1f} h)")
            shutil.rmtree(marker.parent, ignore_errors=True)


def check_free_space(where: Path, needed: int = NEEDED_BYTES) -> None:
    """Refuse before a 1 GB install rather than fail half-way with ENOSPC."""
    import shutil

    free = shutil.disk_usage(where).free
    if free < needed:
        raise OverlayError(f"{where}: {free / 1024**3:.1f} GB free, a per-wheel venv needs "
                           f"{needed / 1024**3:.0f} GB; free disk space (the per-wheel venvs "
                           f"there, vllm-*-over-*, can be deleted: they are rebuilt on demand)")


if __name__ == "__main__":  # pragma: no cover - manual use: python -m vllm_overlay.testing.testenv
    print(ensure_base())
