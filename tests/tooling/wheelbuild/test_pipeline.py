"""The pipeline on synthetic releases: fetch, apply, export, overlay build, verify, wheelhouse."""

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.tooling.helpers.synthetic import CHANGE_A, UPSTREAM, VERSION, WHEEL_ONLY, build
from vllm_overlay.common import blobcache
from vllm_overlay.common.git import git
from vllm_overlay.common.gittree import GitTree
from vllm_overlay.wheelbuild import export
from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import pin
from vllm_overlay.common import series
from vllm_overlay.wheelbuild import sbom, verify
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO

OUT_NAME = f"vllm-{VERSION}-cp38-abi3-manylinux_2_31_x86_64.whl"


def visible(wheelhouse_dir: Path) -> dict[str, bytes]:
    """What a user of the wheelhouse sees: its non-hidden files and their bytes."""
    return {p.name: p.read_bytes() for p in wheelhouse_dir.iterdir()
            if p.is_file() and not p.name.startswith(".")}


def raw_members(path: Path) -> dict[str, tuple]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: (i.CRC, i.compress_size, i.compress_type) for i in zf.infolist()}


@pytest.fixture
def built(synth):
    """A synthetic series (modify, add, delete, a test file) built once."""
    synth.seed_cache()
    synth.write_series({
        "Change A": {"vllm/a.py": CHANGE_A, "tests/test_a.py": "def test_a():\n    pass\n"},
        "Add new, drop b": {"vllm/new.py": "NEW = 1\n", "vllm/b.py": None},
    })
    return synth, build(synth)


def test_build_swaps_exactly_the_series_changes(built):
    s, wheel = built
    assert wheel.name == OUT_NAME
    upstream = s.dist / f"vllm-{UPSTREAM}-cp38-abi3-manylinux_2_31_x86_64.whl"
    old, new = raw_members(upstream), raw_members(wheel)
    info_old, info_new = f"vllm-{UPSTREAM}.dist-info/", f"vllm-{VERSION}.dist-info/"
    renamed = {n.replace(info_old, info_new): v for n, v in old.items()}
    sbom_member = info_new + sbom.MEMBER  # PEP 770
    assert set(new) == (set(renamed) - {"vllm/b.py"}) | {"vllm/new.py", sbom_member}
    untouched = set(new) - {"vllm/a.py", "vllm/new.py", "vllm/_version.py", info_new + "METADATA",
                            info_new + "WHEEL", info_new + "RECORD", sbom_member}
    assert {n: new[n] for n in untouched} == {n: renamed[n] for n in untouched}
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("vllm/a.py").decode() == CHANGE_A
        assert zf.read("vllm/_C.abi3.so") == WHEEL_ONLY["vllm/_C.abi3.so"]
        assert f"__version__ = version = '{VERSION}'" in zf.read("vllm/_version.py").decode()
        assert f"\nVersion: {VERSION}\n" in zf.read(info_new + "METADATA").decode()
        assert "Tag: cp38-abi3-manylinux_2_31_x86_64" in zf.read(info_new + "WHEEL").decode()
        verify.check_record_against_content(zf, info_new + "RECORD")  # every row, real hashes
    manifest = json.loads((s.wheelhouse / "manifest-x86_64.json").read_text())
    assert manifest["wheel"]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert [p["origin"] for p in manifest["series"]["patches"]] == ["vendor", "vendor"]
    assert manifest["changed_members"] == {"vllm/a.py": "M", "vllm/b.py": "D", "vllm/new.py": "A"}
    assert manifest["not_shipped"] == ["tests/test_a.py"]
    sums = (s.wheelhouse / "SHA256SUMS").read_text().splitlines()
    assert f"{manifest['wheel']['sha256']}  {OUT_NAME}" in sums
    beside = {OUT_NAME.replace(".whl", ".cdx.json"), OUT_NAME.replace(".whl", ".intoto.json"),
              "constraints-x86_64.txt"}
    assert {line.split("  ")[1] for line in sums} == {OUT_NAME, *beside}


@pytest.mark.real_sbom_render  # the second render must really give the same bytes
def test_rebuild_is_byte_identical_and_noop_is_detected(built, capsys):
    s, wheel = built
    first = visible(s.wheelhouse)
    assert build(s) == wheel
    assert "up to date" in capsys.readouterr().err
    (s.wheelhouse / ".state-x86_64.json").unlink()  # force a real rebuild
    build(s)
    assert visible(s.wheelhouse) == first


def test_changed_series_rebuilds(built):
    s, wheel = built
    before = wheel.read_bytes()
    s.write_series({"Change A": {"vllm/a.py": CHANGE_A.replace("40", "41")}})
    build(s)
    assert wheel.read_bytes() != before
    with zipfile.ZipFile(wheel) as zf:
        assert "vllm/b.py" in zf.namelist()


def test_reused_build_tree_equals_a_fresh_one(built):
    """A rebuild resets the previous build tree to the base: dirt there never leaks in."""
    s, wheel = built
    tree = s.repo / "work" / "build" / "x86_64" / f"vllm-{UPSTREAM}"
    (tree / "vllm" / "b.py").write_text("B = 'dirty'\n")  # deleted by the series, back dirty
    (tree / "vllm" / "stray.py").write_text("STRAY = 1\n")
    (tree / "vllm" / "__pycache__").mkdir()
    s.write_series({"Change A": {"vllm/a.py": CHANGE_A}})
    build(s)
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("vllm/b.py") == b"B = 'b'\n"
        assert "vllm/stray.py" not in zf.namelist()
    assert not (tree / "vllm" / "stray.py").exists()
    assert git(tree, "status", "--porcelain").stdout == ""


def rebuild_counting_am(s, monkeypatch) -> int:
    """A real rebuild of the synthetic repo (its no-op state dropped): how many patches it
    applied with `git am`."""
    applied = []
    real_am = GitTree.am
    monkeypatch.setattr(GitTree, "am", lambda self, patch, **kw: applied.append(patch.name)
                        or real_am(self, patch, **kw))
    (s.wheelhouse / ".state-x86_64.json").unlink()
    build(s)
    return len(applied)


def tree_of(s) -> Path:
    return s.repo / "work" / "build" / "x86_64" / f"vllm-{UPSTREAM}"


def test_a_build_tree_that_still_holds_the_series_is_used_as_it_is(built, monkeypatch):
    s, wheel = built
    before = wheel.read_bytes()
    assert rebuild_counting_am(s, monkeypatch) == 0
    assert wheel.read_bytes() == before


@pytest.mark.parametrize("touch", ["commit", "edit", "untracked", "series"])
def test_a_build_tree_touched_since_is_applied_again(built, monkeypatch, touch):
    s, wheel = built
    before, tree = wheel.read_bytes(), tree_of(s)
    if touch == "commit":  # HEAD moved: same files, another commit
        git(tree, "commit", "-q", "--allow-empty", "-m", "x")
    elif touch == "edit":
        (tree / "vllm" / "new.py").write_text("NEW = 2\n")
    elif touch == "untracked":
        (tree / "vllm" / "stray.py").write_text("STRAY = 1\n")
    else:  # the same changes from other patch bytes
        patch = next(s.repo.joinpath("patches").glob("0001-*.patch"))
        patch.write_bytes(patch.read_bytes() + b"\n")
    assert rebuild_counting_am(s, monkeypatch) == 2
    assert git(tree, "status", "--porcelain").stdout == ""
    if touch != "series":
        assert wheel.read_bytes() == before


def test_corrupt_cache_entry_is_refused(synth):
    synth.seed_cache()
    the_pin = pin.load(synth.repo)
    blob = blobcache.blob_path(the_pin.wheel("x86_64").sha256)
    blob.write_bytes(blob.read_bytes()[:-1] + b"X")
    with pytest.raises(OverlayError, match=rf"corrupt cache entry: {the_pin.wheel('x86_64').filename}"
                                           rf": sha256 [0-9a-f]+ != pinned {the_pin.wheel('x86_64').sha256}"):
        build(synth)
    assert visible(synth.wheelhouse) == {}


def test_corrupt_zip_is_refused(synth):
    """A wheel whose bytes match the lock but is not a zip: named, and nothing written."""
    bad = synth.dist / f"vllm-{UPSTREAM}-cp38-abi3-manylinux_2_31_x86_64.whl"
    bad.write_bytes(b"PK\x03\x04 this is not a zip" * 100)
    lock = json.loads((synth.repo / "upstream.lock.json").read_text())
    lock["artifacts"]["wheel-x86_64"].update(size=bad.stat().st_size,
                                             sha256=hashlib.sha256(bad.read_bytes()).hexdigest())
    (synth.repo / "upstream.lock.json").write_text(json.dumps(lock))
    synth.seed_cache()
    with pytest.raises(OverlayError, match=rf"{bad.name} .*not a valid wheel"):
        build(synth)
    assert visible(synth.wheelhouse) == {}


def test_fetch_through_a_file_index_then_from_cache(synth, monkeypatch):
    index = synth.root / "index"
    (index / "vllm").mkdir(parents=True)
    links = "".join(f'<a href="{p.as_uri()}#sha256=x">{p.name}</a>\n' for p in synth.dist.iterdir())
    (index / "vllm" / "index.html").write_text(f"<html><body>{links}</body></html>")
    monkeypatch.setenv("PIP_INDEX_URL", index.as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    the_pin = pin.load(synth.repo)
    path = fetch.fetch(the_pin.sdist)
    assert path.read_bytes() == (synth.dist / the_pin.sdist.filename).read_bytes()
    (index / "vllm" / "index.html").unlink()  # a warm cache must not need the index
    assert fetch.fetch(the_pin.sdist) == path


def test_download_with_wrong_hash_leaves_no_cache_entry(synth, monkeypatch):
    index = synth.root / "index"
    (index / "vllm").mkdir(parents=True)
    fake = synth.root / "evil" / f"vllm-{UPSTREAM}.tar.gz"
    fake.parent.mkdir()
    good = (synth.dist / fake.name).read_bytes()
    fake.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    (index / "vllm" / "index.html").write_text(f'<a href="{fake.as_uri()}">{fake.name}</a>')
    monkeypatch.setenv("PIP_INDEX_URL", index.as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    the_pin = pin.load(synth.repo)
    with pytest.raises(OverlayError, match=rf"{fake.name}: downloaded from .* sha256 "
                                           rf"[0-9a-f]+; pinned size \d+, sha256 {the_pin.sdist.sha256}"):
        fetch.fetch(the_pin.sdist)
    assert not list((synth.cache / "sha256").iterdir())


def test_patch_that_does_not_apply_names_patch_file_and_hunk(built):
    s, wheel = built
    before = visible(s.wheelhouse)
    first = sorted(s.patches.glob("0001-*.patch"))[0]
    text = first.read_text().replace("-A_20 = 20", "-A_20 = 2000")
    first.write_text(text)
    with pytest.raises(OverlayError) as err:
        build(s)
    message = str(err.value)
    assert f"patch {first.name} (Change A) does not apply" in message
    assert "vllm/a.py: hunk #1 of 1: @@ -" in message
    tree = s.repo / "work" / "build" / "x86_64" / f"vllm-{UPSTREAM}"
    assert f"work tree left for inspection at {tree}" in message
    assert (tree / "vllm" / "a.py").exists()
    assert visible(s.wheelhouse) == before


def test_series_naming_a_missing_file(synth):
    (synth.patches / "series").write_text("0001-missing.patch\n")
    with pytest.raises(OverlayError, match=r"series:1: names 0001-missing.patch, which does not"):
        series.read_series(synth.patches)


def test_compiled_sources_are_refused_in_overlay_mode(synth):
    synth.seed_cache()
    synth.write_series({"Tune kernel": {"csrc/kernel.cu": "__global__ void k2() {}\n"}})
    with pytest.raises(OverlayError, match=r"0001-Tune-kernel.patch changes csrc/kernel.cu "
                                           r"\(compiled sources\).*MODE=source"):
        build(synth)
    assert visible(synth.wheelhouse) == {}


def test_already_applied_patch_is_an_error(synth):
    synth.seed_cache()
    synth.write_series({"Change A": {"vllm/a.py": CHANGE_A}})
    patch = next(synth.patches.glob("0001-*.patch"))
    (synth.patches / "0002-again.patch").write_text(patch.read_text())
    (synth.patches / "series").write_text(f"{patch.name}\n0002-again.patch\n")
    with pytest.raises(OverlayError, match=r"patch 0002-again.patch \(Change A\) is already applied"):
        build(synth)


def test_shifted_patch_is_an_error(synth):
    """A patch exported against a different base applies only with an offset: stale."""
    synth.seed_cache()
    tree = synth.dev_tree()
    synth.commit(tree, "Shift", {"vllm/a.py": "# one more line\n" * 5 + (tree / "vllm/a.py").read_text()})
    synth.commit(tree, "Change A", {"vllm/a.py": "# one more line\n" * 5 + CHANGE_A})
    export.export(tree, synth.patches)
    (synth.patches / "series").write_text("0002-Change-A.patch\n")
    with pytest.raises(OverlayError, match=r"0002-Change-A.patch \(Change A\) applies only at "
                                           r"shifted lines.*\n  hunk #1 at line 18 \(offset -5 lines\)"):
        build(synth)


def test_patch_without_diff_is_an_error(synth):
    (synth.patches / "0001-empty.patch").write_text(
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: x <x@invalid>\nSubject: [PATCH] Nothing\n\nNo change.\n")
    (synth.patches / "series").write_text("0001-empty.patch\n")
    with pytest.raises(OverlayError, match=r"0001-empty.patch: patch contains no diff"):
        series.read_series(synth.patches)


def test_export_to_a_relative_folder(synth, monkeypatch):
    tree = synth.dev_tree()
    synth.commit(tree, "Change A", {"vllm/a.py": CHANGE_A})
    monkeypatch.chdir(synth.root)
    assert export.export(tree, Path("relative")) == ["0001-Change-A.patch"]
    assert (synth.root / "relative" / "0001-Change-A.patch").exists()
    assert not list(tree.glob("relative*"))


def test_export_is_stable_and_check_detects_drift(synth):
    synth.write_series({"Change A": {"vllm/a.py": CHANGE_A}})
    first = {p.name: p.read_bytes() for p in synth.patches.iterdir()}
    synth.write_series({"Change A": {"vllm/a.py": CHANGE_A}})  # new commits, same content
    assert {p.name: p.read_bytes() for p in synth.patches.iterdir()} == first
    patch = next(synth.patches.glob("0001-*.patch"))
    text = patch.read_text()
    assert "index " in text and "\n-- \n" not in text and "From 0000000000" in text
    fresh = synth.root / "fresh"
    fresh.mkdir()
    for name, data in first.items():
        (fresh / name).write_bytes(data)
    patch.write_text(text.replace("Why: a test.", "Why: edited by hand."))
    assert export.compare_exports(synth.patches, fresh) == [
        f"{patch.name}: differs from a fresh apply + export round trip"]


def test_interrupted_build_leaves_the_wheelhouse_as_it_was(built):
    s, wheel = built
    before = visible(s.wheelhouse)
    s.write_series({"Change A": {"vllm/a.py": CHANGE_A.replace("A_3 = 3", "A_3 = 33")}})
    code = (f"from vllm_overlay.wheelbuild import overlay_mode; from pathlib import Path; "
            f"overlay_mode.build_overlay_wheel('x86_64', Path({str(s.wheelhouse)!r}), "
            f"Path({str(s.patches)!r}), Path({str(s.repo)!r}))")
    env = {**os.environ, "VLLM_OVERLAY_FAULT": f"before-rename:{OUT_NAME}"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True)
    assert proc.returncode == 137, proc.stderr.decode()
    assert list((s.wheelhouse / ".tmp").iterdir())  # the killed build's temp file
    # Same file name: the old wheel is unlisted before it would be replaced, so what is
    # left is the old wheel, unchanged, listed nowhere with another hash (docs/guarantees.md).
    assert visible(s.wheelhouse)[OUT_NAME] == before[OUT_NAME]
    assert "SHA256SUMS" not in visible(s.wheelhouse) or \
        OUT_NAME not in visible(s.wheelhouse)["SHA256SUMS"].decode()
    build(s)  # the next build recovers and cleans up
    assert not (s.wheelhouse / ".tmp").exists()
    with zipfile.ZipFile(wheel) as zf:
        assert "A_3 = 33" in zf.read("vllm/a.py").decode()


def test_concurrent_builds_are_serialised(synth):
    synth.seed_cache()
    synth.write_series({"Change A": {"vllm/a.py": CHANGE_A}})
    code = (f"from vllm_overlay.wheelbuild import overlay_mode; from pathlib import Path; "
            f"overlay_mode.build_overlay_wheel('x86_64', Path({str(synth.wheelhouse)!r}), "
            f"Path({str(synth.patches)!r}), Path({str(synth.repo)!r}))")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ),
                              stderr=subprocess.PIPE) for _ in range(2)]
    errs = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert sum("up to date" in e for e in errs) == 1  # the second waited, then found it done
    with zipfile.ZipFile(synth.wheelhouse / OUT_NAME) as zf:
        assert zf.testzip() is None


def test_cli_reports_bad_input_with_exit_code():
    proc = subprocess.run([sys.executable, "-m", "vllm_overlay", "fetch", "--arch", "riscv64"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == ("error: no pinned upstream wheel for ARCH=riscv64 "
                           "(lock has: x86_64, aarch64)\n")


def test_version_must_sit_on_the_pinned_release(synth):
    (synth.repo / "VERSION").write_text("9.9.8+test.1\n")
    with pytest.raises(OverlayError, match=r"public version 9.9.8 must equal the pinned upstream "
                                           r"release 9.9.9"):
        pin.load(synth.repo)
