"""Build reliability (issue 20): a corrupt cache, kills, concurrent edits, leftovers of git.

Each test reproduces one case on the synthetic release (conftest.synth) and failed before
the fix it guards.
"""

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from tests.tooling import conftest
from tests.tooling.conftest import UPSTREAM, WHEEL_NAME
from vllm_overlay.wheelbuild import fetch, overlay_mode, provenance, sbom, wheelhouse
from vllm_overlay.wheelbuild.zipraw import data_span
from vllm_overlay.common import pin
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import BUILD_TREES, REPO
from vllm_overlay.publishing import index

CHANGE_A = "".join(f"A_{i} = {i * (2 if i == 20 else 1)}\n" for i in range(40))


def build(s):
    return overlay_mode.build_overlay_wheel("x86_64", wheelhouse=s.wheelhouse,
                                            patches_dir=s.patches, repo=s.repo)


# The overlay build with the CLI's error handling: an OverlayError is one line, exit 1.
CLI_BUILD = """import sys
from pathlib import Path
from tests.tooling import sbom_reuse
sbom_reuse.install()  # an SBOM input the tests rendered before: its kept output (conftest)
from vllm_overlay.wheelbuild import overlay_mode
from vllm_overlay.common.errors import OverlayError
repo = Path(sys.argv[1])
try:
    print(overlay_mode.build_overlay_wheel("x86_64", repo / "wheelhouse", repo / "patches",
                                           repo))
except OverlayError as exc:
    sys.exit(f"error: {exc}")
"""


def cli_build(s) -> list[str]:
    return [sys.executable, "-c", CLI_BUILD, str(s.repo)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wheels(sums: dict[str, str]) -> dict[str, str]:
    """The wheels of a SHA256SUMS listing (the SBOM, provenance, constraints left out)."""
    return {name: digest for name, digest in sums.items() if name.endswith(".whl")}


def assert_consistent(house: Path) -> None:
    """What the wheelhouse lists is what it holds: SHA256SUMS, every simple page link and
    each manifest name existing files with exactly those sha256s."""
    sums = index.read_sums(house)
    for name, digest in sums.items():
        assert (house / name).is_file() and sha256(house / name) == digest, name
    for page in (house / "simple").glob("*/index.html"):
        for href, digest in re.findall(r'href="\.\./\.\./([^"#]+)#sha256=(\w+)"',
                                       page.read_text()):
            name = urllib.parse.unquote(href)
            assert sha256(house / name) == digest, (page, name)
    for manifest in house.glob("manifest-*.json"):
        wheel = json.loads(manifest.read_text())["wheel"]
        assert sha256(house / wheel["filename"]) == wheel["sha256"], manifest


@pytest.fixture
def built(synth):
    synth.seed_cache()
    synth.write_series({"Change A": {"vllm/a.py": CHANGE_A}})
    return synth, build(synth)


def upstream_blob(s) -> Path:
    return fetch.blob_path(pin.load(s.repo).wheel("x86_64").sha256)


def write_in_place(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place (same inode) and give the file its old mtime back."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def flip(path: Path, where: str) -> None:
    """Flip one byte of the zip: inside a member's data, a local header or the central dir."""
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fp:
        info = zf.getinfo("vllm/_C.abi3.so")
        offset = {"member data": data_span(fp, info)[0] + 1000,
                  "local header": info.header_offset + 1,
                  "central directory": zf.start_dir + 10}[where]
        fp.seek(offset)
        byte = fp.read(1)
    write_in_place(path, offset, bytes([byte[0] ^ 0x55]))


def same_size_other_zip(path: Path) -> None:
    """Rewrite the zip in place as another valid zip of the same size: vllm/b.py changed."""
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    tmp = path.with_name("other.zip")
    with zipfile.ZipFile(tmp, "w") as out:
        for info, data in members:
            out.writestr(info, b"B = 'c'\n" if info.filename == "vllm/b.py" else data,
                         compress_type=info.compress_type)
    data = tmp.read_bytes()
    tmp.unlink()
    assert len(data) == path.stat().st_size and data != path.read_bytes()
    write_in_place(path, 0, data)


def corrupt_error(s) -> str:
    art = pin.load(s.repo).wheel("x86_64")
    blob = upstream_blob(s)
    return (rf"corrupt cache entry: {WHEEL_NAME} \({blob}\) has sha256 {sha256(blob)}, "
            rf"pinned {art.sha256} .*delete {blob} to fetch it again")


@pytest.mark.parametrize("corrupt", ["member data", "same-size zip"])
def test_a_cache_changed_in_place_after_a_verified_build_is_never_built(built, corrupt):
    """Case 1: size, mtime and inode unchanged, so the cache's marker still matches."""
    s, wheel = built
    before = {p.name: p.read_bytes() for p in s.wheelhouse.iterdir() if p.is_file()}
    blob = upstream_blob(s)
    flip(blob, "member data") if corrupt == "member data" else same_size_other_zip(blob)
    s.write_series({"Change A": {"vllm/a.py": CHANGE_A.replace("A_3 = 3", "A_3 = 33")}})
    with pytest.raises(OverlayError, match=corrupt_error(s)):
        build(s)
    assert {p.name: p.read_bytes() for p in s.wheelhouse.iterdir() if p.is_file()} == before
    assert_consistent(s.wheelhouse)


@pytest.mark.parametrize("where", ["member data", "local header", "central directory"])
def test_a_cold_build_on_a_corrupt_cache_names_file_hashes_and_what_to_delete(synth, where):
    """Case 1, cold: no upstream RECORD check yet, the cache marker trusts the stat."""
    synth.seed_cache()
    art = pin.load(synth.repo).wheel("x86_64")
    assert fetch.cached(art)  # verified once: the marker now trusts size + mtime + inode
    flip(upstream_blob(synth), where)
    synth.write_series({"Change A": {"vllm/a.py": CHANGE_A}})
    proc = subprocess.run(cli_build(synth), cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.fullmatch("error: " + corrupt_error(synth), proc.stderr.splitlines()[-1])
    assert not list(synth.wheelhouse.glob("*.whl"))


def test_a_git_lock_left_by_a_killed_apply_does_not_block_the_next_build(built):
    """Case 4: git's index.lock (and a ref lock) in the build tree, as a kill leaves them."""
    s, wheel = built
    tree = s.repo / BUILD_TREES / "x86_64" / f"vllm-{UPSTREAM}"
    (tree / ".git" / "index.lock").write_text("")
    (tree / ".git" / "refs" / "heads" / "overlay.lock").write_text("")
    s.write_series({"Change A": {"vllm/a.py": CHANGE_A.replace("A_3 = 3", "A_3 = 33")}})
    build(s)
    with zipfile.ZipFile(wheel) as zf:
        assert "A_3 = 33" in zf.read("vllm/a.py").decode()


def test_a_series_edited_while_the_build_waits_is_built_under_its_own_key(built):
    """Case 5: the build key, the manifest and the wheel all come from one read."""
    s, wheel = built
    s.write_series({"Change A": {"vllm/a.py": CHANGE_A.replace("A_3 = 3", "A_3 = 33")}})
    read_first = {p.name: p.read_bytes() for p in s.patches.iterdir()}
    with open(s.wheelhouse / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build holds the wheelhouse
        proc = subprocess.Popen(cli_build(s), cwd=REPO, stderr=subprocess.PIPE, text=True)
        assert "waiting for another build" in proc.stderr.readline()
        s.write_series({"Change A": {"vllm/a.py": CHANGE_A.replace("A_3 = 3", "A_3 = 333")}})
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    manifest = json.loads((s.wheelhouse / "manifest-x86_64.json").read_text())
    assert manifest["series"]["patches"][0]["sha256"] == \
        sha256(s.patches / manifest["series"]["patches"][0]["name"])
    with zipfile.ZipFile(wheel) as zf:
        assert "A_3 = 333\n" in zf.read("vllm/a.py").decode()
    for name, data in read_first.items():  # the series it saw before waiting: rebuilt
        (s.patches / name).write_bytes(data)
    build(s)
    with zipfile.ZipFile(wheel) as zf:
        assert "A_3 = 33\n" in zf.read("vllm/a.py").decode()


FAULTS = [f"{when}-rename:{name}" for when in ("before", "after") for name in
          ("vllm-9.9.9+test.1-cp38-abi3-manylinux_2_31_x86_64.whl", "SHA256SUMS",
           "index.html", "manifest-x86_64.json", ".state-x86_64.json")]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_kill_at_any_rename_leaves_listings_that_match_the_files(built, fault):
    """Case 7: a rebuild under the same file name, killed before or after each rename."""
    s, wheel = built
    old = sha256(wheel)
    s.write_series({"Change A": {"vllm/a.py": CHANGE_A.replace("A_3 = 3", "A_3 = 33")}})
    env = {**os.environ, "VLLM_OVERLAY_FAULT": fault}
    proc = subprocess.run(cli_build(s), cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    assert_consistent(s.wheelhouse)
    listed = index.read_sums(s.wheelhouse).get(wheel.name)
    assert listed in (None, old, sha256(wheel))
    rebuilt = build(s)  # never "up to date" after a kill: it finishes the job
    assert_consistent(s.wheelhouse)
    assert wheels(index.read_sums(s.wheelhouse)) == {rebuilt.name: sha256(rebuilt)}
    with zipfile.ZipFile(rebuilt) as zf:
        assert "A_3 = 33" in zf.read("vllm/a.py").decode()


def test_a_deleted_sha256sums_is_written_again_by_a_no_op_build(built, capsys):
    s, wheel = built
    (s.wheelhouse / "SHA256SUMS").unlink()
    assert build(s) == wheel
    assert "up to date" in capsys.readouterr().err
    sums = index.read_sums(s.wheelhouse)
    assert wheels(sums) == {wheel.name: sha256(wheel)}
    assert wheel.name.replace(".whl", ".cdx.json") in sums  # the files beside it, relisted
    assert_consistent(s.wheelhouse)
    assert wheel.name.replace("+", "%2B") in (s.wheelhouse / "simple/vllm/index.html").read_text()


def test_after_a_version_bump_only_the_new_wheel_is_listed(built):
    s, wheel = built
    (s.repo / "VERSION").write_text("9.9.9+test.2\n")
    new = build(s)
    assert new.name != wheel.name
    sums = index.read_sums(s.wheelhouse)
    assert wheels(sums) == {new.name: sha256(new)}
    assert not [n for n in sums if n.startswith(wheel.name[:-4])]  # nor its SBOM, provenance
    assert not wheel.exists()
    assert_consistent(s.wheelhouse)


def test_a_malformed_source_date_epoch_is_a_one_line_error():
    """Refused before anything is fetched or written (the real repository's CLI)."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": "2024-01-01"}
    proc = subprocess.run([str(REPO / "build.sh"), "wheel"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: SOURCE_DATE_EPOCH='2024-01-01' is not a whole number of seconds since "
        "1970-01-01 UTC (e.g. SOURCE_DATE_EPOCH=1700000000)"]


def test_a_patch_converted_to_crlf_is_named_as_such(synth):
    synth.seed_cache()
    synth.write_series({"Change A": {"vllm/a.py": CHANGE_A}})
    patch = next(synth.patches.glob("*.patch"))
    patch.write_bytes(patch.read_bytes().replace(b"\n", b"\r\n"))
    with pytest.raises(OverlayError, match=rf"(?s)patch {patch.name} .* does not apply:.*"
                                           rf"{patch.name} has CRLF \(\\r\\n\) line endings"):
        build(synth)


def test_a_missing_patch_is_named_in_the_users_series_not_the_snapshot(synth):
    (synth.patches / "series").write_text("0001-gone.patch\n")
    with pytest.raises(OverlayError, match=rf"^{synth.patches / 'series'}:1: names "
                                           rf"0001-gone.patch, which does not exist in "
                                           rf"{synth.patches}$"):
        build(synth)


def test_an_sdist_changed_in_place_is_never_unpacked_into_a_build(synth):
    """Case 1 for the sdist: another valid .tar.gz of the same size, mtime restored."""
    synth.seed_cache()
    art = pin.load(synth.repo).sdist
    blob = fetch.blob_path(art.sha256)
    assert fetch.cached(art)  # the marker now trusts size + mtime + inode
    other = synth.root / "other" / art.filename  # gzip's header holds the file name
    other.parent.mkdir()
    sources = dict(conftest.SOURCES, **{"vllm/b.py": "B = 'c'\n"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conftest, "SOURCES", sources)
        conftest.make_sdist(other)
    assert other.stat().st_size == blob.stat().st_size
    write_in_place(blob, 0, other.read_bytes())
    synth.write_series({"Change A": {"vllm/a.py": CHANGE_A}})
    with pytest.raises(OverlayError, match=rf"corrupt cache entry: {art.filename}: sha256 "
                                           rf"{sha256(blob)} != pinned {art.sha256} .*delete "
                                           rf"{blob} to fetch again"):
        build(synth)
    assert not list(synth.wheelhouse.glob("*.whl"))


# --- issue 27, case 6: the files beside the wheel -------------------------------------------
NEW_WHEEL = "vllm-9.9.9+test.2-cp38-abi3-manylinux_2_31_x86_64.whl"


@pytest.mark.parametrize("fault", ["after-rename:manifest-x86_64.json",
                                   f"after-rename:{NEW_WHEEL}"])
def test_a_kill_after_a_version_bump_leaves_no_old_sbom_or_provenance(built, fault):
    """A VERSION bump killed once the new wheel (or its manifest) is in: the next build
    removes the old wheel with its SBOM copy and provenance, listed or not."""
    s, wheel = built
    old_stem = wheel.name.removesuffix(".whl")
    assert {f"{old_stem}.cdx.json", f"{old_stem}.intoto.json"} <= set(index.read_sums(
        s.wheelhouse))
    (s.repo / "VERSION").write_text("9.9.9+test.2\n")
    env = {**os.environ, "VLLM_OVERLAY_FAULT": fault}
    proc = subprocess.run(cli_build(s), cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    assert_beside_match(s.wheelhouse)
    new = build(s)
    assert new.name == NEW_WHEEL
    assert_beside_match(s.wheelhouse)
    assert sorted(p.name for p in s.wheelhouse.glob(f"{old_stem}*")) == []
    assert not [n for n in index.read_sums(s.wheelhouse) if n.startswith(old_stem)]
    assert_consistent(s.wheelhouse)


def test_a_lock_edited_mid_build_is_one_lock_in_sbom_provenance_and_constraints(built,
                                                                                monkeypatch):
    """locks/ is read once per build, into its snapshot: an edit made while the build runs
    (here: right after the SBOM's facts were gathered) is the next build's input."""
    s, _ = built
    s.write_series({"Change A": {"vllm/a.py": CHANGE_A.replace("A_3 = 3", "A_3 = 33")}})
    lock = s.repo / "locks" / "runtime-x86_64.txt"
    taken = lock.read_text()
    facts = sbom.facts

    def facts_then_edit(*args, **kwargs):
        out = facts(*args, **kwargs)
        lock.write_text(taken + "# edited while the build ran\n")
        return out

    monkeypatch.setattr(sbom, "facts", facts_then_edit)
    wheel = build(s)
    digest = hashlib.sha256(taken.encode()).hexdigest()
    doc = json.loads((s.wheelhouse / sbom.beside_name(wheel.name)).read_text())
    props = {p["name"]: p["value"] for p in doc["metadata"]["component"]["properties"]}
    assert props["vllm-overlay:runtime-lock-sha256"] == digest
    statement = json.loads((s.wheelhouse / provenance.beside_name(wheel.name)).read_text())
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert [d["digest"]["sha256"] for d in deps if d["name"] == "locks/runtime-x86_64.txt"] \
        == [digest]
    assert taken in (s.wheelhouse / "constraints-x86_64.txt").read_text()
    assert "edited while" not in (s.wheelhouse / "constraints-x86_64.txt").read_text()
    monkeypatch.setattr(sbom, "facts", facts)
    rebuilt = build(s)  # the edit is the next build's input: not "up to date"
    assert "edited while" in (s.wheelhouse / "constraints-x86_64.txt").read_text()
    assert_consistent(s.wheelhouse)
    assert rebuilt == wheel


def assert_beside_match(house: Path) -> None:
    """Every listed SBOM copy, provenance and constraints file is of a listed wheel's build:
    the provenance's subject and the SBOM inside the wheel are that wheel's, and the
    constraints hold the sha256 of every listed wheel of their arch's overlay version."""
    sums = index.read_sums(house)
    for name in sums:
        for suffix in wheelhouse.BESIDE_SUFFIXES:
            if name.endswith(suffix):
                wheel = name.removesuffix(suffix) + ".whl"
                assert wheel in sums, (name, "listed without its wheel")
                if suffix == ".intoto.json":
                    subjects = {s["name"]: s["digest"]["sha256"] for s in
                                json.loads((house / name).read_text())["subject"]}
                    assert subjects[wheel] == sums[wheel], (name, "of another build")
                else:
                    version = wheel.split("-")[1]
                    with zipfile.ZipFile(house / wheel) as zf:
                        inside = zf.read(sbom.member_name(version))
                    assert inside == (house / name).read_bytes(), (name, "of another build")
    if "constraints-x86_64.txt" in sums:
        text = (house / "constraints-x86_64.txt").read_text()
        for wheel in wheels(sums):
            assert f"--hash=sha256:{sums[wheel]}" in text, ("constraints of another build", wheel)


@pytest.mark.parametrize("fault", FAULTS)
def test_a_kill_at_any_rename_never_lists_beside_files_of_another_build(built, fault):
    """A same-name rebuild killed at each rename: SHA256SUMS may lack the SBOM, provenance
    or constraints for a while, but never lists those of the replaced wheel beside it."""
    s, wheel = built
    assert_beside_match(s.wheelhouse)
    s.write_series({"Change A": {"vllm/a.py": CHANGE_A.replace("A_3 = 3", "A_3 = 33")}})
    env = {**os.environ, "VLLM_OVERLAY_FAULT": fault}
    proc = subprocess.run(cli_build(s), cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    assert_beside_match(s.wheelhouse)
    build(s)
    assert_beside_match(s.wheelhouse)
    assert {f"{wheel.name.removesuffix('.whl')}{x}" for x in wheelhouse.BESIDE_SUFFIXES} | {
        "constraints-x86_64.txt"} <= set(index.read_sums(s.wheelhouse))
