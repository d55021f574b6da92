"""`rebase` on synthetic releases: the pin 1.0.0, the target 1.1.0, 1.0.5 between, 0.9.0 older.

Each release has an sdist and an x86_64 wheel on a file:// index (links with #sha256=). The
series, written against 1.0.0:

  U  replaces U_5 by helper()      1.0.5 and 1.1.0 define helper() and change U_5 too:
                                   its probe holds, it no longer applies -> dropped (1.0.5)
  A  changes A_20                  1.1.0 adds header lines               -> applied-clean
  C  adds Config.new_field         1.1.0 adds it elsewhere: probes hold, applies -> flagged
  D  changes D_10                  1.1.0 changes D_13, in the hunk's context -> applied-3way
  B  changes B_10                  1.1.0 changes B_10 too               -> conflict: stop
  E  adds vllm/e.py                                                     -> applied-clean
"""

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.tooling.helpers.synthetic import SYNTH_LOCK, link_supply_venv
from tests.tooling.helpers.upstream_releases import write_patches
from vllm_overlay.common import blobcache
from vllm_overlay.wheelbuild import apply, constraints, export, lockmeta, setup_py
from vllm_overlay.commands import apply as apply_command
from vllm_overlay.commands import export as export_command
from vllm_overlay.commands import rebase as rebase_command
from vllm_overlay.common import pin, series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.git import git
from vllm_overlay.publishing import docker
from vllm_overlay.testing import testenv
from vllm_overlay.upstream import rebase, treecheck

PIN, MID, TARGET, OLD = "1.0.0", "1.0.5", "1.1.0", "0.9.0"


def release_files(version: str) -> dict[str, str]:
    new = version in (MID, TARGET)
    u = "".join(f"U_{k} = {k}\n" for k in range(12))
    if new:
        u = u.replace("U_5 = 5\n", "U_5 = 'five'\ndef helper():\n    return 'five'\n")
    files = {"vllm/__init__.py": "", "vllm/_version.py": f"__version__ = version = '{version}'\n",
             "vllm/u.py": u, "vllm/a.py": "".join(f"A_{k} = {k}\n" for k in range(40)),
             "vllm/b.py": "".join(f"B_{k} = {k}\n" for k in range(20)),
             "vllm/c.py": "class Config:\n    old: int = 0\n"
                          + "".join(f"    x{k}: int = {k}\n" for k in range(8)),
             "vllm/d.py": "".join(f"D_{k} = {k}\n" for k in range(30)),
             "setup.py": "raise SystemExit('synthetic')\n",
             "requirements/common.txt": "numpy\n",
             "requirements/cuda.txt": "-r common.txt\ntorch==2.10.0\n",
             "requirements/build.txt": "ninja\ntorch==2.10.0\n"}
    files["vllm/m.py"] = "class Runner:\n" + "".join(
        f"    def m{k}(self):\n        return {k}\n" for k in range(6))
    if version == TARGET:  # vllm/m.py deleted, Runner rewritten in vllm/gpu/runner.py
        files["vllm/gpu/runner.py"] = '"""The runner, rewritten."""\n\nBASE = 10\n\n\n' \
            "class Runner:\n" + "".join(f"    def m{k}(self):\n        value = BASE + {k}\n"
                                         f"        return value\n" for k in range(6))
        del files["vllm/m.py"]
    if version == TARGET:  # newer torch; build requirements moved, as in vLLM 0.20
        files["requirements/cuda.txt"] = "-r common.txt\ntorch==2.11.0\n"
        files["requirements/build/cuda.txt"] = files.pop("requirements/build.txt").replace(
            "2.10.0", "2.11.0")
        files["docker/Dockerfile"] = "FROM scratch\nARG torch_cuda_arch_list='8.0 9.0'\n"
        files["vllm/a.py"] = "# upstream header 1\n# upstream header 2\n" + files["vllm/a.py"]
        files["vllm/b.py"] = files["vllm/b.py"].replace("B_10 = 10\n", "B_10 = 'upstream'\n") \
            .replace("B_3 = 3\n", "B_3 = 'same'\n")
        files["vllm/c.py"] += "    new_field: int | None = None  # upstream's own\n"
        files["vllm/d.py"] = files["vllm/d.py"].replace("D_13 = 13\n", "D_13 = 'upstream'\n")
    return files


PATCHES = {  # subject -> (edits, probes)
    "U: add helper": ({"vllm/u.py": lambda t: t.replace(
        "U_5 = 5\n", "def helper():\n    return 5\n")}, ["defines vllm/u.py::helper"]),
    "A: change A_20": ({"vllm/a.py": lambda t: t.replace("A_20 = 20", "A_20 = 'ours'")},
                       ["defines vllm/a.py::A_OURS"]),
    "C: add Config.new_field": (
        {"vllm/c.py": lambda t: t.replace("    old: int = 0\n", "    old: int = 0\n"
                                          "    new_field: int | None = None\n")},
        ["defines vllm/c.py::Config.new_field",
         "annotation vllm/c.py::Config.new_field int|None"]),
    "D: change D_10": ({"vllm/d.py": lambda t: t.replace("D_10 = 10", "D_10 = 'ours'")},
                       ["defines vllm/d.py::D_OURS"]),
    "B: change B_10": ({"vllm/b.py": lambda t: t.replace("B_10 = 10", "B_10 = 'ours'")},
                       ["defines vllm/b.py::B_OURS"]),
    "E: add e.py": ({"vllm/e.py": lambda t: "E = 1\n"}, ["defines vllm/e.py::E"]),
}


SOURCE_BUILD = {"torch": "2.10.0", "torch_cuda_versions": ["12.8"], "torch_index": "x/{tag}",
                "cuda_archs": {"12.8": "8.0 9.0 10.0"}, "release_arch_list": "8.0 10.0"}


def make_sdist(path: Path, version: str) -> None:
    # byte-identical every time (gzip's mtime fixed): one SBOM input per release (conftest)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=1_700_000_000) \
            as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, text in {**release_files(version), "PKG-INFO": f"Version: {version}\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"vllm-{version}/{name}")
            info.size, info.mtime = len(data), 1_700_000_000 + 86400 * int(version[2])
            tar.addfile(info, io.BytesIO(data))


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def make_wheel(path: Path, version: str) -> None:
    members = {n: t.encode() for n, t in release_files(version).items() if n.startswith("vllm/")}
    members["vllm/_C.abi3.so"] = hashlib.sha256(version.encode()).digest() * 1000
    info = f"vllm-{version}.dist-info/"
    requires = REQUIRES_DIST if version == TARGET else ""  # the pin's lock lacks numpy
    members[info + "METADATA"] = (f"Metadata-Version: 2.4\nName: vllm\nVersion: {version}\n"
                                  f"{requires}").encode()
    members[info + "WHEEL"] = b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\n" \
                              b"Tag: cp38-abi3-linux_x86_64\n\n"
    record = "".join(f"{n},{_record_hash(d)},{len(d)}\n" for n, d in members.items())
    members[info + "RECORD"] = (record + f"{info}RECORD,,\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 2, 3, 4, 6)), data)


REQUIRES_DIST = "Requires-Dist: numpy>=1.0\nRequires-Dist: pytest; extra == \"test\"\n"


def wheel_name(version: str) -> str:
    return f"vllm-{version}-cp38-abi3-manylinux_2_31_x86_64.whl"


def lock_entry(path: Path) -> dict:
    data = path.read_bytes()
    return {"filename": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_index(root: Path, dist: Path, fragment=lambda path: lock_entry(path)["sha256"]) -> None:
    project = root / "index" / "vllm"
    project.mkdir(parents=True, exist_ok=True)
    links = [f'<a href="{p.as_uri()}#sha256={fragment(p)}">{p.name}</a>'
             for p in sorted(dist.iterdir())]
    (project / "index.html").write_text("<html><body>\n" + "\n".join(links) + "\n</body>")


def git_commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


DOCKERFILE = f"""# syntax=docker/dockerfile:1 (pinned {PIN}: these defaults follow the pin)
ARG VLLM_BASE_IMAGE=vllm/vllm-openai:v{PIN}
FROM ${{VLLM_BASE_IMAGE}}
ARG UPSTREAM_VERSION={PIN}
ARG OVERLAY_VERSION={PIN}+test.3
ARG WHEEL=vllm-{PIN}+test.3-cp38-abi3-manylinux_2_31_x86_64.whl
ARG CUDA=12.1.0.0
LABEL io.vllm-overlay.upstream-version="${{UPSTREAM_VERSION}}"
"""


@pytest.fixture
def repo(tmp_path, monkeypatch, supply_venv, network_lock) -> Path:
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path / "cache"))
    link_supply_venv(tmp_path / "cache", supply_venv)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    dist = tmp_path / "dist"
    dist.mkdir()
    for version in (OLD, PIN, MID, TARGET):
        make_sdist(dist / f"vllm-{version}.tar.gz", version)
        make_wheel(dist / wheel_name(version), version)
    write_index(tmp_path, dist)
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "index").as_uri())
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "VERSION").write_text(f"{PIN}+test.3\n")
    (repo / "upstream.lock.json").write_text(json.dumps({
        "project": "vllm", "version": PIN, "released": "2023-11-14T00:00:00Z",
        "artifacts": {"sdist": lock_entry(dist / f"vllm-{PIN}.tar.gz"),
                      "wheel-x86_64": lock_entry(dist / wheel_name(PIN))},
        "source_build": SOURCE_BUILD}, indent=2) + "\n")
    (repo / "locks").mkdir()
    (repo / "locks" / "runtime-x86_64.txt").write_text(SYNTH_LOCK)
    (repo / "Dockerfile").write_text(DOCKERFILE)
    (repo / "docker").mkdir()
    (repo / "docker" / "source.Dockerfile").write_text(DOCKERFILE.replace("WHEEL", "SOURCE"))
    (repo / constraints.TEST_REQUIREMENTS).parent.mkdir(parents=True)
    (repo / constraints.TEST_REQUIREMENTS).write_text("pytest\n")
    (repo / ".gitignore").write_text("/work/\n/reports/\n/wheelhouse/\n")
    write_patches(repo / "patches", dist / f"vllm-{PIN}.tar.gz", tmp_path, PATCHES)
    git(repo, "init", "-q")
    git_commit_all(repo, "the pin")
    return repo


class Args:
    def __init__(self, to=None, resume=False, abort=False):
        self.to, self.resume, self.abort, self.no_wheel, self.arch = to, resume, abort, False, \
            "x86_64"


def pinned_bytes(repo: Path) -> dict[str, bytes]:
    """patches/, VERSION, upstream.lock.json and locks/, byte for byte (and which exist)."""
    files = [repo / "VERSION", repo / "upstream.lock.json", *sorted((repo / "patches").iterdir()),
             *sorted((repo / "locks").rglob("*")), repo / "Dockerfile",
             repo / "docker" / "source.Dockerfile"]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files}


def by_subject(log: dict) -> dict[str, dict]:
    return {o["patch"][5:6]: o for o in log["patches"]}


def message(patch: series.Patch) -> str:
    """The patch's mail header and message, trailers included (everything before the diff)."""
    return patch.path.read_text().split("\ndiff --git ", 1)[0]


def test_rebase_stops_at_a_conflict_then_continue_completes(repo, tmp_path, capsys):
    before = pinned_bytes(repo)
    old_messages = {p.subject: message(p) for p in series.read_series(repo / "patches")}
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    out = capsys.readouterr().out
    # stopped at B, the repository untouched, the merge left in the work tree for a human
    assert pinned_bytes(repo) == before
    assert git(repo, "status", "--porcelain").stdout == ""
    tree = repo / "work" / "rebase" / f"vllm-{TARGET}"
    assert "<<<<<<<" in (tree / "vllm/b.py").read_text()
    assert (tree / ".git" / "rebase-apply").exists()
    assert "to resolve: vllm/b.py" in out and "git am --continue" in out and "make rebase CONTINUE=1" in out
    assert "hunk #1 of 1: @@ -8,7 +8,7 @@" in out
    log = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())
    assert log["state"] == "stopped"
    results = {k: o["result"] for k, o in by_subject(log).items()}
    assert results == {"U": "dropped-upstream", "A": "applied-clean", "C": "flagged",
                       "D": "applied-3way", "B": "conflict", "E": "pending"}
    assert by_subject(log)["B"]["files"] == ["vllm/b.py"]
    assert by_subject(log)["B"]["hunks"] == [
        "vllm/b.py: hunk #1 of 1: @@ -8,7 +8,7 @@ B_6 = 6 does not match"]

    with pytest.raises(OverlayError, match="git am` is still in progress"):
        rebase_command.run(Args(resume=True), repo)
    with pytest.raises(OverlayError, match="in progress"):
        rebase_command.run(Args(to=TARGET), repo)
    # the human resolves: keep upstream's B_10 and ours as B_OURS
    (tree / "vllm/b.py").write_text(release_files(TARGET)["vllm/b.py"] + "B_OURS = 'ours'\n")
    git(tree, "add", "vllm/b.py")
    git(tree, "am", "--continue")
    assert rebase_command.run(Args(resume=True), repo) == 0
    out = capsys.readouterr().out
    assert "make test" in out and "flagged for a human: 0003" in out
    assert out.rstrip().endswith(f"next: `make test` (its runtime venv installs "
                                 f"locks/runtime-x86_64.txt, re-locked for {TARGET}), then "
                                 f"`make changelog` (the move's release notes: the pin, the "
                                 f"patches dropped upstream, the runtime changes)")

    log = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())
    outcomes = by_subject(log)
    assert log["state"] == "complete" and log["next"] == ["make test", "make changelog"]
    assert {k: o["result"] for k, o in outcomes.items()} == {
        "U": "dropped-upstream", "A": "applied-clean", "C": "flagged", "D": "applied-3way",
        "B": "conflict", "E": "applied-clean"}
    assert outcomes["U"]["release"] == MID  # the first release whose tree has helper()
    assert outcomes["B"]["resolution"] == "resolved by hand"
    assert "shifted lines" in outcomes["A"]["detail"]
    md = (repo / "reports" / f"rebase-{PIN}-{TARGET}.md").read_text()
    assert "dropped-upstream (in 1.0.5)" in md and f"| flagged (probes hold from {TARGET}) |" in md

    # the new pin: VERSION keeps the label, the lock names the target's verified artifacts
    assert (repo / "VERSION").read_text() == f"{TARGET}+test.1\n"
    the_pin = pin.load(repo)
    assert the_pin.upstream_version == TARGET and the_pin.released == "2023-11-15T00:00:00Z"
    dist = tmp_path / "dist"
    for key, name in (("sdist", f"vllm-{TARGET}.tar.gz"), ("wheel-x86_64", wheel_name(TARGET))):
        art = the_pin.artifacts[key]
        assert lock_entry(dist / name) == {"filename": art.filename, "size": art.size,
                                           "sha256": art.sha256}
        blobcache.verify_file(dist / name, art)
    assert log["lock"] == json.loads((repo / "upstream.lock.json").read_text())

    # the series: U gone, the others in order with their own headers; it applies exactly
    # to the target and re-exports byte-identically (what check-patches checks)
    patches = series.read_series(repo / "patches")
    assert [p.subject[0] for p in patches] == ["A", "C", "D", "B", "E"]
    for patch in patches:  # headers, message and trailers unchanged byte for byte
        assert message(patch) == old_messages[patch.subject]
    fresh_tree = apply.apply_series(blobcache.blob_path(the_pin.sdist.sha256), patches,
                                    tmp_path / "fresh" / "tree", the_pin.released)
    export.export(fresh_tree, tmp_path / "fresh" / "patches")
    assert export.compare_exports(repo / "patches", tmp_path / "fresh" / "patches") == []
    assert "B_OURS = 'ours'" in (fresh_tree / "vllm/b.py").read_text()
    assert "D_13 = 'upstream'" in (fresh_tree / "vllm/d.py").read_text()
    # the runtime venv (make test) and the build venv (MODE=precompiled) follow the new pin
    assert constraints.sdist_requirements(blobcache.blob_path(the_pin.sdist.sha256)) == [
        "numpy", "torch==2.11.0"]
    assert the_pin.source_build.torch == "2.11.0"
    assert setup_py.build_requirements(fresh_tree, the_pin.source_build.torch) == [
        "ninja", "torch==2.11.0"]
    assert the_pin.source_build.release_arch_list == "8.0 9.0"  # from its docker/Dockerfile
    assert the_pin.source_build.cuda_archs == SOURCE_BUILD["cuda_archs"]  # carried over, and
    assert any("torch 2.10.0 -> 2.11.0" in note for note in log["notes"])  # said so
    assert "## For a human" in md
    # the wheel for the new pin was built, and the work tree is gone
    assert (repo / "wheelhouse" / f"vllm-{TARGET}+test.1-cp38-abi3-manylinux_2_31_x86_64.whl"
            ).is_file()
    assert not (repo / "work" / "rebase").exists()
    # the runtime lock follows the new pin, made by make lock's own code before the build
    # (the build refuses a lock without the target's numpy): the wheel's Requires-Dist, the
    # lock, its metadata record and the constraints file agree
    assert (repo / "locks" / "runtime-x86_64.in").read_text().startswith(
        f"# Requires-Dist of vllm {TARGET} ({wheel_name(TARGET)})")
    assert constraints.read_lock(constraints.runtime_lock("x86_64", repo))[1] == {"numpy": "1.0"}
    assert lockmeta.lock_follows("x86_64", repo)
    published = (repo / "wheelhouse" / "constraints-x86_64.txt").read_text()
    assert "numpy==1.0 " in published and f"vllm=={TARGET}+test.1 " in published
    # the Dockerfiles' defaults name the new pin (make docker and its tests read them)
    assert docker.declared_args(repo / "Dockerfile") == {
        "VLLM_BASE_IMAGE": f"vllm/vllm-openai:v{TARGET}", "UPSTREAM_VERSION": TARGET,
        "OVERLAY_VERSION": f"{TARGET}+test.1",
        "WHEEL": f"vllm-{TARGET}+test.1-cp38-abi3-manylinux_2_31_x86_64.whl", "CUDA": "12.1.0.0"}
    assert docker.declared_args(repo / "docker" / "source.Dockerfile")["SOURCE"] == \
        f"vllm-{TARGET}+test.1-cp38-abi3-manylinux_2_31_x86_64.whl"
    assert (repo / "Dockerfile").read_text().startswith(f"# syntax=docker/dockerfile:1 (pinned {PIN}")
    # a second rebase to the same release is a no-op
    git_commit_all(repo, "rebased")
    after = pinned_bytes(repo)
    assert rebase_command.run(Args(to=TARGET), repo) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert pinned_bytes(repo) == after


def test_rebase_relocks_before_it_builds_and_stops_with_the_command_when_it_cannot(
        repo, network_lock, capsys, monkeypatch):
    built = []
    monkeypatch.setattr(rebase_command, "build_overlay_wheel",
                        lambda *a: built.append(network_lock.calls[:]) or "wheel built")
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    tree = repo / "work" / "rebase" / f"vllm-{TARGET}"
    git(tree, "am", "--skip")
    network_lock.fail = "error: Failed to fetch: `https://pypi.org/simple/numpy/` (offline)"
    assert rebase_command.run(Args(resume=True), repo) == 1
    out = capsys.readouterr().out
    assert "stopped before the build: the runtime lock does not follow 1.1.0" in out
    assert "make lock ARCH=x86_64 failed: uv pip compile (runtime-x86_64.txt) failed" in out
    assert "\n  make lock ARCH=x86_64\n  make rebase CONTINUE=1" in out
    assert built == [] and (repo / "VERSION").read_text() == f"{TARGET}+test.1\n"
    log = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())
    assert log["state"] == "stopped" and log["next"] == ["make lock ARCH=x86_64",
                                                         "make rebase CONTINUE=1"]
    # the human runs `make lock ARCH=x86_64` (the command's own code), then CONTINUE=1
    network_lock.fail = None
    lockmeta.lock_pin("x86_64", repo)
    network_lock.calls.clear()
    assert rebase_command.run(Args(resume=True), repo) == 0
    assert built == [[]]  # the lock already followed the pin: not made again, then built
    assert "next: `make test`" in capsys.readouterr().out
    assert not (repo / "work" / "rebase").exists()


def test_continue_after_a_failed_lock_locks_itself_then_builds(repo, network_lock, monkeypatch):
    built = []
    monkeypatch.setattr(rebase_command, "build_overlay_wheel",
                        lambda *a: built.append(network_lock.calls[:]) or "wheel built")
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    git(repo / "work" / "rebase" / f"vllm-{TARGET}", "am", "--skip")
    network_lock.fail = "offline"
    assert rebase_command.run(Args(resume=True), repo) == 1
    network_lock.fail = None
    network_lock.calls.clear()
    assert rebase_command.run(Args(resume=True), repo) == 0
    assert built == [["compile runtime-x86_64.txt", "compile .test-x86_64.joint.txt"]]
    assert lockmeta.lock_follows("x86_64", repo)


def test_abort_at_the_lock_stop_puts_everything_back(repo, network_lock, capsys):
    before = pinned_bytes(repo)
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    git(repo / "work" / "rebase" / f"vllm-{TARGET}", "am", "--skip")
    network_lock.fail = "offline"
    assert rebase_command.run(Args(resume=True), repo) == 1
    assert pinned_bytes(repo) != before
    assert (repo / "locks" / "runtime-x86_64.in").exists()  # left by the failed lock step
    capsys.readouterr()
    rebase_command.run(Args(abort=True), repo)
    out = capsys.readouterr().out
    assert "never touched" not in out and "restored" in out
    assert pinned_bytes(repo) == before
    assert git(repo, "status", "--porcelain").stdout == ""
    assert not (repo / "work" / "rebase").exists()


def test_a_stop_on_a_file_upstream_deleted_says_git_rm_and_where_the_code_went(
        repo, tmp_path, capsys):
    shutil.rmtree(repo / "patches")
    write_patches(repo / "patches", tmp_path / "dist" / f"vllm-{PIN}.tar.gz", tmp_path / "m", {
        "M: change Runner.m3": ({"vllm/m.py": lambda t: t.replace("return 3", "return 'ours'")},
                                ["defines vllm/m.py::Runner.never"])})
    git_commit_all(repo, "series M")
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    out = capsys.readouterr().out
    assert "): deleted on 1.1.0" in out and "upstream deleted vllm/m.py, which it changes" in out
    assert "`git rm vllm/m.py`" in out and "git rm -q vllm/m.py" in out
    assert "where the code went: vllm/gpu/runner.py::Runner.m3 (drift)" in out
    assert "git add vllm/m.py" not in out and "to resolve: vllm/m.py" not in out
    log = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())
    outcome = log["patches"][0]
    assert outcome["result"] == "deleted" and outcome["deleted"] == ["vllm/m.py"]
    assert outcome["moved_to"] == {"vllm/m.py": ["vllm/gpu/runner.py::Runner.m3"]}
    md = (repo / "reports" / f"rebase-{PIN}-{TARGET}.md").read_text()
    assert "| deleted | upstream deleted vllm/m.py" in md
    assert "`vllm/m.py`'s code went to `vllm/gpu/runner.py::Runner.m3`" in md
    # the human follows the advice: the dead file removed, the hunk ported
    tree = repo / "work" / "rebase" / f"vllm-{TARGET}"
    git(tree, "rm", "-q", "vllm/m.py")
    runner = tree / "vllm/gpu/runner.py"
    runner.write_text(runner.read_text().replace("BASE + 3\n", "'ours'\n"))
    git(tree, "add", "vllm/gpu/runner.py")
    git(tree, "am", "--continue")
    assert rebase_command.run(Args(resume=True), repo) == 0
    (patch,) = series.read_series(repo / "patches")
    assert patch.files == ["vllm/gpu/runner.py"]


class Killed(BaseException):
    """What SIGKILL leaves: the run ends where it is, nothing of ours cleans up."""


def _results(repo: Path) -> dict[str, str]:
    log = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())
    return {k: o["result"] for k, o in by_subject(log).items()}


UNINTERRUPTED = {"U": "dropped-upstream", "A": "applied-clean", "C": "flagged",
                 "D": "applied-3way", "B": "conflict", "E": "pending"}


@pytest.mark.parametrize("where", ["after git am committed", "inside a 3-way git am"])
def test_continue_after_a_kill_while_placing_a_patch_places_it_again(repo, monkeypatch, where):
    real_place = rebase.place

    def killed(tree, patch, probe_results):
        if patch.subject.startswith("D"):
            if where == "after git am committed":
                real_place(tree, patch, probe_results)
            else:  # git am stopped half-way: its rebase-apply/ and a dirty index are left
                git(tree, "am", "-q", str(patch.path), check=False)
                assert (tree / ".git" / "rebase-apply").exists()
            raise Killed
        return real_place(tree, patch, probe_results)

    monkeypatch.setattr(rebase, "place", killed)
    with pytest.raises(Killed):
        rebase_command.run(Args(to=TARGET), repo)
    monkeypatch.setattr(rebase, "place", real_place)
    assert rebase_command.run(Args(resume=True), repo) == 1  # no TypeError: on to B's stop
    assert _results(repo) == UNINTERRUPTED
    tree = repo / "work" / "rebase" / f"vllm-{TARGET}"
    subjects = git(tree, "log", "--format=%s", f"{apply.BASE_TAG}..HEAD").stdout.split("\n")
    assert [s[:1] for s in subjects if s] == ["D", "C", "A"]  # D once, B being resolved


def test_a_kill_while_the_rebase_starts_leaves_nothing_to_lose(repo, monkeypatch, capsys):
    before = pinned_bytes(repo)
    with monkeypatch.context() as patched, pytest.raises(Killed):
        patched.setattr(rebase.status, "run_probes", lambda *a: (_ for _ in ()).throw(Killed))
        rebase_command.run(Args(to=TARGET), repo)  # tree unpacked, state.json not written yet
    assert (repo / "work" / "rebase" / f"vllm-{TARGET}").is_dir()
    with pytest.raises(OverlayError, match="no rebase in progress .*state.json does not exist"):
        rebase_command.run(Args(resume=True), repo)
    rebase_command.run(Args(abort=True), repo)
    assert "were never touched" in capsys.readouterr().out
    assert pinned_bytes(repo) == before and not (repo / "work" / "rebase").exists()
    assert rebase_command.run(Args(to=TARGET), repo) == 1  # and a new start works


@pytest.mark.parametrize("killed_at", ["VERSION", "upstream.lock.json"])
def test_a_kill_while_the_pin_is_written_aborts_to_the_exact_state_before(
        repo, monkeypatch, capsys, killed_at):
    before = pinned_bytes(repo)
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    git(repo / "work" / "rebase" / f"vllm-{TARGET}", "am", "--skip")
    real_write = rebase.atomic_write

    def write(dest, data, *a, **k):
        if Path(dest).name == killed_at:
            raise Killed
        return real_write(dest, data, *a, **k)

    monkeypatch.setattr(rebase, "atomic_write", write)
    with pytest.raises(Killed):
        rebase_command.run(Args(resume=True), repo)
    monkeypatch.setattr(rebase, "atomic_write", real_write)
    assert pinned_bytes(repo) != before  # patches/ (at least) already rewritten
    capsys.readouterr()
    rebase_command.run(Args(abort=True), repo)
    out = capsys.readouterr().out
    assert "never touched" not in out and f"restored to {PIN}" in out
    assert pinned_bytes(repo) == before
    assert git(repo, "status", "--porcelain", "--untracked-files=all").stdout == ""


def test_continue_after_a_kill_while_the_pin_is_written_completes(repo, monkeypatch):
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    git(repo / "work" / "rebase" / f"vllm-{TARGET}", "am", "--skip")
    real_write = rebase.atomic_write
    monkeypatch.setattr(rebase, "atomic_write", lambda dest, data, *a, **k: (_ for _ in ()).throw(
        Killed) if Path(dest).name == "VERSION" else real_write(dest, data, *a, **k))
    with pytest.raises(Killed):
        rebase_command.run(Args(resume=True), repo)
    monkeypatch.setattr(rebase, "atomic_write", real_write)
    (repo / "patches" / ".export-killed").mkdir()  # what a kill inside the export leaves
    (repo / "patches" / ".export-killed" / "0001-A.patch").write_text("half\n")
    assert rebase_command.run(Args(resume=True), repo) == 0
    assert not (repo / "patches" / ".export-killed").exists()
    assert (repo / "VERSION").read_text() == f"{TARGET}+test.1\n"
    assert pin.load(repo).upstream_version == TARGET and lockmeta.lock_follows("x86_64", repo)
    assert [p.subject[0] for p in series.read_series(repo / "patches")] == ["A", "C", "D", "E"]
    assert not (repo / "work" / "rebase").exists()


class TreeArgs:
    def __init__(self, tree: Path):
        self.tree = tree


def test_make_apply_refuses_to_delete_commits_or_changes_not_exported(repo):
    args = TreeArgs(repo / "work" / "tree")
    apply_command.run(args, repo)
    tree = args.tree / f"vllm-{PIN}"
    (tree / "vllm/e.py").write_text("E = 2\n")
    with pytest.raises(OverlayError, match=r"has 1 file\(s\) with uncommitted changes .*"
                                           r"would delete them"):
        apply_command.run(args, repo)
    git(tree, "commit", "-q", "-a", "-m", "F: E = 2\n\nOrigin: vendor\nRisk: none\n")
    head = git(tree, "rev-parse", "HEAD").stdout
    with pytest.raises(OverlayError, match=r"has 1 commit\(s\) not exported to patches/"):
        apply_command.run(args, repo)
    assert git(tree, "rev-parse", "HEAD").stdout == head  # kept
    export_command.run(args, repo)
    assert len(series.read_series(repo / "patches")) == 7
    apply_command.run(args, repo)  # everything is in patches/ now: a fresh tree is safe
    assert git(tree, "log", "-1", "--format=%s").stdout.strip() == "F: E = 2"


def test_make_export_patches_refuses_a_tree_older_than_the_series(repo, monkeypatch):
    args = TreeArgs(repo / "work" / "tree")
    apply_command.run(args, repo)
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    git(repo / "work" / "rebase" / f"vllm-{TARGET}", "am", "--skip")
    monkeypatch.setattr(rebase_command, "build_overlay_wheel", lambda *a: "wheel built")
    assert rebase_command.run(Args(resume=True), repo) == 0
    rebased = pinned_bytes(repo)
    with pytest.raises(OverlayError, match=f"no work tree of the pin {TARGET} under .* \\(only "
                                           f"vllm-{PIN}, made for another pin"):
        export_command.run(args, repo)
    assert pinned_bytes(repo) == rebased
    apply_command.run(args, repo)  # the new pin's tree; the old one is left alone
    export_command.run(args, repo)
    assert pinned_bytes(repo) == rebased
    # the same pin, but patches/ changed after `make apply` (a pull): the tree is stale
    git_commit_all(repo, "rebased")
    (repo / "patches" / "0001-A-change-A_20.patch").unlink()
    (repo / "patches" / "series").write_text(
        (repo / "patches" / "series").read_text().replace("0001-A-change-A_20.patch\n", ""))
    changed = pinned_bytes(repo)
    with pytest.raises(OverlayError, match="no commits since `make apply`, and patches/ "
                                           "changed since"):
        export_command.run(args, repo)
    tree = args.tree / f"vllm-{TARGET}"
    (tree / "vllm/e.py").write_text("E = 3\n")
    git(tree, "commit", "-q", "-a", "-m", "F: E = 3\n\nOrigin: vendor\nRisk: none\n")
    with pytest.raises(OverlayError, match="has new commits, but patches/ also changed"):
        export_command.run(args, repo)
    assert pinned_bytes(repo) == changed


def test_skipping_the_conflicting_patch_drops_it(repo, capsys):
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    tree = repo / "work" / "rebase" / f"vllm-{TARGET}"
    git(tree, "am", "--skip")
    assert rebase_command.run(Args(resume=True), repo) == 0
    log = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())
    assert by_subject(log)["B"]["resolution"].startswith("dropped by hand")
    assert [p.subject[0] for p in series.read_series(repo / "patches")] == ["A", "C", "D", "E"]


def test_a_change_upstream_has_but_whose_probe_fails_stops_for_a_human(repo, tmp_path):
    shutil.rmtree(repo / "patches")
    write_patches(repo / "patches", tmp_path / "dist" / f"vllm-{PIN}.tar.gz", tmp_path / "g", {
        "G: change B_3": ({"vllm/b.py": lambda t: t.replace("B_3 = 3", "B_3 = 'same'")},
                          ["defines vllm/b.py::B_NEVER"])})
    git_commit_all(repo, "series G")
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    outcome = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())[
        "patches"][0]
    assert outcome["result"] == "conflict" and "already contains" in outcome["detail"]
    assert rebase_command.run(Args(resume=True), repo) == 0  # nothing committed: dropped
    log = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())
    assert log["patches"][0]["resolution"].startswith("dropped by hand")
    assert series.read_series(repo / "patches") == []


def test_abort_leaves_nothing(repo):
    before = pinned_bytes(repo)
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    rebase_command.run(Args(abort=True), repo)
    assert not (repo / "work" / "rebase").exists()
    assert pinned_bytes(repo) == before
    with pytest.raises(OverlayError, match="no rebase in progress"):
        rebase_command.run(Args(resume=True), repo)


def test_pin_is_a_noop_and_older_or_unknown_releases_are_errors(repo, capsys):
    before = pinned_bytes(repo)
    assert rebase_command.run(Args(to=PIN), repo) == 0
    assert "nothing to do" in capsys.readouterr().out
    with pytest.raises(OverlayError, match=f"TO={OLD} is older than the pin {PIN}"):
        rebase_command.run(Args(to=OLD), repo)
    with pytest.raises(OverlayError, match=r"release\(s\) 7.0.0 not on the index"):
        rebase_command.run(Args(to="7.0.0"), repo)
    assert pinned_bytes(repo) == before and not (repo / "work").exists()


@pytest.mark.parametrize("to", [f"{MID}..{TARGET}", "..", f"{MID},{TARGET}", " "])
def test_a_target_that_is_not_one_release_is_refused(repo, to):
    before = pinned_bytes(repo)
    with pytest.raises(OverlayError, match=f"TO={to!r} is not one release"):
        rebase_command.run(Args(to=to), repo)
    assert pinned_bytes(repo) == before and not (repo / "work").exists()


def test_conflicting_options_are_refused_by_make_too(repo):
    with pytest.raises(OverlayError, match=f"rebase: TO={TARGET} and CONTINUE=1 conflict"):
        rebase_command.run(Args(to=TARGET, resume=True), repo)
    with pytest.raises(OverlayError, match="rebase: CONTINUE=1 and ABORT=1 conflict"):
        rebase_command.run(Args(resume=True, abort=True), repo)
    # the Makefile passes every one it is given (it used to drop TO when CONTINUE was set)
    make = subprocess.run(["make", "-n", "rebase", "CONTINUE=1", f"TO={TARGET}"],
                          cwd=Path(__file__).resolve().parents[3], capture_output=True,
                          text=True, check=True).stdout
    assert "--continue" in make and f"--to '{TARGET}'" in make


def test_an_unreachable_index_is_named(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "no-such-index").as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    with pytest.raises(OverlayError, match=r"vllm: pip's index cannot be read: "
                                           r"file://\S*/no-such-index/vllm/ \("):
        rebase_command.run(Args(to=TARGET), repo)


def test_a_truncated_download_says_how_many_bytes_are_missing(tmp_path):
    whole = tmp_path / "whole.bin"
    whole.write_bytes(b"x" * 1000)
    short = tmp_path / "short.bin"
    short.write_bytes(b"x" * 600)  # what a connection closed early delivers
    art = pin.Artifact("sdist", "vllm-9.tar.gz", 1000, hashlib.sha256(whole.read_bytes()).hexdigest())
    with pytest.raises(OverlayError, match=r"vllm-9.tar.gz: download from \S+ truncated: got "
                                           r"600 of 1000 bytes \(400 missing\)"):
        blobcache.download_pinned(short.as_uri(), tmp_path / "dest", art)
    assert not list(tmp_path.glob("dest*"))


def test_a_truncated_copy_in_the_cache_says_both_sizes(repo, tmp_path):
    wheel = tmp_path / "dist" / wheel_name(TARGET)
    blob = blobcache.blob_path(lock_entry(wheel)["sha256"])
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(wheel.read_bytes()[:500])
    size = wheel.stat().st_size
    with pytest.raises(OverlayError, match=rf"{wheel.name}: the cached copy \S+ has 500 bytes, "
                                           rf"the index's file {size} \({size - 500} missing: "
                                           rf"truncated\).*delete it"):
        rebase_command.run(Args(to=TARGET), repo)


def test_uncommitted_pin_files_are_refused(repo):
    (repo / "VERSION").write_text(f"{PIN}+test.4\n")
    with pytest.raises(OverlayError, match="(?s)clean checkout.*M VERSION"):
        rebase_command.run(Args(to=TARGET), repo)


def test_an_artifact_that_does_not_match_the_index_hash_is_refused(repo, tmp_path):
    dist = tmp_path / "dist"
    wrong = {wheel_name(TARGET): "0" * 64}
    write_index(tmp_path, dist, lambda p: wrong.get(p.name) or lock_entry(p)["sha256"])
    before = pinned_bytes(repo)
    with pytest.raises(OverlayError, match=f"{wheel_name(TARGET)}: downloaded .* sha256"):
        rebase_command.run(Args(to=TARGET), repo)
    assert pinned_bytes(repo) == before
    assert not (tmp_path / "cache" / "sha256" / ("0" * 64)).exists()


def test_new_version_keeps_the_local_label():
    assert rebase.new_version("0.19.1+mmcg.1", "0.20.0") == "0.20.0+mmcg.1"
    assert rebase.new_version("0.19.1+mmcg.7", "0.33.0") == "0.33.0+mmcg.1"
    assert rebase.new_version("0.19.1+mmcg", "0.33.0") == "0.33.0+mmcg.1"


def test_a_target_whose_runtime_does_not_resolve_is_refused_before_any_work(
        repo, network_lock, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip's indexes: the release index alone
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    network_lock.missing = {"torch==2.11.0"}  # the target's runtime pin, on no index
    before = pinned_bytes(repo)
    with pytest.raises(OverlayError, match=r"^rebase: 1.1.0 is not installable: its runtime "
                                           r"does not resolve from the configured indexes: "
                                           r"torch==2.11.0 not on file://\S+/index "
                                           r"\(make lock would fail on it\); nothing was "
                                           r"changed"):
        rebase_command.run(Args(to=TARGET), repo)
    assert pinned_bytes(repo) == before and not (repo / "work").exists()
    wheel = lock_entry(tmp_path / "dist" / wheel_name(TARGET))["sha256"]
    assert not blobcache.blob_path(wheel).exists()  # not even its wheel fetched
    network_lock.missing = set()  # the index has it now (another index setting, or later)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://internal.example/simple")
    assert rebase_command.run(Args(to=TARGET), repo) == 1  # on to B's conflict


CALLS_A_DROPPED_HELPER = {  # upstream has our helper (its probe holds) under another name
    "U2: add helper2": ({"vllm/u.py": lambda t: t.replace(
        "U_5 = 5\n", "def helper2():\n    return 5\n")}, ["defines vllm/u.py::helper"]),
    "H: use helper2": ({"vllm/a.py": lambda t: t + "\n\ndef use():\n"
                                    "    from vllm.u import helper2\n    return helper2()\n",
                        "vllm/e.py": lambda t: "E = 1\n"}, ["defines vllm/a.py::OURS"]),
}


def test_a_merge_that_calls_what_no_longer_exists_stops_before_anything_is_written(
        repo, tmp_path, capsys):
    shutil.rmtree(repo / "patches")
    write_patches(repo / "patches", tmp_path / "dist" / f"vllm-{PIN}.tar.gz", tmp_path / "h",
                  CALLS_A_DROPPED_HELPER)
    git_commit_all(repo, "series U2 H")
    before = pinned_bytes(repo)
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    out = capsys.readouterr().out
    assert "rebase: stopped before the build: the merged tree does not work (1 problem(s))" \
        in out
    assert "0002-H-use-helper2.patch: vllm/a.py:46 imports helper2 from vllm.u, which does " \
           "not define it: upstream removed or renamed it?" in out
    assert "git commit -q -a --fixup=" in out and "--autosquash upstream" in out
    assert pinned_bytes(repo) == before  # nothing written, nothing built
    log = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())
    assert log["state"] == "stopped" and log["checks"][0]["check"] == "names"
    assert [o["result"] for o in log["patches"]] == ["dropped-upstream", "applied-clean"]
    # the human ports the call to upstream's name, in H's own commit, as the stop says
    tree = repo / "work" / "rebase" / f"vllm-{TARGET}"
    a = tree / "vllm/a.py"
    a.write_text(a.read_text().replace("helper2", "helper"))
    sha = log["checks"][0]["commit"]
    git(tree, "commit", "-q", "-a", f"--fixup={sha}")
    git(tree, "rebase", "-q", "-i", "--autosquash", "upstream",
        env={"GIT_SEQUENCE_EDITOR": ":"})
    assert rebase_command.run(Args(resume=True), repo) == 0
    (patch,) = series.read_series(repo / "patches")
    assert "+    return helper()" in patch.path.read_text()
    md = (repo / "reports" / f"rebase-{PIN}-{TARGET}.md").read_text()
    assert "## Checks of the merged tree (before the build)\n\n- every changed Python file " \
           "compiles" in md


def test_tree_checks_find_a_removed_method_and_code_that_does_not_compile(tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    git(tree, "init", "-q")
    (tree / "m.py").write_text("class R:\n    def kept(self):\n        return 1\n")
    (tree / "base.py").write_text("class Base:\n    def inherited(self):\n        return 2\n")
    git_commit_all(tree, "base")
    git(tree, "tag", "base")
    (tree / "m.py").write_text("class R:\n    def kept(self):\n        return 1\n\n"
                               "    def ours(self):\n        return self.kept() + "
                               "self.inherited() + self.removed() + len([])\n")
    git_commit_all(tree, "ours")
    (tree / "n.py").write_text("def f(:\n")
    git_commit_all(tree, "broken")
    problems = treecheck.static_problems(tree, "base")
    assert [(p["subject"], p["check"], p["detail"]) for p in problems] == [
        ("ours", "names", "m.py:6 calls self.removed(), which is defined nowhere (not in the "
                          "module, nor anywhere in the tree): upstream removed or renamed it?"),
        ("broken", "compile", "n.py:1 does not compile: invalid syntax")]


def test_the_series_own_tests_run_in_the_rebased_tree_and_a_failure_stops_the_build(
        repo, tmp_path, capsys, monkeypatch):
    import sys
    shutil.rmtree(repo / "patches")
    write_patches(repo / "patches", tmp_path / "dist" / f"vllm-{PIN}.tar.gz", tmp_path / "t", {
        "A: change A_20": PATCHES["A: change A_20"],
        "T: test B_3": ({"tests/test_t.py": lambda t: (
            "from vllm.a import A_20\nfrom vllm.b import B_3\n\n\ndef test_a20():\n"
            "    assert A_20 == 'ours'\n\n\ndef test_b3():\n    assert B_3 == 3\n")},
            ["defines tests/test_t.py::NEVER"])})
    git_commit_all(repo, "series A T")
    built = []
    monkeypatch.setattr(rebase_command, "build_overlay_wheel", lambda *a: built.append(1) or "built")
    # no runtime venv for the new locks: not run, and the log says so
    monkeypatch.delenv("VLLM_OVERLAY_RUNTIME_PYTHON", raising=False)
    real_runtime_python = rebase.runtime_python
    monkeypatch.setattr(rebase, "runtime_python", lambda *a: None)
    assert rebase_command.run(Args(to=TARGET), repo) == 0
    log = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())
    assert any("tests/test_t.py) not run" in note for note in log["notes"])
    git_commit_all(repo, "rebased")
    rebase_command.run(Args(abort=True), repo) if (repo / "work" / "rebase").exists() else None
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    # with a runtime venv (the tools' Python has pytest): B_3 is 'same' on the target
    monkeypatch.setattr(rebase, "runtime_python", real_runtime_python)
    monkeypatch.setenv("VLLM_OVERLAY_RUNTIME_PYTHON", sys.executable)
    built.clear()
    capsys.readouterr()
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    out = capsys.readouterr().out
    assert "0002-T-test-B_3.patch: failed: tests/test_t.py::test_b3" in out
    assert "test_a20" not in out and built == []
    log = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())
    assert log["checks"][0]["test"] == "tests/test_t.py::test_b3"
    tree = repo / "work" / "rebase" / f"vllm-{TARGET}"
    test = tree / "tests/test_t.py"
    test.write_text(test.read_text().replace("B_3 == 3", "B_3 in (3, 'same')"))
    with pytest.raises(OverlayError, match="uncommitted changes: commit the fix"):
        rebase_command.run(Args(resume=True), repo)
    sha = git(tree, "log", "-1", "--format=%H").stdout.strip()
    git(tree, "commit", "-q", "-a", f"--fixup={sha}")
    git(tree, "rebase", "-q", "-i", "--autosquash", "upstream",
        env={"GIT_SEQUENCE_EDITOR": ":"})
    assert rebase_command.run(Args(resume=True), repo) == 0 and built == [1]
    assert "B_3 in (3, 'same')" in series.read_series(repo / "patches")[1].path.read_text()


def test_a_module_the_series_touches_that_fails_to_import_stops_the_build(
        repo, tmp_path, capsys, monkeypatch):
    import sys
    shutil.rmtree(repo / "patches")
    write_patches(repo / "patches", tmp_path / "dist" / f"vllm-{PIN}.tar.gz", tmp_path / "i", {
        "I: derive B_NEXT": ({"vllm/b.py": lambda t: t + "B_NEXT = B_3 + 1\n"},
                             ["defines vllm/b.py::B_NEXT"])})  # B_3 = 'same' on the target
    git_commit_all(repo, "series I")
    before = pinned_bytes(repo)
    built = []
    monkeypatch.setattr(rebase_command, "build_overlay_wheel", lambda *a: built.append(1) or "built")
    monkeypatch.setenv("VLLM_OVERLAY_RUNTIME_PYTHON", sys.executable)
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    out = capsys.readouterr().out
    assert "0001-I-derive-B_NEXT.patch: import vllm.b fails: TypeError: can only concatenate " \
           "str" in out and built == []
    log = json.loads((repo / "reports" / f"rebase-{PIN}-{TARGET}.json").read_text())
    assert log["checks"][0]["check"] == "imports" and log["state"] == "stopped"
    rebase_command.run(Args(abort=True), repo)
    assert pinned_bytes(repo) == before


def test_runtime_venv_1_makes_the_new_locks_venv_to_run_the_checks(repo, tmp_path, capsys,
                                                                   monkeypatch):
    import sys
    shutil.rmtree(repo / "patches")
    write_patches(repo / "patches", tmp_path / "dist" / f"vllm-{PIN}.tar.gz", tmp_path / "i", {
        "I: derive B_NEXT": ({"vllm/b.py": lambda t: t + "B_NEXT = B_3 + 1\n"},
                             ["defines vllm/b.py::B_NEXT"])})
    git_commit_all(repo, "series I")
    made = []

    def ensure_base(arch, repo_, log=None):  # pip installing the locks: the network, faked
        made.append((arch, repo_, constraints.read_lock(constraints.runtime_lock(arch, repo_))[1]))
        venv = tmp_path / "venv"
        (venv / "bin").mkdir(parents=True, exist_ok=True)
        if not (venv / "bin" / "python").exists():
            (venv / "bin" / "python").symlink_to(sys.executable)
        return venv

    monkeypatch.delenv("VLLM_OVERLAY_RUNTIME_PYTHON", raising=False)
    monkeypatch.setattr(testenv, "ensure_base", ensure_base)
    args = Args(to=TARGET)
    args.runtime_venv = True
    assert rebase_command.run(args, repo) == 1
    assert made == [("x86_64", repo, {"numpy": "1.0"})]  # the new pin's lock, re-locked
    assert "0001-I-derive-B_NEXT.patch: import vllm.b fails: TypeError" in \
        capsys.readouterr().out
    make = subprocess.run(["make", "-n", "rebase", "CONTINUE=1", "RUNTIME_VENV=1"],
                          cwd=Path(__file__).resolve().parents[3], capture_output=True,
                          text=True, check=True).stdout
    assert "--runtime-venv" in make


def test_make_changelog_after_the_rebase_says_what_happened(repo, monkeypatch):
    from vllm_overlay.wheelbuild import changelog
    (repo / "CHANGELOG.md").write_text(f"# x\n\n{changelog.START}\n{changelog.END}\n")
    (repo / "releases").mkdir()
    (repo / "releases" / f"{PIN}+test.3.json").write_text(
        json.dumps(changelog.record("x86_64", repo)))  # what `make changelog` kept on the pin
    git_commit_all(repo, "the pin's release record")
    monkeypatch.setattr(rebase_command, "build_overlay_wheel", lambda *a: "wheel built")
    assert rebase_command.run(Args(to=TARGET), repo) == 1
    git(repo / "work" / "rebase" / f"vllm-{TARGET}", "am", "--skip")  # B dropped by hand
    assert rebase_command.run(Args(resume=True), repo) == 0
    notes = changelog.make_changelog("x86_64", repo=repo,
                                     wheelhouse=repo / "wheelhouse").read_text()
    assert f"- **Upstream pin**: {PIN} -> {TARGET}: 1 patch(es) dropped because upstream has " \
           "them, 4 carried over (3 rebased), 1 dropped otherwise, 0 added" in notes
    assert "- `0001-U-add-helper.patch`: U: add helper (Origin: vendor): upstream in 1.0.5 " \
           "(the rebase found it there)" in notes
    assert "- `0005-B-change-B_10.patch`: B: change B_10 (Origin: vendor): dropped by hand " \
           "(nothing committed for it) in the rebase" in notes
    assert "- `0001-A-change-A_20.patch`: A: change A_20 (Origin: vendor); was " \
           "`0002-A-change-A_20.patch`, rebase: applied-clean" in notes
    assert "- numpy: (new) -> 1.0" in notes.split("### Runtime dependency changes")[1]


def test_dockerfile_defaults_follow_the_new_wheels_platform_tag():
    """0.20.0's wheels are manylinux_2_35: the image's WHEEL and SBOM defaults must name them
    (found on a real rebase: they kept 0.19.1's manylinux_2_31)."""
    text = ("ARG VLLM_BASE_IMAGE=vllm/vllm-openai:v0.19.1\n"
            "ARG WHEEL=vllm-0.19.1+mmcg.2-cp38-abi3-manylinux_2_31_x86_64.whl\n"
            "ARG SBOM=vllm-0.19.1+mmcg.2-cp38-abi3-manylinux_2_31_x86_64.cdx.json\n"
            "RUN echo manylinux_2_31_x86_64 0.19.1\n")
    lock = {"artifacts": {"sdist": {"filename": "vllm-0.20.0.tar.gz"},
                          "wheel-x86_64": {"filename": "vllm-0.20.0-cp38-abi3-manylinux_2_35_x86_64.whl"},
                          "wheel-aarch64": {"filename": "vllm-0.20.0-cp38-abi3-manylinux_2_35_aarch64.whl"}}}
    assert rebase.wheel_platforms(lock) == {"x86_64": "manylinux_2_35_x86_64",
                                            "aarch64": "manylinux_2_35_aarch64"}
    out = rebase.dockerfile_defaults(text, "0.19.1", "0.20.0", "0.19.1+mmcg.2", "0.20.0+mmcg.1",
                                     rebase.wheel_platforms(lock))
    assert out == ("ARG VLLM_BASE_IMAGE=vllm/vllm-openai:v0.20.0\n"
                   "ARG WHEEL=vllm-0.20.0+mmcg.1-cp38-abi3-manylinux_2_35_x86_64.whl\n"
                   "ARG SBOM=vllm-0.20.0+mmcg.1-cp38-abi3-manylinux_2_35_x86_64.cdx.json\n"
                   "RUN echo manylinux_2_31_x86_64 0.19.1\n")  # only the ARG defaults move


def test_a_three_way_merge_that_changes_nothing_stops_instead_of_dropping_the_patch(tmp_path):
    """`git am --3way` exits 0 without a commit when the target already has the change:
    with probes that do not hold, that is a stop, never "applied-3way" with no commit (the
    export would lose the patch)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    git(tree, "init", "-q")
    lines = [f"line {i}\n" for i in range(20)]
    (tree / "m.py").write_text("".join(lines))
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "base")
    base = git(tree, "rev-parse", "HEAD").stdout.strip()
    (tree / "m.py").write_text("".join(lines[:10] + ["changed\n"] + lines[11:]))
    git(tree, "commit", "-q", "-am", "the change\n\nOrigin: vendor\nRisk: none\n")
    patch_path = Path(git(tree, "format-patch", "-1", "-o", str(tmp_path / "p")).stdout.strip())
    # the target: the change is there, and the lines around it moved on
    git(tree, "reset", "-q", "--hard", base)
    (tree / "m.py").write_text("".join(lines[:10] + ["changed\n"] + lines[11:13] + ["new 13\n"]
                                       + lines[14:]))
    git(tree, "commit", "-q", "-am", "target")
    head = git(tree, "rev-parse", "HEAD").stdout.strip()
    placed = rebase.place(tree, series.parse_patch(patch_path), probe_results=[])
    assert placed.result.value == "conflict"
    assert "already contains this change" in placed.detail and "probes" in placed.detail
    assert git(tree, "rev-parse", "HEAD").stdout.strip() == head
