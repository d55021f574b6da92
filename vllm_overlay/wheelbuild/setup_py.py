"""Build through vLLM's own setup.py: MODE=precompiled and MODE=source.

Both run the patched tree's setup.py exactly as upstream's release Dockerfile does
(`setup.py bdist_wheel --py-limited-api=cp38`), in a build venv the project creates from
the tree's requirements/build.txt. precompiled: setup.py takes the compiled members from
the sha256-verified upstream wheel in the cache (VLLM_PRECOMPILED_WHEEL_LOCATION, a local
file, so setup.py never downloads). source: a full CUDA build with the local nvcc, after a
preflight that says what is missing. The result goes through wheelhouse.store (lock,
verify, rename, manifest, SHA256SUMS), like the overlay mode's.

File names: setup.py names the wheel `vllm-<VERSION>-cp38-abi3-linux_<arch>.whl` (its
WHEEL Tag equals upstream's own). Upstream's upload script renames linux -> manylinux_2_31
without auditwheel; we do not, so the name is honest and never collides with the overlay
mode's manylinux wheel. The source mode adds `.cu<XYZ>` to the local label (vLLM's own
convention for builds against another CUDA), so it cannot collide with precompiled either.
"""

import os
import platform
import re
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from vllm_overlay.wheelbuild import apply, beside, constraints, fetch, key, record, sbom, verify
from vllm_overlay.wheelbuild import wheelhouse as wheelhouse_store
from vllm_overlay.wheelbuild.overlay import VERSION_FILE
from vllm_overlay.wheelbuild.record import BuildRecord
from vllm_overlay.wheelbuild.zipraw import epoch_to_date_time
from vllm_overlay.wheelbuild.preflight import SourceConfig, cuda_tag, source_preflight
from vllm_overlay.common import log as log_module
from vllm_overlay.common import pin, series, venvs
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.gittree import GitTree
from vllm_overlay.common.paths import BUILD_TREES, REPO
from vllm_overlay.common.requirements import requirement_names
from vllm_overlay.common.wheelfile import (check_version_and_tags, open_wheel, read_record,
                                           record_hash)
from vllm_overlay.common import wheelfile

# vLLM's build requirements: requirements/build.txt to 0.19, requirements/build/cuda.txt from 0.20
BUILD_REQUIREMENTS = ("requirements/build.txt", "requirements/build/cuda.txt")
PY_LIMITED_API = "cp38"  # as upstream's Dockerfile: one wheel for every CPython >= 3.8


def build_requirements_file(tree: Path) -> Path:
    """The first of BUILD_REQUIREMENTS that the tree has."""
    return next((tree / p for p in BUILD_REQUIREMENTS if (tree / p).is_file()),
                tree / BUILD_REQUIREMENTS[0])


def build_requirements(tree: Path, torch_pin: str) -> list[str]:
    path = build_requirements_file(tree)
    try:
        reqs = requirement_names(path.read_text())
    except OSError as exc:
        raise OverlayError(f"{path}: cannot read vLLM's build requirements: {exc}") from exc
    torch = [r for r in reqs if re.match(r"^torch\s*[=<>~!]", r)]
    if torch != [f"torch=={torch_pin}"]:
        raise OverlayError(f"{path}: expected the pin torch=={torch_pin}, found {torch}; "
                           f"update \"source_build\" in upstream.lock.json")
    return reqs


# ---------------------------------------------------------------- the setup.py build

def setup_command(python: Path, dist_dir: Path) -> list[str]:
    return [str(python), "setup.py", "bdist_wheel", f"--dist-dir={dist_dir}",
            f"--py-limited-api={PY_LIMITED_API}"]


def expected_filename(version: str, arch: str) -> str:
    return f"vllm-{version}-{PY_LIMITED_API}-abi3-linux_{arch}.whl"


def run_setup_py(cmd: list[str], cwd: Path, env: dict, log: Path, label: str) -> None:
    """Run, output to `log`; a progress line every 15 s; the log's tail on failure."""
    started, progress = time.monotonic(), log_module.stage(label)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                lines = log.read_bytes().count(b"\n")
                progress.info(f"{time.monotonic() - started:.0f} s, {lines} log lines ({log})")
    if proc.returncode:
        tail = "\n    ".join(log.read_text(errors="replace").splitlines()[-30:])
        raise OverlayError(f"{label}: `{shlex.join(cmd[1:])}` failed (exit {proc.returncode}) "
                           f"in {cwd}; full log {log}; last lines:\n    {tail}")


def _version_of(text: str) -> str | None:
    match = re.search(r"^__version__ = version = ['\"]([^'\"]+)['\"]", text, re.M)
    return match[1] if match else None


def verify_setup_wheel(built: Path, version: str, tree: Path,
                       upstream: tuple[Path, str] | None = None) -> None:
    """RECORD correct, version everywhere, tags match the name, the tree's files shipped
    as they are; precompiled (`upstream` = wheel, dist-info): compiled and generated
    members byte-identical to upstream's (via both verified RECORDs)."""
    dist_info = wheelfile.dist_info(version)
    if not built.name.startswith(f"vllm-{version}-"):
        raise OverlayError(f"{built.name}: not a wheel of version {version}")
    with open_wheel(built) as zf:
        names = zf.namelist()
        if dist_info + "RECORD" not in names:
            raise OverlayError(f"{built.name}: no {dist_info}RECORD (version mismatch?)")
        verify.check_record_against_content(zf, dist_info + "RECORD")
        record = read_record(zf, dist_info + "RECORD")
        check_version_and_tags(zf, built.name, dist_info, version)
        if _version_of(zf.read(VERSION_FILE).decode()) != version:
            raise OverlayError(f"{built.name}: {VERSION_FILE} does not say {version}")
        tracked = GitTree(tree).ls_files()
        generated = []
        for name in names:
            if name.startswith(dist_info) or name == VERSION_FILE:
                continue
            source = tree / name
            # files setup.py itself wrote into the tree (extracted from upstream) are untracked
            if name in tracked and source.is_file():
                if record[name][0] != record_hash(source.read_bytes()):
                    raise OverlayError(f"{built.name}: {name} differs from the patched tree")
            else:
                generated.append(name)
        if upstream is None:
            return
        up_path, up_info = upstream
        with zipfile.ZipFile(up_path) as up:
            up_record = read_record(up, up_info + "RECORD")
        for name in generated:
            if name not in up_record:
                raise OverlayError(f"{built.name}: {name} is neither in the tree nor upstream's")
            if record[name] != up_record[name]:
                raise OverlayError(f"{built.name}: {name} is not byte-identical to upstream's")


def _check_mode(mode: str, arch: str) -> None:
    if mode not in ("precompiled", "source"):
        raise OverlayError(f"unknown mode {mode!r}")
    host = platform.machine()
    if arch != host:
        raise OverlayError(f"MODE={mode} runs setup.py, which builds for this machine "
                           f"({host}), not ARCH={arch}: run it on an {arch} machine")


def build_setup_py_wheel(mode: str, arch: str = "x86_64",
                         wheelhouse_dir: Path = wheelhouse_store.WHEELHOUSE,
                         patches_dir: Path = series.PATCHES, repo: Path = REPO,
                         source: SourceConfig | None = None) -> Path:
    """MODE=precompiled or MODE=source through setup.py, stored into the wheelhouse."""
    _check_mode(mode, arch)
    the_pin = pin.load(repo)
    if mode == "source" and source is None:
        source = source_preflight(the_pin=the_pin)
    with wheelhouse_store.locked_inputs(wheelhouse_dir, patches_dir, repo) as (
            the_pin, patches, snapshot):  # read once, under the lock (docs/guarantees.md)
        version = the_pin.overlay_version
        extra = [f"mode={mode}", f"python={sys.version}"]
        if source:
            version += f".cu{cuda_tag(source.cuda)}"
            extra += [f"{k}={v}" for k, v in sorted(source.env().items())]
        build = record.create(the_pin, arch, mode, patches, snapshot, constraints.lock_dir(repo),
                              repo, version)
        build_key = key.build_key(build, extra=extra + beside.inputs(build))
        return wheelhouse_store.store(wheelhouse_dir, build, build_key,
                                      lambda tmp_dir: write_setup_py(build, source, tmp_dir))


def setup_env(build: BuildRecord, source: SourceConfig | None, upstream: Path) -> dict:
    """setup.py's environment: the version and date of `build`, and the mode's settings."""
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cuda", "VLLM_VERSION_OVERRIDE": build.version,
           "SOURCE_DATE_EPOCH": str(build.epoch)}
    for name in ("VLLM_PRECOMPILED_WHEEL_VARIANT", "VLLM_PRECOMPILED_WHEEL_COMMIT",
                 "VLLM_USE_PRECOMPILED", "VLLM_MAIN_CUDA_VERSION"):
        env.pop(name, None)
    if source:
        env.update(source.env())
        env["PATH"] = f"{source.cuda_home / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    else:
        # A local file: setup.py uses it as is and never downloads (setup.py:
        # extract_precompiled_and_patch_package only downloads a non-file location).
        env.update(VLLM_USE_PRECOMPILED="1", VLLM_PRECOMPILED_WHEEL_LOCATION=str(upstream))
    return env


def write_setup_py(build: BuildRecord, source: SourceConfig | None,
                   tmp_dir: Path) -> tuple[Path, None, dict]:
    """The setup.py wheel of `build` in tmp_dir, with its SBOM, verified: (wheel, None,
    manifest fields)."""
    started, the_pin, mode, version, tree = (time.monotonic(), build.pin, build.mode,
                                             build.version, build.tree)
    # hashed in full on every build: setup.py reads both, so they must be the pinned
    sdist = fetch.fetch(the_pin.sdist, the_pin.project, rehash=True)
    upstream = fetch.fetch(build.upstream, the_pin.project, rehash=not source)
    log_module.stage("apply").info(
        f"{len(build.patches)} patch(es) onto {the_pin.sdist.filename} in {tree}")
    apply.apply_series(sdist, build.patches, tree, the_pin.released)
    torch_pin = the_pin.source_build.torch
    reqs, install_args = build_requirements(tree, torch_pin), ()
    if source:
        torch_req, install_args = source.torch_requirement()
        reqs = [torch_req if r == f"torch=={torch_pin}" else r for r in reqs]
    venv = venvs.ensure_venv(f"build-{mode}" if source else "build", reqs,
                             install_args=install_args)
    env = setup_env(build, source, upstream)
    dist = tmp_dir / "dist"
    cmd = setup_command(venvs.python_of(venv), dist)
    log = tree.parent / "setup.log"
    log_module.stage("setup.py").info(
        f"{shlex.join(cmd[1:])} (MODE={mode}, VLLM_VERSION_OVERRIDE={version})")
    setup_started = time.monotonic()
    run_setup_py(cmd, tree, env, log, f"setup.py ({mode})")
    setup_seconds = time.monotonic() - setup_started
    built = sorted(dist.glob("*.whl"))
    if len(built) != 1 or built[0].name != expected_filename(version, build.arch):
        raise OverlayError(f"setup.py wrote {[b.name for b in built]} into {dist}, "
                           f"expected {expected_filename(version, build.arch)} (see {log})")
    tmp = tmp_dir / built[0].name  # setuptools has no PEP 770 support: add the SBOM
    embed_and_verify(build, built[0], tmp, upstream, precompiled=not source)
    torch_version = subprocess.run(
        [str(venvs.python_of(venv)), "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True).stdout.strip()
    manifest = {
        "setup_py": {"command": ["python", *cmd[1:]],
                     "env": {k: env[k] for k in sorted(env) if k.startswith(
                         ("VLLM_", "TORCH_CUDA", "MAX_JOBS", "NVCC", "CUDA_HOME"))},
                     "build_requirements": reqs, "torch": torch_version,
                     "seconds": round(setup_seconds, 1)},
        "build_seconds": round(time.monotonic() - started, 1),
    }
    if source:
        manifest["setup_py"]["nvcc"] = source.cuda
    return tmp, None, manifest


def embed_and_verify(build: BuildRecord, built: Path, out: Path, upstream: Path,
                     precompiled: bool) -> None:
    """`built` plus the SBOM of `build` as `out`, verified (`precompiled`: its compiled
    members must be byte-identical to the `upstream` wheel's)."""
    tree = build.tree
    shipped = {path: status for path, status in apply.changed_files(tree).items()
               if path.startswith("vllm/")}
    document = sbom.render(sbom.facts(build, tree, shipped, constraints.requires_dist(
        upstream, build.pin.upstream_version, build.upstream.filename)))
    sbom.embed(built, out, build.version, document, epoch_to_date_time(build.epoch))
    log_module.stage("verify").info(built.name)
    verify_setup_wheel(out, build.version, tree, (
        upstream, wheelfile.dist_info(build.pin.upstream_version)) if precompiled else None)
    sbom.check_wheel(out, build.version, document)


def dry_run(mode: str, arch: str, source: SourceConfig | None = None,
            repo: Path = REPO) -> str:
    """What MODE=source would run, after its preflight; builds nothing."""
    the_pin = pin.load(repo)
    source = source or source_preflight(the_pin=the_pin)
    torch = the_pin.source_build.torch
    version = f"{the_pin.overlay_version}.cu{cuda_tag(source.cuda)}"
    tree = repo / BUILD_TREES / f"{arch}-{mode}" / f"vllm-{the_pin.upstream_version}"
    torch_req, install_args = source.torch_requirement()
    env = {**source.env(), "VLLM_TARGET_DEVICE": "cuda", "VLLM_VERSION_OVERRIDE": version}
    cmd = setup_command(Path("<build-venv>/bin/python"), Path("wheelhouse/.tmp/dist"))
    lines = [f"preflight: nvcc {source.nvcc} is CUDA {source.cuda} (torch {torch} "
             f"supports {', '.join(the_pin.source_build.torch_cuda_versions)}): ok",
             *(f"preflight: {note}" for note in source.notes),
             f"tree: {tree} (fresh: upstream sdist + patches/series)",
             f"build venv: {tree}/{BUILD_REQUIREMENTS[0]} (or {BUILD_REQUIREMENTS[1]}) with torch=={torch} replaced by "
             f"{torch_req} ({' '.join(install_args)})",
             f"would run (cwd {tree}):",
             "  " + shlex.join(["env", *(f"{k}={v}" for k, v in sorted(env.items())), *cmd]),
             f"then verify and publish wheelhouse/{expected_filename(version, arch)}"]
    return "\n".join(lines)
