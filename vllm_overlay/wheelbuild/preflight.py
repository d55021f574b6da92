"""MODE=source preflight: the CUDA toolchain, torch's CUDA builds and the arch list.

What torch and vLLM support (torch pin, its CUDA builds, the archs each nvcc can build,
upstream's release arch list) is release data: it lives with the pin in upstream.lock.json
("source_build"), so a new pin changes data, not this code.
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from vllm_overlay.common import pin
from vllm_overlay.common.errors import OverlayError

_ARCH_RE = re.compile(r"^(\d+\.\d+)([af]?)(\+PTX)?$")
_NVCC_RE = re.compile(r"release (\d+)\.(\d+)")
DEFAULT_CUDA_HOME = Path("/usr/local/cuda")


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
    release: pin.SourceBuild
    notes: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {"VLLM_USE_PRECOMPILED": "0", "CUDA_HOME": str(self.cuda_home),
                "TORCH_CUDA_ARCH_LIST": self.arch_list, "MAX_JOBS": str(self.max_jobs),
                "NVCC_THREADS": str(self.nvcc_threads)}

    def torch_requirement(self) -> tuple[str, tuple[str, ...]]:
        tag = cuda_tag(self.cuda)
        index = self.release.torch_index.format(tag=tag)
        return f"torch=={self.release.torch}+cu{tag}", ("--extra-index-url", index)


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


def check_arch_list(arch_list: str, cuda: str, release: pin.SourceBuild,
                    version: str) -> None:
    supported = release.cuda_archs[cuda].split()
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
                               f"{version} builds only {' '.join(supported)}")


def source_preflight(env: dict | None = None, the_pin: pin.Pin | None = None) -> SourceConfig:
    """Check the toolchain for MODE=source before anything is built; say what is missing."""
    env = dict(os.environ if env is None else env)
    the_pin = the_pin or pin.load()
    release = the_pin.source_build
    cuda_home = find_cuda_home(env)
    nvcc = cuda_home / "bin" / "nvcc"
    supported = ", ".join(release.torch_cuda_versions)
    if not os.access(nvcc, os.X_OK):
        raise OverlayError(
            f"MODE=source needs nvcc, but there is no {nvcc} (CUDA_HOME={cuda_home}): install "
            f"a CUDA toolkit that torch {release.torch} supports ({supported}) and set "
            f"CUDA_HOME to it")
    if not (cuda_home / "include" / "cuda_runtime.h").exists():
        raise OverlayError(f"CUDA_HOME={cuda_home} has bin/nvcc but no include/cuda_runtime.h: "
                           f"point CUDA_HOME at a full CUDA toolkit")
    cuda = nvcc_version(nvcc)
    if cuda not in release.torch_cuda_versions:
        raise OverlayError(
            f"{nvcc} is CUDA {cuda}; torch {release.torch} (vLLM {the_pin.upstream_version}'s "
            f"pin) is built for CUDA {supported} only: install one of those and set CUDA_HOME to it")
    if not (shutil.which("c++", path=env.get("PATH")) or shutil.which("g++", path=env.get("PATH"))):
        raise OverlayError("MODE=source needs a C++ host compiler (c++ or g++) on PATH")
    notes = []
    arch_list = env.get("TORCH_CUDA_ARCH_LIST")
    if not arch_list:
        wanted = release.release_arch_list.split()
        builds = release.cuda_archs[cuda].split()  # "12.0+PTX" and "9.0a" are 12.0 and 9.0
        arch_list = " ".join(a for a in wanted if (_ARCH_RE.match(a) or [a, a])[1] in builds)
        dropped = sorted(set(wanted) - set(arch_list.split()))
        notes.append(f"TORCH_CUDA_ARCH_LIST unset: upstream's release list {arch_list!r}"
                     + (f" (CUDA {cuda} cannot build {' '.join(dropped)})" if dropped else ""))
    check_arch_list(arch_list, cuda, release, the_pin.upstream_version)
    max_jobs = _positive_int(env, "MAX_JOBS", os.cpu_count() or 1)
    nvcc_threads = _positive_int(env, "NVCC_THREADS", 1)
    return SourceConfig(cuda_home, nvcc, cuda, arch_list, max_jobs, nvcc_threads, release,
                        notes)

