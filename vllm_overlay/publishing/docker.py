"""Docker image: `make docker` builds Dockerfile (or docker/source.Dockerfile, MODE=source).

Every build argument comes from VERSION, upstream.lock.json and (overlay mode) the
wheelhouse manifest, so there is one source of truth; the defaults written in the
Dockerfiles must agree with them (tests/tooling/test_docker.py checks). Without a
reachable Docker engine nothing is built and the message says so, with the command that
would have run.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from vllm_overlay.common import index
from vllm_overlay.common import pin
from vllm_overlay.common import series
from vllm_overlay.common import log
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.git import git_value
from vllm_overlay.common.http import redact
from vllm_overlay.common.paths import REPO

DOCKERFILES = {"overlay": Path("Dockerfile"), "source": Path("docker") / "source.Dockerfile"}
BASE_REPOSITORY = "vllm/vllm-openai"
PLATFORMS = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}
_ARG_RE = re.compile(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$")


def base_image(upstream_version: str) -> str:
    """Upstream's serving image for a release: vllm/vllm-openai:v<version>."""
    return f"{BASE_REPOSITORY}:v{upstream_version}"


def image_tag(overlay_version: str) -> str:
    """Default image name; docker tags allow no '+', so 0.19.1+mmcg.1 -> 0.19.1-mmcg.1."""
    return f"vllm-overlay:{overlay_version.replace('+', '-')}"


def logical_lines(dockerfile: Path) -> list[str]:
    """Instructions with continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        current += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return lines


def declared_args(dockerfile: Path) -> dict[str, str | None]:
    """ARG name -> its first default (None when declared without one)."""
    found: dict[str, str | None] = {}
    for line in logical_lines(dockerfile):
        if match := _ARG_RE.match(line):
            value = match[2].strip('"') if match[2] is not None else None
            if found.get(match[1]) is None:
                found[match[1]] = value
    return found


def revision(repo: Path = REPO) -> str:
    """HEAD, or HEAD-dirty when the checkout has uncommitted changes or untracked files (the
    image is then built from something no commit holds, e.g. an edited series)."""
    head = git_value(repo, "rev-parse", "HEAD")
    if head and git_value(repo, "status", "--porcelain", "--untracked-files=normal"):
        return f"{head}-dirty"
    return head


def build_args(mode: str = "overlay", arch: str = "x86_64", repo: Path = REPO,
               wheelhouse: Path | None = None) -> dict[str, str]:
    the_pin = pin.load(repo)
    args = {"VLLM_BASE_IMAGE": base_image(the_pin.upstream_version),
            "UPSTREAM_VERSION": the_pin.upstream_version,
            "OVERLAY_VERSION": the_pin.overlay_version,
            "SOURCE_URL": redact(git_value(repo, "config", "--get", "remote.origin.url"), ""),
            "VCS_REF": revision(repo)}
    patches_dir = repo / "patches"
    series_sha = series.series_digest(series.read_series(patches_dir), patches_dir)
    args["SERIES_SHA256"] = series_sha
    if mode == "source":
        return args
    wheelhouse = wheelhouse or repo / "wheelhouse"
    manifest_file = wheelhouse / f"manifest-{arch}.json"
    try:
        manifest = json.loads(manifest_file.read_text())
        wheel, version = manifest["wheel"], manifest["version"]
        built_series = manifest["series"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OverlayError(f"{manifest_file}: no usable wheel manifest ({exc}); run "
                           f"`make wheel ARCH={arch}` first") from exc
    stale = [what for what, ours, built in (("VERSION", the_pin.overlay_version, version),
                                            ("patch series", series_sha, built_series))
             if ours != built]
    if stale:
        raise OverlayError(f"{manifest_file}: built from a different {' and '.join(stale)} "
                           f"than the repository has now; run `make wheel ARCH={arch}` first")
    sums = index.read_sums(wheelhouse)
    if sums.get(wheel["filename"]) != wheel["sha256"] or \
            not (wheelhouse / wheel["filename"]).is_file():
        raise OverlayError(f"{wheelhouse / wheel['filename']}: missing or not the file "
                           f"{manifest_file.name} describes; run `make wheel ARCH={arch}`")
    sbom = wheel["filename"].removesuffix(".whl") + ".cdx.json"  # wheelbuild/sbom.py beside_name
    if sbom not in sums or not (wheelhouse / sbom).is_file():
        raise OverlayError(f"{wheelhouse / sbom}: the wheel's SBOM is missing; run "
                           f"`make wheel ARCH={arch}`")
    args.update(WHEEL=wheel["filename"], WHEEL_SHA256=wheel["sha256"], SBOM=sbom,
                SBOM_SHA256=sums[sbom])
    return args


def docker_command(mode: str, arch: str, image: str | None, extra: dict[str, str],
                   repo: Path = REPO, wheelhouse: Path | None = None) -> list[str]:
    if mode not in DOCKERFILES:
        raise OverlayError(f"MODE={mode}: the image modes are {', '.join(DOCKERFILES)}")
    if arch not in PLATFORMS:
        raise OverlayError(f"ARCH={arch}: no Docker platform known for it ({', '.join(PLATFORMS)})")
    dockerfile = DOCKERFILES[mode]
    declared = declared_args(repo / dockerfile)
    if unknown := sorted(set(extra) - set(declared)):
        raise OverlayError(f"{dockerfile} declares no ARG {', '.join(unknown)}")
    args = {**build_args(mode, arch, repo, wheelhouse), **extra}
    if unknown := sorted(set(args) - set(declared)):
        raise OverlayError(f"{dockerfile} declares no ARG {', '.join(unknown)}")
    image = image or image_tag(pin.load(repo).overlay_version)
    command = ["docker", "build", "-f", str(dockerfile), "--platform", PLATFORMS[arch],
               "-t", image]
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    return command + ["."]


def engine_problem() -> str | None:
    """Why no image can be built here, or None when a Docker engine answers."""
    if not shutil.which("docker"):
        return "the docker CLI is not installed"
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if proc.returncode or not proc.stdout.strip():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine is reachable (`docker info`: {last})"
    return None


def build_image(mode: str, arch: str, image: str | None, extra: dict[str, str],
                print_only: bool = False) -> None:
    command = docker_command(mode, arch, image, extra)
    shown = shlex.join(command)
    if print_only:
        print(shown)
        return
    if problem := engine_problem():
        raise OverlayError(f"cannot build the image: {problem}; nothing was built. With an "
                           f"engine, `make docker` runs (in {REPO}):\n  {shown}")
    log.stage("docker").info(shown)
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}  # RUN --mount needs BuildKit
    if subprocess.run(command, cwd=REPO, env=env).returncode:
        raise OverlayError(f"docker build of {DOCKERFILES[mode]} failed (see its output above)")

