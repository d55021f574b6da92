"""Build modes through vLLM's setup.py: source-mode preflight and dry run (fake CUDA
toolkits made here), the setup-wheel verifier, the shared publish path, and (slow) the
cross-check of the real overlay and precompiled wheels."""

import dataclasses
import hashlib
import os
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vllm_overlay.wheelbuild import cross_check, preflight, setup_py
from vllm_overlay.wheelbuild import overlay_mode, record, wheelhouse
from vllm_overlay.wheelbuild.overlay import record_hash
from vllm_overlay.common import pin
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO

TORCH = pin.load().source_build.torch  # the pin's torch (a rebase moves it)


def fake_cuda(root: Path, release: str, exit_code: int = 0, headers: bool = True) -> Path:
    """A CUDA_HOME whose bin/nvcc is a script printing nvcc's real --version format."""
    (root / "bin").mkdir(parents=True)
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
                    f"echo 'Cuda compilation tools, release {release}, V{release}.88'\n"
                    f"exit {exit_code}\n")
    nvcc.chmod(0o755)
    if headers:
        (root / "include").mkdir()
        (root / "include" / "cuda_runtime.h").write_text("/* fake */\n")
    return root


def env_for(cuda_home: Path, **extra: str) -> dict:
    return {"PATH": os.environ["PATH"], "CUDA_HOME": str(cuda_home), **extra}


# what CMakeLists.txt builds per nvcc, and upstream's release arch lists (0.19.1, 0.20.0): the
# test's own data, so the defaults are checked the same whatever the pin is
CUDA_ARCHS = {"13.0": "7.5 8.0 8.6 8.7 8.9 9.0 10.0 11.0 12.0 12.1",
              "12.8": "7.0 7.2 7.5 8.0 8.6 8.7 8.9 9.0 10.0 10.1 12.0 12.1",
              "12.6": "7.0 7.2 7.5 8.0 8.6 8.7 8.9 9.0"}


def pin_with(release_arch_list: str) -> pin.Pin:
    the_pin = pin.load()
    return dataclasses.replace(the_pin, source_build_data={
        **the_pin.source_build_data, "cuda_archs": CUDA_ARCHS,
        "release_arch_list": release_arch_list})


@pytest.mark.parametrize("release_list, expected, dropped", [
    ("7.0 7.5 8.0 8.9 9.0 10.0 12.0", "7.5 8.0 8.9 9.0 10.0 12.0", "7.0"),  # 0.19.1's
    ("7.5 8.0 8.6 8.9 9.0 10.0 11.0 12.0+PTX", "7.5 8.0 8.6 8.9 9.0 10.0 11.0 12.0+PTX",
     None),  # 0.20.0's: 12.0+PTX is arch 12.0, which CUDA 13.0 builds
])
def test_preflight_defaults_to_upstreams_release_list(tmp_path, release_list, expected,
                                                      dropped):
    config = preflight.source_preflight(env_for(fake_cuda(tmp_path / "cuda", "13.0")),
                                        pin_with(release_list))
    assert config.arch_list == expected
    assert (f"cannot build {dropped})" in config.notes[0]) if dropped else \
        "cannot build" not in config.notes[0]


def test_preflight_accepts_a_supported_cuda_with_defaults(tmp_path):
    config = preflight.source_preflight(env_for(fake_cuda(tmp_path / "cuda", "13.0")))
    assert config.cuda == "13.0"
    release = pin.load().source_build  # the pin's release list, less what CUDA 13.0 cannot build
    kept = [a for a in release.release_arch_list.split()
            if a.split("+")[0].rstrip("af") in release.cuda_archs["13.0"].split()]
    assert config.arch_list.split() == kept and kept
    assert "upstream's release list" in config.notes[0]
    assert config.max_jobs == (os.cpu_count() or 1) and config.nvcc_threads == 1
    config = preflight.source_preflight(env_for(
        fake_cuda(tmp_path / "c128", "12.8"), TORCH_CUDA_ARCH_LIST="7.0;9.0a;12.0+PTX",
        MAX_JOBS="3", NVCC_THREADS="2"))
    assert (config.arch_list, config.max_jobs, config.nvcc_threads) == ("7.0;9.0a;12.0+PTX", 3, 2)
    assert config.torch_requirement() == (
        f"torch=={TORCH}+cu128", ("--extra-index-url", "https://download.pytorch.org/whl/cu128"))


@pytest.mark.parametrize("case, expected", [
    ("missing", r"needs nvcc, but there is no .*/cuda/bin/nvcc .*\(12\.6, 12\.8, 13\.0\)"),
    ("12.4", rf"is CUDA 12\.4; torch {re.escape(TORCH)} .* CUDA 12\.6, 12\.8, 13\.0 only"),
    ("broken", r"printed no 'release X\.Y'"),
    ("no-headers", r"no include/cuda_runtime\.h"),
    ("arch-7.0", r"'7\.0': CUDA 13\.0 .* builds only 7\.5"),
    ("arch-typo", r"'sm90' is not like 9\.0"),
    ("jobs", r"MAX_JOBS='0': must be a positive integer"),
])
def test_preflight_says_what_is_missing(tmp_path, case, expected):
    root, extra = tmp_path / "cuda", {}
    if case == "missing":
        root.mkdir()
    elif case == "12.4":
        fake_cuda(root, "12.4")
    elif case == "broken":
        fake_cuda(root, "13.0", exit_code=1)
    elif case == "no-headers":
        fake_cuda(root, "13.0", headers=False)
    else:
        fake_cuda(root, "13.0")
        extra = {"arch-7.0": {"TORCH_CUDA_ARCH_LIST": "7.0 9.0"},
                 "arch-typo": {"TORCH_CUDA_ARCH_LIST": "sm90"},
                 "jobs": {"MAX_JOBS": "0"}}[case]
    with pytest.raises(OverlayError, match=expected):
        preflight.source_preflight(env_for(root, **extra))


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vllm_overlay", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)


def test_source_dry_run_prints_the_command_and_builds_nothing(tmp_path):
    cuda = fake_cuda(tmp_path / "cuda", "12.8")
    before = sorted(p.name for p in (REPO / "wheelhouse").iterdir())
    env = {**os.environ, "CUDA_HOME": str(cuda), "TORCH_CUDA_ARCH_LIST": "8.0 9.0",
           "MAX_JOBS": "3", "NVCC_THREADS": "2", "VLLM_OVERLAY_CACHE": str(tmp_path / "c")}
    proc = cli("wheel", "--mode", "source", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    command = next(line for line in out.splitlines() if line.startswith("  env "))
    for part in (f"CUDA_HOME={cuda}", "MAX_JOBS=3", "NVCC_THREADS=2",
                 "'TORCH_CUDA_ARCH_LIST=8.0 9.0'", "VLLM_USE_PRECOMPILED=0",
                 "VLLM_TARGET_DEVICE=cuda", "setup.py bdist_wheel", "--py-limited-api=cp38"):
        assert part in command, part
    version = (REPO / "VERSION").read_text().strip()
    assert f"VLLM_VERSION_OVERRIDE={version}.cu128" in command
    assert f"torch=={TORCH}+cu128" in out and "whl/cu128" in out
    assert f"vllm-{version}.cu128-cp38-abi3-linux_x86_64.whl" in out
    assert sorted(p.name for p in (REPO / "wheelhouse").iterdir()) == before
    assert not (tmp_path / "c").exists()  # no venv, no download


def test_dry_run_fails_cleanly_without_nvcc_and_is_source_only(tmp_path):
    env = {**os.environ, "CUDA_HOME": str(tmp_path / "none")}
    proc = cli("wheel", "--mode", "source", "--dry-run", env=env)
    assert proc.returncode == 1 and "error: MODE=source needs nvcc" in proc.stderr
    proc = cli("wheel", "--mode", "precompiled", "--dry-run", env=env)
    assert proc.returncode == 1 and "--dry-run is for --mode source" in proc.stderr


@pytest.mark.skipif(not Path("/usr/local/cuda/bin/nvcc").exists(), reason="no local CUDA")
def test_preflight_on_this_machines_cuda():
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    config = preflight.source_preflight(env)
    assert config.cuda in config.release.torch_cuda_versions


# ------------------------------------------------------------- verify_setup_wheel

VERSION = "9.9.9+test.1"
INFO = f"vllm-{VERSION}.dist-info/"


def setup_like_wheel(path: Path, members: dict[str, bytes], tag="cp38-abi3-linux_x86_64",
                     version_in_file=VERSION, after: dict | None = None) -> Path:
    members = {**members,
               "vllm/_version.py": f"__version__ = version = '{version_in_file}'\n".encode(),
               INFO + "METADATA": f"Metadata-Version: 2.4\nName: vllm\nVersion: {VERSION}\n".encode(),
               INFO + "WHEEL": f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n\n".encode()}
    record = "".join(f"{n},{record_hash(d)},{len(d)}\n" for n, d in members.items())
    members[INFO + "RECORD"] = (record + f"{INFO}RECORD,,\n").encode()
    members.update(after or {})  # content changed after RECORD was written
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def tree(tmp_path):
    from vllm_overlay.wheelbuild import apply

    root = tmp_path / "tree"
    (root / "vllm").mkdir(parents=True)
    (root / "vllm" / "a.py").write_text("A = 1\n")
    apply.init_base(root, "2024-01-02T03:04:05Z")
    return root


UPSTREAM_INFO = "vllm-9.9.9.dist-info/"


def test_verify_setup_wheel_accepts_a_faithful_wheel_and_names_each_fault(tmp_path, tree):
    so = os.urandom(1024)
    upstream = setup_like_wheel(tmp_path / "up.whl", {"vllm/a.py": b"A = 1\n", "vllm/_C.so": so})
    with zipfile.ZipFile(upstream) as zf:  # an upstream-named dist-info for the lookup
        record = zf.read(INFO + "RECORD")
    with zipfile.ZipFile(upstream, "a") as zf:
        zf.writestr(UPSTREAM_INFO + "RECORD", record)
    up = (upstream, UPSTREAM_INFO)
    name = f"vllm-{VERSION}-cp38-abi3-linux_x86_64.whl"
    good = setup_like_wheel(tmp_path / name, {"vllm/a.py": b"A = 1\n", "vllm/_C.so": so})
    setup_py.verify_setup_wheel(good, VERSION, tree, up)

    cases = {
        "tree-edit": ({"vllm/a.py": b"A = 2\n", "vllm/_C.so": so}, {}, "a.py differs from the patched tree"),
        "binary": ({"vllm/a.py": b"A = 1\n", "vllm/_C.so": so[:-1]}, {}, "_C.so is not byte-identical"),
        "tag": ({"vllm/a.py": b"A = 1\n"}, {"tag": "cp311-cp311-linux_x86_64"}, "WHEEL tags"),
        "version": ({"vllm/a.py": b"A = 1\n"}, {"version_in_file": "9.9.9"}, "_version.py does not say"),
    }
    for case, (members, kwargs, message) in cases.items():
        (tmp_path / case).mkdir()
        bad = setup_like_wheel(tmp_path / case / name, members, **kwargs)
        with pytest.raises(OverlayError, match=re.escape(message)):
            setup_py.verify_setup_wheel(bad, VERSION, tree, up)
    stale = setup_like_wheel(tmp_path / name.replace(".whl", ".stale"), {"vllm/a.py": b"A = 1\n"},
                             after={"vllm/a.py": b"A = 3\n"})
    with pytest.raises(OverlayError, match="RECORD: wrong hash or size for vllm/a.py"):
        setup_py.verify_setup_wheel(stale, VERSION, tree, up)


# ------------------------------------------------------------- one publish path

def test_modes_publish_side_by_side_through_one_path(synth):
    from vllm_overlay.common import pin

    synth.seed_cache()
    the_pin = pin.load(synth.repo)
    overlay = overlay_mode.build_overlay_wheel("x86_64", synth.wheelhouse, synth.patches, synth.repo)
    calls = []

    def fake_mode_build(tmp_dir: Path):
        calls.append(tmp_dir)
        wheel = tmp_dir / "vllm-9.9.9+test.1-cp38-abi3-linux_x86_64.whl"
        wheel.write_bytes(overlay.read_bytes())  # only the publish path is under test
        return wheel, None, {"setup_py": {"seconds": 0}}

    build = dataclasses.replace(
        record.create(the_pin, "x86_64", "precompiled", [], synth.patches,
                      synth.repo / "locks", synth.repo), epoch=0, series_sha="s")
    for _ in range(2):  # the second call is a no-op: same key, file unchanged
        other = wheelhouse.store(synth.wheelhouse, build, "k1", fake_mode_build)
    assert len(calls) == 1 and other.name != overlay.name
    sums = dict(reversed(line.split("  ")) for line in
                (synth.wheelhouse / "SHA256SUMS").read_text().splitlines())
    assert sums[other.name] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert sums[overlay.name] == hashlib.sha256(overlay.read_bytes()).hexdigest()
    assert '"mode": "precompiled"' in (synth.wheelhouse / "manifest-precompiled-x86_64.json").read_text()
    assert '"mode": "overlay"' in (synth.wheelhouse / "manifest-x86_64.json").read_text()
    assert wheelhouse.last_built("precompiled", "x86_64", synth.wheelhouse) == other
    for wheel in (overlay, other):  # each mode's SBOM copy and provenance beside its wheel
        assert {wheel.name[:-4] + ".cdx.json", wheel.name[:-4] + ".intoto.json"} <= set(sums)
    assert not (synth.wheelhouse / ".tmp").exists()


# ------------------------------------------------------------- the real cross-check

# What must differ between the installed trees of the overlay wheel (A) and vLLM's own
# precompiled setup.py build (B) of the same tree, and why (docs/build-modes.md).
EXPECTED_DIFFERENCES = {
    # the file names and WHEEL tags differ on purpose: A keeps upstream's manylinux_2_31
    # name, B keeps what setup.py bdist_wheel --py-limited-api=cp38 says (linux_x86_64)
    "{info}WHEEL": "differs",
    # pip records the wheel's file URL, whose file name differs (see WHEEL)
    "{info}direct_url.json": "differs",
    # A writes the overlay's two-liner, B setuptools-scm's template: same values (checked)
    "vllm/_version.py": "differs",
    # pip's RECORD lists the hashes of the files above
    "{info}RECORD": "differs",
}


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.skipif(platform.machine() != "x86_64", reason="precompiled builds for the host")
@pytest.mark.once_per_inputs
def test_cross_check_overlay_vs_precompiled_installed_trees(tmp_path):
    house = tmp_path / "wheelhouse"  # never the real one: `make publish` uploads what is there
    overlay = overlay_mode.build_overlay_wheel("x86_64", house)
    precompiled = setup_py.build_setup_py_wheel("precompiled", "x86_64", house)
    diff = cross_check.compare_installed(overlay, precompiled, tmp_path)
    info = f"vllm-{(REPO / 'VERSION').read_text().strip()}.dist-info/"
    expected = {k.format(info=info): v for k, v in EXPECTED_DIFFERENCES.items()}
    assert diff == expected  # pytest shows each file dropped, added or changed
    a, b = tmp_path / "a", tmp_path / "b"
    wheel_a, wheel_b = ((p / info / "WHEEL").read_text().splitlines() for p in (a, b))
    assert [x for x in wheel_a if not x.startswith("Tag:")] == \
        [x for x in wheel_b if not x.startswith("Tag:")]
    assert [[x for x in w if x.startswith("Tag:")] for w in (wheel_a, wheel_b)] == \
        [["Tag: cp38-abi3-manylinux_2_31_x86_64"], ["Tag: cp38-abi3-linux_x86_64"]]
    values = [re.findall(r"^__\w+__ = \w+ = (.*)$", (p / "vllm/_version.py").read_text(), re.M)
              for p in (a, b)]
    assert values[0] == values[1] and len(values[0]) == 3
