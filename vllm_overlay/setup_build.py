"""Build through vLLM's own setup.py: MODE=precompiled and MODE=source.

Both run the patched tree's setup.py exactly as upstream's release Dockerfile does
(`setup.py bdist_wheel --py-limited-api=cp38`), in a build venv the project creates from
the tree's requirements/build.txt. precompiled: setup.py takes the compiled members from
the sha256-verified upstream wheel in the cache (VLLM_PRECOMPILED_WHEEL_LOCATION, a local
file, so setup.py never downloads). source: a full CUDA build with the local nvcc, after a
preflight that says what is missing. The result goes through wheelhouse.build_into (lock,
verify, rename, manifest, SHA256SUMS), like the overlay mode's.

File names: setup.py names the wheel `vllm-<VERSION>-cp38-abi3-linux_<arch>.whl` (its
WHEEL Tag equals upstream's own). Upstream's upload script renames linux -> manylinux_2_31
without auditwheel; we do not, so the name is honest and never collides with the overlay
mode's manylinux wheel. The source mode adds `.cu<XYZ>` to the local label (vLLM's own
convention for builds against another CUDA), so it cannot collide with precompiled either.
"""

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from . import apply, fetch, pin, series, venvs, verify, wheelhouse
from .build import VERSION_FILE, record_hash
from .errors import OverlayError
from .paths import REPO

BUILD_REQUIREMENTS = "requirements/build.txt"
PINNED_TORCH = "2.10.0"
# CUDA versions torch 2.10.0 is published for (download.pytorch.org cu126/cu128/cu130);
# PyPI's torch==2.10.0 is the cu128 one. torch refuses extensions built with another
# CUDA major, so the source mode installs the torch variant that matches nvcc.
TORCH_CUDA_VERSIONS = ("12.6", "12.8", "13.0")
TORCH_INDEX = "https://download.pytorch.org/whl/cu{tag}"
# vLLM 0.19.1's CMakeLists.txt: the archs each nvcc generation can build.
CUDA_ARCHS = {
    "13.0": "7.5 8.0 8.6 8.7 8.9 9.0 10.0 11.0 12.0 12.1",
    "12.8": "7.0 7.2 7.5 8.0 8.6 8.7 8.9 9.0 10.0 10.1 12.0 12.1",
    "12.6": "7.0 7.2 7.5 8.0 8.6 8.7 8.9 9.0",
}
# Upstream's release wheels (docker/Dockerfile torch_cuda_arch_list), minus what nvcc lacks.
UPSTREAM_ARCH_LIST = "7.0 7.5 8.0 8.9 9.0 10.0 12.0"
_ARCH_RE = re.compile(r"^(\d+\.\d+)([af]?)(\+PTX)?$")
_NVCC_RE = re.compile(r"release (\d+)\.(\d+)")
DEFAULT_CUDA_HOME = Path("/usr/local/cuda")
PY_LIMITED_API = "cp38"  # as upstream's Dockerfile: one wheel for every CPython >= 3.8


def parse_requirements(text: str) -> list[str]:
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def build_requirements(tree: Path) -> list[str]:
    path = tree / BUILD_REQUIREMENTS
    try:
        reqs = parse_requirements(path.read_text())
    except OSError as exc:
        raise OverlayError(f"{path}: cannot read vLLM's build requirements: {exc}") from exc
    torch = [r for r in reqs if re.match(r"^torch\s*[=<>~!]", r)]
    if torch != [f"torch=={PINNED_TORCH}"]:
        raise OverlayError(f"{path}: expected the pin torch=={PINNED_TORCH}, found {torch}; "
                           f"update setup_build.PINNED_TORCH and TORCH_CUDA_VERSIONS together")
    return reqs


def cuda_tag(cuda: str) -> str:
    return cuda.replace(".", "")


# ---------------------------------------------------------------- source-mode preflight

@dataclass
class SourceConfig:
    cuda_home: Path
    nvcc: Path
    cuda: str  # "13.0"
    arch_list: str
    max_jobs: int
    nvcc_threads: int
    notes: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {"VLLM_USE_PRECOMPILED": "0", "CUDA_HOME": str(self.cuda_home),
                "TORCH_CUDA_ARCH_LIST": self.arch_list, "MAX_JOBS": str(self.max_jobs),
                "NVCC_THREADS": str(self.nvcc_threads)}

    def torch_requirement(self) -> tuple[str, tuple[str, ...]]:
        tag = cuda_tag(self.cuda)
        return f"torch=={PINNED_TORCH}+cu{tag}", ("--extra-index-url", TORCH_INDEX.format(tag=tag))


def _positive_int(env: dict, name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise OverlayError(f"{name}={raw!r}: must be a positive integer")
    return int(raw)


def find_cuda_home(env: dict) -> Path:
    """$CUDA_HOME, $CUDA_PATH, /usr/local/cuda, else where nvcc on PATH lives."""
    if home := env.get("CUDA_HOME") or env.get("CUDA_PATH"):
        return Path(home)
    if (DEFAULT_CUDA_HOME / "bin" / "nvcc").exists():
        return DEFAULT_CUDA_HOME
    if nvcc := shutil.which("nvcc", path=env.get("PATH")):
        return Path(nvcc).resolve().parent.parent
    return DEFAULT_CUDA_HOME


def nvcc_version(nvcc: Path) -> str:
    try:
        out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True,
                             timeout=60)
    except OSError as exc:
        raise OverlayError(f"{nvcc}: cannot run it: {exc}") from exc
    match = _NVCC_RE.search(out.stdout)
    if out.returncode or not match:
        raise OverlayError(f"`{nvcc} --version` (exit {out.returncode}) printed no "
                           f"'release X.Y': {(out.stdout + out.stderr).strip()[:200]!r}")
    return f"{match[1]}.{match[2]}"


def check_arch_list(arch_list: str, cuda: str) -> None:
    supported = CUDA_ARCHS[cuda].split()
    entries = arch_list.replace(";", " ").split()
    if not entries:
        raise OverlayError("TORCH_CUDA_ARCH_LIST is empty")
    for entry in entries:
        match = _ARCH_RE.match(entry)
        if not match:
            raise OverlayError(f"TORCH_CUDA_ARCH_LIST entry {entry!r} is not like 9.0, 9.0a "
                               f"or 8.6+PTX")
        if match[1] not in supported:
            raise OverlayError(f"TORCH_CUDA_ARCH_LIST entry {entry!r}: CUDA {cuda} with vLLM "
                               f"0.19.1 builds only {' '.join(supported)}")


def source_preflight(env: dict | None = None) -> SourceConfig:
    """Check the toolchain for MODE=source before anything is built; say what is missing."""
    env = dict(os.environ if env is None else env)
    cuda_home = find_cuda_home(env)
    nvcc = cuda_home / "bin" / "nvcc"
    supported = ", ".join(TORCH_CUDA_VERSIONS)
    if not os.access(nvcc, os.X_OK):
        raise OverlayError(
            f"MODE=source needs nvcc, but there is no {nvcc} (CUDA_HOME={cuda_home}): install "
            f"a CUDA toolkit that torch {PINNED_TORCH} supports ({supported}) and set "
            f"CUDA_HOME to it")
    if not (cuda_home / "include" / "cuda_runtime.h").exists():
        raise OverlayError(f"CUDA_HOME={cuda_home} has bin/nvcc but no include/cuda_runtime.h: "
                           f"point CUDA_HOME at a full CUDA toolkit")
    cuda = nvcc_version(nvcc)
    if cuda not in TORCH_CUDA_VERSIONS:
        raise OverlayError(
            f"{nvcc} is CUDA {cuda}; torch {PINNED_TORCH} (vLLM 0.19.1's pin) is built for "
            f"CUDA {supported} only: install one of those and set CUDA_HOME to it")
    if not (shutil.which("c++", path=env.get("PATH")) or shutil.which("g++", path=env.get("PATH"))):
        raise OverlayError("MODE=source needs a C++ host compiler (c++ or g++) on PATH")
    notes = []
    arch_list = env.get("TORCH_CUDA_ARCH_LIST")
    if not arch_list:
        wanted = UPSTREAM_ARCH_LIST.split()
        arch_list = " ".join(a for a in wanted if a in CUDA_ARCHS[cuda].split())
        dropped = sorted(set(wanted) - set(arch_list.split()))
        notes.append(f"TORCH_CUDA_ARCH_LIST unset: upstream's release list {arch_list!r}"
                     + (f" (CUDA {cuda} cannot build {' '.join(dropped)})" if dropped else ""))
    check_arch_list(arch_list, cuda)
    max_jobs = _positive_int(env, "MAX_JOBS", os.cpu_count() or 1)
    nvcc_threads = _positive_int(env, "NVCC_THREADS", 1)
    return SourceConfig(cuda_home, nvcc, cuda, arch_list, max_jobs, nvcc_threads, notes)


# ---------------------------------------------------------------- the setup.py build

def setup_command(python: Path, dist_dir: Path) -> list[str]:
    return [str(python), "setup.py", "bdist_wheel", f"--dist-dir={dist_dir}",
            f"--py-limited-api={PY_LIMITED_API}"]


def expected_filename(version: str, arch: str) -> str:
    return f"vllm-{version}-{PY_LIMITED_API}-abi3-linux_{arch}.whl"


def run_logged(cmd: list[str], cwd: Path, env: dict, log: Path, label: str) -> None:
    """Run, output to `log`; a progress line every 15 s; the log's tail on failure."""
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                lines = log.read_bytes().count(b"\n")
                print(f"{label}: {time.monotonic() - started:.0f} s, {lines} log lines "
                      f"({log})", file=sys.stderr, flush=True)
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
    dist_info = f"vllm-{version}.dist-info/"
    if not built.name.startswith(f"vllm-{version}-"):
        raise OverlayError(f"{built.name}: not a wheel of version {version}")
    try:
        zf = zipfile.ZipFile(built)
    except zipfile.BadZipFile as exc:
        raise OverlayError(f"{built}: not a valid zip: {exc}") from exc
    with zf:
        names = zf.namelist()
        if dist_info + "RECORD" not in names:
            raise OverlayError(f"{built.name}: no {dist_info}RECORD (version mismatch?)")
        verify.check_record_against_content(zf, dist_info + "RECORD")
        record = verify.read_record(zf, dist_info + "RECORD")
        metadata = zf.read(dist_info + "METADATA").decode()
        if not re.search(rf"^Version: {re.escape(version)}$", metadata, re.M):
            raise OverlayError(f"{built.name}: METADATA Version is not {version}")
        name_tags = built.name[:-4].split("-")[-3:]
        want = sorted(f"{py}-{abi}-{plat}" for py in name_tags[0].split(".")
                      for abi in name_tags[1].split(".") for plat in name_tags[2].split("."))
        tags = re.findall(r"^Tag: (\S+)$", zf.read(dist_info + "WHEEL").decode(), re.M)
        if sorted(tags) != want:
            raise OverlayError(f"{built.name}: WHEEL tags {tags} do not match the name's {want}")
        if _version_of(zf.read(VERSION_FILE).decode()) != version:
            raise OverlayError(f"{built.name}: {VERSION_FILE} does not say {version}")
        tracked = set(apply.git(tree, "ls-files", "-z").stdout.split("\0"))
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
            up_record = verify.read_record(up, up_info + "RECORD")
        for name in generated:
            if name not in up_record:
                raise OverlayError(f"{built.name}: {name} is neither in the tree nor upstream's")
            if record[name] != up_record[name]:
                raise OverlayError(f"{built.name}: {name} is not byte-identical to upstream's")


def make_wheel(mode: str, arch: str = "x86_64", wheelhouse_dir: Path = wheelhouse.WHEELHOUSE,
               patches_dir: Path = series.PATCHES, repo: Path = REPO,
               source: SourceConfig | None = None) -> Path:
    """MODE=precompiled or MODE=source through setup.py, published into the wheelhouse."""
    if mode not in ("precompiled", "source"):
        raise OverlayError(f"unknown mode {mode!r}")
    host = platform.machine()
    if arch != host:
        raise OverlayError(f"MODE={mode} runs setup.py, which builds for this machine "
                           f"({host}), not ARCH={arch}: run it on an {arch} machine")
    if mode == "source" and source is None:
        source = source_preflight()
    with wheelhouse.locked_inputs(wheelhouse_dir, patches_dir, repo) as (the_pin, patches,
                                                                   snapshot):
        series_sha = series.series_digest(patches, snapshot)
        epoch = wheelhouse.source_date_epoch(patches, the_pin.released)
        version = the_pin.overlay_version
        extra = [f"mode={mode}", f"python={sys.version}"]
        if source:
            version += f".cu{cuda_tag(source.cuda)}"
            extra += [f"{k}={v}" for k, v in sorted(source.env().items())]
        key = wheelhouse.build_key(the_pin, arch, series_sha, epoch, mode=mode, extra=extra)
        upstream_art = the_pin.wheel(arch)

        def build(tmp_dir: Path) -> tuple[Path, None, dict]:
            started = time.monotonic()
            sdist = fetch.fetch(the_pin.sdist, the_pin.project)
            upstream = fetch.fetch(upstream_art, the_pin.project)
            tree = repo / wheelhouse.BUILD_TREES / f"{arch}-{mode}" / f"vllm-{the_pin.upstream_version}"
            print(f"apply: {len(patches)} patch(es) onto {the_pin.sdist.filename} in {tree}",
                  file=sys.stderr)
            apply.apply_series(sdist, patches, tree, the_pin.released)
            reqs, install_args = build_requirements(tree), ()
            if source:
                torch_req, install_args = source.torch_requirement()
                reqs = [torch_req if r == f"torch=={PINNED_TORCH}" else r for r in reqs]
            venv = venvs.ensure_venv(f"build-{mode}" if source else "build", reqs,
                                     install_args=install_args)
            env = {**os.environ, "VLLM_TARGET_DEVICE": "cuda", "VLLM_VERSION_OVERRIDE": version,
                   "SOURCE_DATE_EPOCH": str(epoch)}
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
            dist = tmp_dir / "dist"
            cmd = setup_command(venvs.python_of(venv), dist)
            log = tree.parent / "setup.log"
            print(f"setup.py: {shlex.join(cmd[1:])} (MODE={mode}, VLLM_VERSION_OVERRIDE={version})",
                  file=sys.stderr, flush=True)
            setup_started = time.monotonic()
            run_logged(cmd, tree, env, log, f"setup.py ({mode})")
            setup_seconds = time.monotonic() - setup_started
            built = sorted(dist.glob("*.whl"))
            if len(built) != 1 or built[0].name != expected_filename(version, arch):
                raise OverlayError(f"setup.py wrote {[b.name for b in built]} into {dist}, expected "
                                   f"{expected_filename(version, arch)} (see {log})")
            print(f"verify: {built[0].name}", file=sys.stderr, flush=True)
            verify_setup_wheel(built[0], version, tree,
                               None if source else (upstream,
                                                    f"vllm-{the_pin.upstream_version}.dist-info/"))
            tmp = tmp_dir / built[0].name
            os.replace(built[0], tmp)
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

        return wheelhouse.build_into(wheelhouse_dir, mode, arch, key, the_pin, epoch, series_sha,
                                     patches, build)


def dry_run(mode: str, arch: str, source: SourceConfig | None = None,
            repo: Path = REPO) -> str:
    """What MODE=source would run, after its preflight; builds nothing."""
    source = source or source_preflight()
    the_pin = pin.load(repo)
    version = f"{the_pin.overlay_version}.cu{cuda_tag(source.cuda)}"
    tree = repo / wheelhouse.BUILD_TREES / f"{arch}-{mode}" / f"vllm-{the_pin.upstream_version}"
    torch_req, install_args = source.torch_requirement()
    env = {**source.env(), "VLLM_TARGET_DEVICE": "cuda", "VLLM_VERSION_OVERRIDE": version}
    cmd = setup_command(Path("<build-venv>/bin/python"), Path("wheelhouse/.tmp/dist"))
    lines = [f"preflight: nvcc {source.nvcc} is CUDA {source.cuda} (torch {PINNED_TORCH} "
             f"supports {', '.join(TORCH_CUDA_VERSIONS)}): ok",
             *(f"preflight: {note}" for note in source.notes),
             f"tree: {tree} (fresh: upstream sdist + patches/series)",
             f"build venv: {tree}/{BUILD_REQUIREMENTS} with torch=={PINNED_TORCH} replaced by "
             f"{torch_req} ({' '.join(install_args)})",
             f"would run (cwd {tree}):",
             "  " + shlex.join(["env", *(f"{k}={v}" for k, v in sorted(env.items())), *cmd]),
             f"then verify and publish wheelhouse/{expected_filename(version, arch)}"]
    return "\n".join(lines)


# ---------------------------------------------------------------- cross-check of two modes

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
    return {str(p.relative_to(root)): fetch.sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


def compare_installed(wheel_a: Path, wheel_b: Path, workdir: Path) -> dict[str, str]:
    """Install both wheels side by side; {path: 'only in A' | 'only in B' | 'differs'}."""
    a = tree_digests(install_tree(wheel_a, workdir / "a"))
    b = tree_digests(install_tree(wheel_b, workdir / "b"))
    diff = {p: "only in A" for p in a.keys() - b.keys()}
    diff.update({p: "only in B" for p in b.keys() - a.keys()})
    diff.update({p: "differs" for p in a.keys() & b.keys() if a[p] != b[p]})
    return dict(sorted(diff.items()))


def published(mode: str, arch: str, wheelhouse_dir: Path = wheelhouse.WHEELHOUSE) -> Path:
    """The wheel a mode last published (from its state file)."""
    state = wheelhouse_dir / f".state-{wheelhouse.label(mode, arch)}.json"
    try:
        return wheelhouse_dir / json.loads(state.read_text())["filename"]
    except (OSError, ValueError, KeyError) as exc:
        raise OverlayError(f"no MODE={mode} wheel in {wheelhouse_dir} ({state.name}: {exc}); "
                           f"run `make wheel MODE={mode}` first") from exc
