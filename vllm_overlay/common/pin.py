"""The pin: VERSION (the overlay's version) and upstream.lock.json (the upstream artifacts)."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO

# PEP 440 public version "+" local label, e.g. 0.19.1+mmcg.1
_VERSION_RE = re.compile(r"^(?P<public>\d+(\.\d+)*)\+(?P<local>[a-z0-9]+(\.[a-z0-9]+)*)$")


@dataclass(frozen=True)
class Artifact:
    key: str  # "sdist", "wheel-x86_64", "wheel-aarch64"
    filename: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SourceBuild:
    """What the pinned release's setup.py needs for MODE=source (lock: "source_build")."""
    torch: str  # the torch pin of the release's requirements/build.txt
    torch_cuda_versions: tuple[str, ...]  # CUDA builds torch is published for
    torch_index: str  # index of one such build, "{tag}" = "cu130" without "cu"
    cuda_archs: dict[str, str]  # nvcc version -> archs the release's CMakeLists builds
    release_arch_list: str  # upstream's own release wheels' TORCH_CUDA_ARCH_LIST


@dataclass(frozen=True)
class Pin:
    project: str
    upstream_version: str
    released: str
    overlay_version: str
    artifacts: dict[str, Artifact]
    source_build_data: dict | None = None

    @property
    def source_build(self) -> SourceBuild:
        data = self.source_build_data
        try:
            return SourceBuild(data["torch"], tuple(data["torch_cuda_versions"]),
                               data["torch_index"], dict(data["cuda_archs"]),
                               data["release_arch_list"])
        except (TypeError, KeyError) as exc:
            raise OverlayError(f"upstream.lock.json: no complete \"source_build\" section "
                               f"(MODE=source needs it): missing {exc}") from exc

    def wheel(self, arch: str) -> Artifact:
        key = f"wheel-{arch}"
        if key not in self.artifacts:
            known = ", ".join(k[6:] for k in self.artifacts if k.startswith("wheel-"))
            raise OverlayError(f"no pinned upstream wheel for ARCH={arch} (lock has: {known})")
        return self.artifacts[key]

    @property
    def sdist(self) -> Artifact:
        return self.artifacts["sdist"]


def load(repo: Path = REPO) -> Pin:
    version_file, lock_file = repo / "VERSION", repo / "upstream.lock.json"
    version = version_file.read_text().strip()
    match = _VERSION_RE.match(version)
    if not match:
        raise OverlayError(
            f"{version_file}: {version!r} is not a PEP 440 local version like 0.19.1+mmcg.1")
    try:
        lock = json.loads(lock_file.read_text())
        artifacts = {k: Artifact(k, a["filename"], int(a["size"]), a["sha256"].lower())
                     for k, a in lock["artifacts"].items()}
        pin = Pin(lock["project"], lock["version"], lock["released"], version, artifacts,
                  lock.get("source_build"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OverlayError(f"{lock_file}: unreadable lock file: {exc!r}") from exc
    if match["public"] != pin.upstream_version:
        raise OverlayError(
            f"{version_file}: public version {match['public']} must equal the pinned upstream "
            f"release {pin.upstream_version} from {lock_file.name}")
    if "sdist" not in artifacts:
        raise OverlayError(f"{lock_file}: no 'sdist' artifact")
    return pin
