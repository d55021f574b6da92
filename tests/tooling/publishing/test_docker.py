"""The Dockerfiles: lint-clean, and their defaults agree with VERSION, the lock and `make docker`.

No Docker engine runs here, so the image itself is not built; what can be checked is:
hadolint, the text of the Dockerfiles against the pin, the build arguments that `make
docker` derives (one source of truth), and the message when no engine answers.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tooling.helpers.deploy import build_wheel, write_sums
from vllm_overlay.common import index
from vllm_overlay.publishing import docker
from vllm_overlay.common import pin
from vllm_overlay.common import series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.publishing.in_image.image_check import SERIES_SYMBOL
from vllm_overlay.common.paths import REPO

DOCKERFILE = REPO / "Dockerfile"
SOURCE_DOCKERFILE = REPO / "docker" / "source.Dockerfile"
PIN = pin.load()
WHEEL_TAGS = PIN.wheel("x86_64").filename[:-4].split("-", 2)[2]  # cp38-abi3-manylinux_2_31_x86_64


def labels(dockerfile: Path) -> dict[str, str]:
    found = {}
    for line in docker.logical_lines(dockerfile):
        if line.startswith("LABEL "):
            found.update(re.findall(r'(\S+?)="([^"]*)"', line))
    return found


def instructions(dockerfile: Path, after_last_from: bool = True) -> list[str]:
    lines = docker.logical_lines(dockerfile)
    if after_last_from:
        lines = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")):]
    return lines


def test_hadolint_is_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), str(DOCKERFILE), str(SOURCE_DOCKERFILE)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, SOURCE_DOCKERFILE], ids=["overlay", "source"])
def test_defaults_agree_with_version_and_lock(dockerfile):
    args = docker.declared_args(dockerfile)
    assert args["VLLM_BASE_IMAGE"] == f"vllm/vllm-openai:v{PIN.upstream_version}"
    assert args["UPSTREAM_VERSION"] == PIN.upstream_version
    assert args["OVERLAY_VERSION"] == PIN.overlay_version
    assert "FROM ${VLLM_BASE_IMAGE}" in docker.logical_lines(dockerfile)
    found = labels(dockerfile)
    expected = {"org.opencontainers.image.version": "${OVERLAY_VERSION}",
                "org.opencontainers.image.base.name": "${VLLM_BASE_IMAGE}",
                "org.opencontainers.image.source": "${SOURCE_URL}",
                "org.opencontainers.image.revision": "${VCS_REF}",
                "io.vllm-overlay.upstream-version": "${UPSTREAM_VERSION}",
                "io.vllm-overlay.series-sha256": "${SERIES_SHA256}"}
    assert {k: found.get(k) for k in expected} == expected
    final = instructions(dockerfile)
    # upstream's entrypoint is kept; the healthcheck asks the server's /health
    assert not [ln for ln in final if ln.startswith(("ENTRYPOINT", "CMD"))]
    health = [ln for ln in final if ln.startswith("HEALTHCHECK")]
    assert len(health) == 1 and "/health" in health[0]
    run = " ".join(ln for ln in final if ln.startswith("RUN "))
    assert "vllm_overlay/publishing/in_image/overlay_install.py" in run
    assert 'image_check.py --version "${OVERLAY_VERSION}" --import' in run


def test_overlay_wheel_default_is_the_wheel_make_wheel_names():
    args = docker.declared_args(DOCKERFILE)
    assert args["WHEEL"] == f"vllm-{PIN.overlay_version}-{WHEEL_TAGS}.whl"
    run = " ".join(ln for ln in instructions(DOCKERFILE) if ln.startswith("RUN "))
    assert '"/mnt/overlay/wheelhouse/${WHEEL}" --sha256 "${WHEEL_SHA256}"' in run
    assert "--mount=type=bind" in run  # the wheel never lands in a layer
    ignore = (REPO / ".dockerignore").read_text().split()
    for needed in ("!wheelhouse/*.whl", "!wheelhouse/*.cdx.json", "!vllm_overlay/publishing/in_image/overlay_install.py",
                   "!vllm_overlay/publishing/in_image/image_check.py"):
        assert needed in ignore


def test_source_build_arguments():
    args = docker.declared_args(SOURCE_DOCKERFILE)
    assert args["CUDA_DEVEL_IMAGE"].startswith("nvidia/cuda:") and "devel" in args["CUDA_DEVEL_IMAGE"]
    assert args["TORCH_CUDA_ARCH_LIST"] and args["MAX_JOBS"].isdigit()
    text = " ".join(docker.logical_lines(SOURCE_DOCKERFILE))
    assert "VLLM_USE_PRECOMPILED=0" in text and "RUN make wheel MODE=source" in text


def synthetic_wheelhouse(tmp_path: Path, **changes) -> Path:
    """A wheelhouse as `make wheel` leaves it for the repository's current VERSION + series."""
    house = tmp_path / "wheelhouse"
    house.mkdir()
    wheel = build_wheel(house, PIN.overlay_version)
    wheel = wheel.rename(house / f"vllm-{PIN.overlay_version}-{WHEEL_TAGS}.whl")
    sbom = house / wheel.name.replace(".whl", ".cdx.json")
    sbom.write_text("{}\n")
    write_sums(house, wheel, sbom)
    digest = (house / "SHA256SUMS").read_text().split()[0]
    manifest = {"version": PIN.overlay_version,
                "series": {"sha256": series.series_digest(series.read_series())},
                "wheel": {"filename": wheel.name, "sha256": digest}}
    manifest.update(changes)
    (house / "manifest-x86_64.json").write_text(json.dumps(manifest))
    return house


def command_args(command: list[str]) -> dict[str, str]:
    return dict(command[i + 1].split("=", 1) for i, a in enumerate(command) if a == "--build-arg")


def test_make_docker_args_come_from_version_lock_and_manifest(tmp_path):
    house = synthetic_wheelhouse(tmp_path)
    command = docker.docker_command("overlay", "x86_64", None, {}, wheelhouse=house)
    assert command[:4] == ["docker", "build", "-f", "Dockerfile"]
    assert command[command.index("--platform") + 1] == "linux/amd64"
    assert command[command.index("-t") + 1] == f"vllm-overlay:{PIN.overlay_version.replace('+', '-')}"
    args = command_args(command)
    defaults = docker.declared_args(DOCKERFILE)
    assert set(args) <= set(defaults)
    for key in ("VLLM_BASE_IMAGE", "UPSTREAM_VERSION", "OVERLAY_VERSION", "WHEEL", "SBOM"):
        assert args[key] == defaults[key], key
    assert args["SBOM_SHA256"] == index.read_sums(house)[args["SBOM"]]
    manifest = json.loads((house / "manifest-x86_64.json").read_text())
    assert args["WHEEL_SHA256"] == manifest["wheel"]["sha256"]
    assert args["SERIES_SHA256"] == manifest["series"]["sha256"]


def test_make_docker_source_args_are_declared():
    command = docker.docker_command("source", "x86_64", "me/img:1", {"MAX_JOBS": "8"})
    args = command_args(command)
    assert command[command.index("-f") + 1] == "docker/source.Dockerfile"
    assert args["MAX_JOBS"] == "8" and set(args) <= set(docker.declared_args(SOURCE_DOCKERFILE))
    with pytest.raises(OverlayError, match="Dockerfile declares no ARG MAX_JOBS"):
        docker.docker_command("overlay", "x86_64", None, {"MAX_JOBS": "8"})


@pytest.mark.parametrize("change, why", [({"version": "0.19.1+other.9"}, "VERSION"),
                                         ({"series": {"sha256": "0" * 64}}, "patch series")])
def test_a_stale_wheelhouse_is_refused(tmp_path, change, why):
    house = synthetic_wheelhouse(tmp_path, **change)
    with pytest.raises(OverlayError, match=f"a different {why} .*run `make wheel ARCH=x86_64`"):
        docker.build_args("overlay", "x86_64", wheelhouse=house)


def test_make_docker_says_clearly_when_no_engine_runs():
    problem = docker.engine_problem()
    if problem is None:
        pytest.skip("a Docker engine answers here: `make docker` would really build")
    proc = subprocess.run(["make", "-C", str(REPO), "docker", "MODE=source"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "error: cannot build the image: " in proc.stderr and "nothing was built" in proc.stderr
    assert "docker build -f docker/source.Dockerfile" in proc.stderr


def test_the_series_symbol_is_one_constant():
    """Nothing but image_check.py spells the symbol out; the Dockerfiles call image_check."""
    field = SERIES_SYMBOL[2]
    spelled = [p.relative_to(REPO) for p in (REPO / "vllm_overlay").rglob("*.py")
               if field in p.read_text()]
    spelled += [p.relative_to(REPO) for p in (DOCKERFILE, SOURCE_DOCKERFILE)
                if field in p.read_text()]
    assert spelled == [Path("vllm_overlay/publishing/in_image/image_check.py")]


def test_the_sbom_label_names_the_file_the_build_installs():
    text = DOCKERFILE.read_text()
    path = re.search(r'io\.vllm-overlay\.sbom="([^"]+)"', text)[1]
    run = " ".join(ln for ln in instructions(DOCKERFILE) if ln.startswith("RUN "))
    assert f'install -D -m 0644 "/mnt/overlay/wheelhouse/${{SBOM}}" {path}' in run
    assert "read_text('sboms/vllm.cdx.json')" in run and '"${SBOM_SHA256}"' in run
    assert docker.declared_args(DOCKERFILE)["SBOM"] == \
        f"vllm-{PIN.overlay_version}-{WHEEL_TAGS}.cdx.json"
