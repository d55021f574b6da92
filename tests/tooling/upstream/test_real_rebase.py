"""The real `make rebase TO=0.20.0` in a scratch clone of this repository (downloads 0.20.0's
sdist and both CUDA wheels, ~510 MB, into the shared cache on a cold cache).

0001-0004 and 0007 are upstream in 0.20.0 and are dropped. 0005 and 0006 are ours and stop
the run: 0005's code merges 3-way, but the docs were written on top of 0002/0004's text,
which upstream wrote differently; the test resolves them the simple way a person could
(upstream's side plus 0005's sentence about the deprecated alias). 0006 needs a person: its
manager and Qwen3-VL code sit on code 0.20.0 rewrote, so taking upstream's side of its
conflicts leaves calls to what no longer exists, and the rebase's tree check stops there
before anything is written; ABORT then puts everything back. The series of what does merge
(0001-0005, 0007) goes through to the end: lock, VERSION, series, check-patches, the wheel.
"""

import json
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from vllm_overlay.common import blobcache
from vllm_overlay.wheelbuild import constraints, lockcheck, lockmeta
from vllm_overlay.common import pin, series, venvs
from vllm_overlay.common.git import git
from vllm_overlay.common.paths import REPO
from vllm_overlay.common.requirements import normalize_name
from vllm_overlay.publishing import docker
from vllm_overlay.testing import testenv

pytestmark = pytest.mark.network

TO = "0.20.0"
DOCS = "docs/design/cuda_graphs_multimodal.md"
ALIAS = ("Called `encoder_cudagraph_max_images_per_batch` in vLLM 0.19; on this build that name "
         "is still accepted as a deprecated alias (a warning names the new key; giving both "
         "names with different values is an error).")


def make(clone: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "rebase", *args], cwd=clone,
                          capture_output=True, text=True, timeout=1800)


def log(clone: Path) -> dict:
    data = json.loads((clone / "reports" / f"rebase-0.19.1-{TO}.json").read_text())
    return {o["patch"][:4]: o for o in data["patches"]} | {"state": data["state"]}


def keep_upstream_side(path: Path) -> None:
    """Resolve every conflict block of the file to HEAD's side (the release's text)."""
    text = path.read_text()
    path.write_text(re.sub(r"<<<<<<< [^\n]*\n(.*?)=======\n.*?>>>>>>> [^\n]*\n", r"\1", text,
                           flags=re.S))


def continue_am(tree: Path, files: list[str]) -> None:
    git(tree, "add", *files)
    git(tree, "am", "--continue")


PINNED = ("VERSION", "upstream.lock.json", "Dockerfile", "docker/source.Dockerfile")


def pinned_bytes(clone: Path) -> dict[str, bytes]:
    files = [clone / p for p in PINNED] + sorted((clone / "patches").iterdir()) + sorted(
        (clone / "locks").iterdir())
    return {str(f.relative_to(clone)): f.read_bytes() for f in files}


def start_and_resolve_0005(clone: Path) -> Path:
    """`make rebase TO=0.20.0`: 0001-0004 dropped, the stop at 0005 resolved; the tree."""
    proc = make(clone, f"TO={TO}")
    assert proc.returncode != 0, proc.stderr[-3000:]
    first = log(clone)
    assert first["state"] == "stopped"
    for number in ("0001", "0002", "0003", "0004"):
        assert first[number]["result"] == "dropped-upstream", first[number]
        assert first[number]["release"] == TO
    assert first["0005"]["result"] == "conflict"
    assert first["0005"]["unmerged"] == [DOCS]  # its code merged 3-way
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                          text=True).stdout == ""
    tree = clone / "work" / "rebase" / f"vllm-{TO}"
    assert f"cd {tree}" in proc.stdout and "make rebase CONTINUE=1" in proc.stdout
    # 0005: upstream's text, plus the sentence about the deprecated key
    keep_upstream_side(tree / DOCS)
    docs = (tree / DOCS).read_text()
    items = re.search(r"^\* `encoder_cudagraph_max_vision_items_per_batch`.*$", docs, re.M)[0]
    (tree / DOCS).write_text(docs.replace(items, f"{items} {ALIAS}", 1))
    continue_am(tree, [DOCS])
    return tree


def clone_of(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    return clone


@pytest.mark.once_per_inputs
def test_a_merge_that_does_not_work_stops_the_rebase_and_abort_restores_everything(tmp_path):
    clone = clone_of(tmp_path)
    before = pinned_bytes(clone)
    tree = start_and_resolve_0005(clone)
    proc = make(clone, "CONTINUE=1")
    assert proc.returncode != 0, proc.stderr[-3000:]
    second = log(clone)
    assert second["0005"]["resolution"] == "resolved by hand"
    assert second["0006"]["result"] == "conflict"
    # 0006's docs and tests were written on top of 0002/0004's, and its handling of a stub or
    # None frames method sits in manager code 0.20.0 wrote differently
    assert second["0006"]["unmerged"] == [DOCS, "tests/v1/cudagraph/test_encoder_cudagraph.py",
                                          "vllm/v1/worker/encoder_cudagraph.py"]
    stopped = "0006"
    for _ in range(10):  # every stop resolved to upstream's side, as a hurried person might
        unmerged = log(clone)[stopped]["unmerged"]
        for name in unmerged:
            keep_upstream_side(tree / name)
        continue_am(tree, unmerged)
        proc = make(clone, "CONTINUE=1")
        assert proc.returncode != 0, "a series whose 0006 lost its helpers must not build"
        if "the merged tree does not work" in proc.stdout:
            break
        stopped = next(n for n, o in log(clone).items() if n != "state"
                       and o["result"] == "conflict" and "resolution" not in o)
    assert "the merged tree does not work" in proc.stdout, proc.stdout[-3000:]
    assert re.search(r"0006-\S+: vllm/model_executor/models/qwen3_vl.py:\d+ calls "
                     r"self._get_encoder_cudagraph_inputs\(\), which is defined nowhere",
                     proc.stdout), proc.stdout[-3000:]
    assert pinned_bytes(clone) == before  # the check runs before anything is written
    proc = make(clone, "ABORT=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pinned_bytes(clone) == before
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                          text=True).stdout == ""


@pytest.mark.once_per_inputs
def test_make_rebase_to_0_20_0_of_what_merges(tmp_path, monkeypatch):
    clone = clone_of(tmp_path)
    keep = [p.name for p in series.read_series(clone / "patches")
            if p.name[:4] in ("0001", "0002", "0003", "0004", "0005", "0007")]
    text = (clone / "patches" / "series").read_text()
    lines = [line for line in text.splitlines(keepends=True)
             if line.startswith("#") or line.strip() in keep]
    (clone / "patches" / "series").write_text("".join(lines))
    for path in (clone / "patches").glob("*.patch"):
        if path.name not in keep:
            path.unlink()
    git(clone, "commit", "-q", "-am", "test: the series of what merges on 0.20.0")
    start_and_resolve_0005(clone)
    proc = make(clone, "CONTINUE=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    final = log(clone)
    assert final["state"] == "complete"
    assert final["0005"]["resolution"] == "resolved by hand"
    assert final["0007"]["result"] == "dropped-upstream" and final["0007"]["release"] == TO

    the_pin = pin.load(clone)
    assert the_pin.overlay_version == f"{TO}+mmcg.1"
    assert sorted(the_pin.artifacts) == ["sdist", "wheel-aarch64", "wheel-x86_64"]
    assert the_pin.wheel("x86_64").filename == f"vllm-{TO}-cp38-abi3-manylinux_2_35_x86_64.whl"
    assert the_pin.source_build.torch == "2.11.0"  # 0.20.0's requirements/build/cuda.txt
    assert any("torch 2.10.0 -> 2.11.0" in note
               for note in json.loads((clone / "reports" / f"rebase-0.19.1-{TO}.json")
                                      .read_text())["notes"])
    for art in the_pin.artifacts.values():
        blobcache.verify_file(blobcache.blob_path(art.sha256), art)
    subjects = [p.subject for p in series.read_series(clone / "patches")]  # renumbered
    kept = [o for n, o in final.items() if n != "state" and o["result"] != "dropped-upstream"]
    assert len(subjects) == len(kept) == 1 and subjects[0].split()[0] == "Accept"
    assert (clone / "wheelhouse" / f"vllm-{TO}+mmcg.1-cp38-abi3-manylinux_2_35_x86_64.whl"
            ).is_file()
    # the image's defaults name that wheel and its SBOM (manylinux_2_35 since 0.20.0)
    args = docker.declared_args(clone / "Dockerfile")
    assert args["WHEEL"] == f"vllm-{TO}+mmcg.1-cp38-abi3-manylinux_2_35_x86_64.whl"
    assert args["SBOM"] == f"vllm-{TO}+mmcg.1-cp38-abi3-manylinux_2_35_x86_64.cdx.json"
    # the runtime locks were made for 0.20.0 before the build: the wheel's METADATA, the
    # lock, the SBOM inside the wheel and the published constraints agree
    for arch in ("x86_64", "aarch64"):
        assert lockmeta.lock_follows(arch, clone), arch
    _, locked = constraints.read_lock(clone / "locks" / "runtime-x86_64.txt")
    info = f"vllm-{TO}+mmcg.1.dist-info/"
    with zipfile.ZipFile(clone / "wheelhouse" / f"vllm-{TO}+mmcg.1-cp38-abi3-manylinux_2_35_"
                                                 f"x86_64.whl") as zf:
        metadata = zf.read(info + "METADATA").decode()
        sbom = json.loads(zf.read(info + "sboms/vllm.cdx.json"))
    torch = re.search(r"^Requires-Dist: torch==(\S+)$", metadata, re.M)[1]
    assert torch == "2.11.0" and locked["torch"] == torch
    components = {c["name"]: c.get("version") for c in sbom["components"]}
    assert components["torch"] == torch and all(components.values())
    published = (clone / "wheelhouse" / "constraints-x86_64.txt").read_text()
    assert f"\ntorch=={torch} \\\n" in published
    # ... and agree on every package, not only torch: the published constraints are the lock
    # plus the wheel itself; each SBOM component is a root, at its locked version
    assert constraints.read_lock(clone / "wheelhouse" / "constraints-x86_64.txt")[1] == {
        **locked, "vllm": f"{TO}+mmcg.1"}
    requires = [line.split(": ", 1)[1] for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ")]
    runtime = [r for r in requires if "extra ==" not in r]  # the extras are not locked
    roots = lockmeta.lock_roots("x86_64", clone)
    assert sorted(runtime) == sorted(roots["runtime"])
    names = {normalize_name(re.match(r"[A-Za-z0-9_.-]+", r)[0]): r for r in runtime}
    components = {normalize_name(name): version for name, version in components.items()}
    assert set(components) <= set(names)
    assert {n for n, r in names.items() if ";" not in r} <= set(components)
    assert {n: locked[n] for n in components} == components
    # the test environment make test installs (testenv.ensure_base: the runtime and the test
    # lock, --no-deps), checked without building it: the test lock only adds packages, both
    # together are closed over the wheel's own Requires-Dist and upstream's test
    # requirements, and the record testenv.check_metadata compares the venv with names
    # exactly their versions
    installs = []
    monkeypatch.setattr(venvs, "ensure_locked_venv",
                        lambda name, files, **kw: installs.append(files) or tmp_path / "venv")
    testenv.ensure_base("x86_64", clone)
    assert installs == [[clone / "locks" / "runtime-x86_64.txt",
                         clone / "locks" / "test-x86_64.txt"]]
    _, test_locked = constraints.read_lock(clone / "locks" / "test-x86_64.txt")
    assert test_locked and not set(test_locked) & set(locked)
    request = lockmeta.closure_request("x86_64", "test", clone,
                                       roots=runtime + roots["test"])
    assert lockcheck.problems(**request) == []
    assert {n: m["version"] for n, m in request["packages"].items()} == {**locked,
                                                                          **test_locked}
    check = subprocess.run(["make", "--no-print-directory", "check-patches"], cwd=clone,
                           capture_output=True, text=True, timeout=1800)
    assert check.returncode == 0, check.stderr[-3000:]
