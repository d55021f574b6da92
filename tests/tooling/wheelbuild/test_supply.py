"""Supply chain: the SBOM in and beside the wheel, the hash-locked runtime, the provenance."""

import base64
import dataclasses
import datetime
import hashlib
import json
import re
import zipfile
from pathlib import Path

import pytest

from tests.tooling.helpers.synthetic import SYNTH_LOCK, UPSTREAM, VERSION
from tests.tooling.helpers.deploy import make_venv, pip
from vllm_overlay.wheelbuild import constraints, overlay_mode, provenance, record, sbom
from vllm_overlay.common import pin, series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO
from vllm_overlay.common.requirements import LOCK_ENTRY_RE, normalize_name, requirement_lines
from vllm_overlay.testing import testenv

OUT_NAME = f"vllm-{VERSION}-cp38-abi3-manylinux_2_31_x86_64.whl"
SERIES = {"Change A": {"vllm/a.py": "A = 'patched'\n"}, "Add new": {"vllm/new.py": "NEW = 1\n"}}


# Each patch of the series (by its name without the number: a rebase renumbers and drops
# them) -> its CycloneDX patch type and the upstream PRs it resolves.
PEDIGREE = {
    "Import-encoder-CUDA-graph-modules-from-where-they-li.patch": ("backport", ["38982", "38997"]),
    "Run-Qwen3-VL-video-through-the-ViT-encoder-CUDA-grap.patch": ("backport", ["38061"]),
    "nano-nemotron-vl-bound-mm-tokens-per-item-without-du.patch": ("backport", ["38727"]),
    "Infer-the-encoder-CUDA-graph-frame-limit-from-the-mo.patch": ("backport", ["40445"]),
    "Accept-encoder_cudagraph_max_images_per_batch-as-a-d.patch": ("unofficial", []),
    "Run-videos-with-more-frames-than-the-encoder-graph-h.patch": ("unofficial", ["43403"]),  # Forwarded
    "Cap-the-auto-encoder-CUDA-graph-budgets-at-max_model.patch": ("backport", ["40580"]),
    "No-encoder-CUDA-graphs-while-video-pruning-is-on-val.patch": ("backport", ["38040"]),
    "Share-one-memory-pool-across-encoder-CUDA-graphs-lar.patch": ("backport", ["41714"]),
    "Keep-encoder-CUDA-graphs-off-with-a-capture-unsafe-V.patch": ("unofficial", []),
}


def root_pins() -> dict[str, str]:
    """name -> version, for the pin's runtime Requires-Dist that pin one exactly."""
    lines = requirement_lines((REPO / "locks" / "runtime-x86_64.in").read_text())
    return {m[1]: m[2] for line in lines if (m := re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)$", line))}


def real_series_sbom() -> dict:
    """The SBOM of the real pin and the real series (no build: no changed files)."""
    the_pin, patches = pin.load(), series.read_series()
    requires = requirement_lines((REPO / "locks" / "runtime-x86_64.in").read_text())
    build = dataclasses.replace(record.create(the_pin, "x86_64", "overlay", patches,
                                              series.PATCHES, REPO / "locks", REPO),
                                epoch=1776470400)
    facts = sbom.facts(build, REPO, {}, requires)
    return json.loads(sbom.render(facts))


def test_real_series_sbom_is_valid_and_records_every_patch_with_its_upstream_links():
    doc = real_series_sbom()
    sbom.validate(json.dumps(doc).encode(), "real series SBOM")  # the schema check itself
    the_pin, patches = pin.load(), series.read_series()
    main = doc["metadata"]["component"]
    assert main["purl"] == f"pkg:pypi/vllm@{the_pin.overlay_version.replace('+', '%2B')}"
    pedigree = main["pedigree"]
    assert {a["hashes"][0]["content"] for a in pedigree["ancestors"]} == {
        the_pin.sdist.sha256, the_pin.wheel("x86_64").sha256}
    assert all(a["purl"].startswith(f"pkg:pypi/vllm@{the_pin.upstream_version}?file_name=")
               for a in pedigree["ancestors"])
    assert series.series_digest(patches) in pedigree["notes"]
    got = [(p["type"], p["diff"]["url"], sorted(r["references"][0].rsplit("/", 1)[1]
                                                for r in p.get("resolves", [])))
           for p in pedigree["patches"]]
    assert sorted(got) == sorted((PEDIGREE[p.name[5:]][0], f"patches/{p.name}",
                                  PEDIGREE[p.name[5:]][1]) for p in patches)
    assert sorted(p["diff"]["text"]["content"] for p in pedigree["patches"]) == sorted(
        p.path.read_text() for p in patches)
    deps = {c["name"]: c.get("version") for c in doc["components"]}
    pins = root_pins()  # what the wheel's own Requires-Dist pins exactly
    assert deps["torch"] == pins["torch"] and deps["torchvision"] == pins["torchvision"]
    assert "zentorch" not in deps and "six" not in deps  # an extra; a python > 3.11 marker
    assert [d["dependsOn"] for d in doc["dependencies"] if d["ref"] == main["bom-ref"]][0]


def test_schema_check_rejects_a_broken_document():
    doc = real_series_sbom()
    doc["metadata"]["component"]["pedigree"]["patches"][0]["type"] = "vendor"  # not a type
    with pytest.raises(OverlayError, match="not a valid CycloneDX 1.6 document.*type"):
        sbom.validate(json.dumps(doc).encode(), "broken")


def build(s) -> Path:
    return overlay_mode.build_overlay_wheel("x86_64", s.wheelhouse, s.patches, s.repo)


@pytest.fixture
def built(synth):
    synth.seed_cache()
    synth.write_series(SERIES)
    return synth, build(synth)


def embedded(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(sbom.member_name(VERSION))


def test_wheel_carries_the_sbom_in_record_and_beside_it(built):
    s, wheel = built
    data = embedded(wheel)
    with zipfile.ZipFile(wheel) as zf:
        record = zf.read(f"vllm-{VERSION}.dist-info/RECORD").decode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    assert f"vllm-{VERSION}.dist-info/sboms/vllm.cdx.json,sha256={digest},{len(data)}" in record
    beside = s.wheelhouse / sbom.beside_name(wheel.name)
    assert beside.read_bytes() == data
    sums = dict(reversed(line.split("  ")) for line in
                (s.wheelhouse / "SHA256SUMS").read_text().splitlines())
    assert sums[beside.name] == hashlib.sha256(data).hexdigest()
    doc = json.loads(data)
    files = {c["name"]: c["hashes"][0]["content"] for c in doc["metadata"]["component"]["components"]}
    assert files == {"vllm/a.py": hashlib.sha256(b"A = 'patched'\n").hexdigest(),
                     "vllm/new.py": hashlib.sha256(b"NEW = 1\n").hexdigest()}
    assert [p["type"] for p in doc["metadata"]["component"]["pedigree"]["patches"]] == [
        "unofficial", "unofficial"]  # the synthetic patches say Origin: vendor


@pytest.mark.real_sbom_render  # the second render must really give the same bytes
def test_two_builds_give_byte_identical_sboms(built, monkeypatch):
    s, wheel = built
    first = embedded(wheel)
    (s.wheelhouse / ".state-x86_64.json").unlink()  # force a real rebuild
    assert embedded(build(s)) == first
    doc = json.loads(first)
    epoch = json.loads((s.wheelhouse / "manifest-x86_64.json").read_text())["source_date_epoch"]
    assert doc["metadata"]["timestamp"] == datetime.datetime.fromtimestamp(
        epoch, datetime.UTC).isoformat()
    # the serial is derived from the inputs: another series gives another serial
    s.write_series({"Change A": {"vllm/a.py": "A = 'other'\n"}})
    other = json.loads(embedded(build(s)))
    assert other["serialNumber"] != doc["serialNumber"]


def rewrite(wheel: Path, out: Path, drop: set[str] = frozenset(), replace: dict | None = None,
            ) -> Path:
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename not in drop:
                dst.writestr(info, (replace or {}).get(info.filename, src.read(info.filename)))
    return out


def record_with(wheel: Path, name: str, data: bytes | None) -> bytes:
    """RECORD with `name`'s row recomputed for `data` (None: the row removed)."""
    record_name = f"vllm-{VERSION}.dist-info/RECORD"
    with zipfile.ZipFile(wheel) as zf:
        rows = zf.read(record_name).decode().splitlines()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data or b"").digest()).rstrip(b"=").decode()
    rows = [(f"{name},sha256={digest},{len(data)}" if data is not None else None)
            if r.startswith(name + ",") else r for r in rows]
    return ("\n".join(r for r in rows if r is not None) + "\n").encode()


def test_verify_refuses_a_missing_or_tampered_sbom_or_record_row(built, tmp_path):
    _, wheel = built
    good = embedded(wheel)
    member, record = sbom.member_name(VERSION), f"vllm-{VERSION}.dist-info/RECORD"
    sbom.check_wheel(wheel, VERSION, good)  # negative control: the built wheel passes
    tampered = good.replace(b'"unofficial"', b'"backport"', 1)
    cases = {
        "no SBOM member": rewrite(wheel, tmp_path / "a.whl", drop={member},
                                  replace={record: record_with(wheel, member, None)}),
        "differs from the SBOM": rewrite(wheel, tmp_path / "b.whl", replace={
            member: tampered, record: record_with(wheel, member, tampered)}),
        "no correct row": rewrite(wheel, tmp_path / "c.whl",
                                  replace={record: record_with(wheel, member, None)}),
    }
    wrong_row = record_with(wheel, member, good).replace(
        f"{member},sha256=".encode(), f"{member},sha256=AAAA".encode())
    cases["no correct row "] = rewrite(wheel, tmp_path / "d.whl", replace={record: wrong_row})
    for message, bad in cases.items():
        with pytest.raises(OverlayError, match=message.strip()):
            sbom.check_wheel(bad, VERSION, good)


def test_provenance_subjects_are_the_wheel_and_its_sbom(built):
    s, wheel = built
    statement = json.loads((s.wheelhouse / wheel.name.replace(".whl", ".intoto.json")).read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {x["name"]: x["digest"]["sha256"] for x in statement["subject"]}
    assert subjects == {
        wheel.name: hashlib.sha256(wheel.read_bytes()).hexdigest(),
        sbom.beside_name(wheel.name): hashlib.sha256(embedded(wheel)).hexdigest()}
    manifest = json.loads((s.wheelhouse / "manifest-x86_64.json").read_text())
    deps = {d["name"]: d["digest"] for d in statement["predicate"]["buildDefinition"][
        "resolvedDependencies"]}
    artifacts = manifest["upstream"]["artifacts"]
    assert deps[artifacts["sdist"]["filename"]] == {"sha256": artifacts["sdist"]["sha256"]}
    assert deps[artifacts["wheel-x86_64"]["filename"]] == {
        "sha256": artifacts["wheel-x86_64"]["sha256"]}
    assert deps["patches/series"] == {"sha256": manifest["series"]["sha256"]}
    assert deps["locks/runtime-x86_64.txt"] == {
        "sha256": hashlib.sha256(SYNTH_LOCK.encode()).hexdigest()}
    assert statement["predicate"]["runDetails"]["builder"]["id"]


def test_provenance_names_the_repository_commit(tmp_path):
    source = provenance.source_dependency(REPO)
    assert source is not None and len(source["digest"]["gitCommit"]) == 40
    assert provenance.source_dependency(tmp_path) is None  # not a checkout: left out


def test_constraints_pin_the_wheel_and_a_tampered_hash_fails_the_install(built, tmp_path):
    """The user's command against the wheelhouse's own index; then one wrong hash."""
    s, wheel = built
    text = (s.wheelhouse / "constraints-x86_64.txt").read_text()
    assert text.startswith("# Hash-locked runtime") and SYNTH_LOCK in text
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert f"vllm=={VERSION} \\\n    --hash=sha256:{digest}\n" in text
    index = (s.wheelhouse / "simple").as_uri()
    python = make_venv(tmp_path / "ok")
    proc = pip(python, "install", "--require-hashes", "-c", str(s.wheelhouse / "constraints-x86_64.txt"),
               "--no-deps", "--index-url", index, f"vllm=={UPSTREAM}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = tmp_path / "constraints-x86_64.txt"
    bad.write_text(text.replace(digest, digest[::-1]))
    proc = pip(make_venv(tmp_path / "bad"), "install", "--require-hashes", "-c", str(bad),
               "--no-deps", "--index-url", index, f"vllm=={UPSTREAM}")
    assert proc.returncode != 0 and "DO NOT MATCH THE HASHES" in proc.stderr, proc.stderr


def test_missing_runtime_lock_names_make_lock(synth):
    synth.seed_cache()
    (synth.repo / "locks" / "runtime-x86_64.txt").unlink()
    with pytest.raises(OverlayError, match=r"runtime-x86_64.txt: no runtime lock.*make lock ARCH=x86_64"):
        build(synth)
    assert not (synth.wheelhouse / OUT_NAME).exists()


def test_real_locks_pin_every_runtime_requirement():
    """Every Requires-Dist of the pin (markers for x86_64, CPython 3.11) is in the lock."""
    _, locked = constraints.read_lock(constraints.runtime_lock("x86_64"))
    _, test_locked = constraints.read_lock(constraints.test_lock("x86_64"))
    pins = root_pins()
    assert locked["torch"] == pins["torch"] and locked["torchvision"] == pins["torchvision"]
    assert not set(locked) & set(test_locked)  # the test lock adds only what the runtime lacks
    doc = real_series_sbom()
    assert all(c.get("version") == locked[c["name"]] for c in doc["components"])
    lines = constraints.runtime_lock("x86_64").read_text().splitlines()
    entries = [i for i, line in enumerate(lines) if LOCK_ENTRY_RE.match(line)]
    assert len(entries) == len(locked) and all(
        lines[i + 1].startswith("    --hash=sha256:") for i in entries)  # each entry hashed


@pytest.mark.network
def test_runtime_venv_install_fails_on_a_tampered_hash(tmp_path, monkeypatch):
    """testenv's own install path (--require-hashes over locks/): one real small package."""
    real = constraints.read_lock(constraints.runtime_lock("x86_64"))[0]
    entry = "tqdm==" + real.split("\ntqdm==", 1)[1].split("\n    # via", 1)[0] + "\n"
    repo = tmp_path / "repo"
    (repo / "locks").mkdir(parents=True)
    (repo / "locks" / "test-x86_64.txt").write_text("# nothing more\n")
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path / "cache"))
    tampered = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, entry)
    (repo / "locks" / "runtime-x86_64.txt").write_text(tampered)
    with pytest.raises(OverlayError, match="venv runtime: .*failed"):
        testenv.ensure_base("x86_64", repo)
    (repo / "locks" / "runtime-x86_64.txt").write_text(entry)  # negative control: installs
    venv = testenv.ensure_base("x86_64", repo)
    assert (venv / ".complete").exists()
    assert list(testenv.site_packages(venv).glob("tqdm-*.dist-info"))


def test_tools_venv_pins_the_supply_tools_alike():
    """cdx.py must import in the tools venv too (test_imports): the same pins in both files."""
    from vllm_overlay.wheelbuild import supplyenv

    tools = requirement_lines((REPO / "tests" / "requirements-tools.txt").read_text())
    assert set(requirement_lines(supplyenv.REQUIREMENTS.read_text())) <= set(tools)


def test_embed_adds_the_sbom_to_a_setup_py_wheel(built, tmp_path):
    """The setup.py modes: the SBOM member and its RECORD row added, the rest copied raw."""
    from vllm_overlay.wheelbuild import verify

    _, wheel = built
    member, document = sbom.member_name(VERSION), embedded(wheel)
    plain = rewrite(wheel, tmp_path / "plain.whl", drop={member},
                    replace={f"vllm-{VERSION}.dist-info/RECORD": record_with(wheel, member, None)})
    out = tmp_path / "with-sbom.whl"
    sbom.embed(plain, out, VERSION, document, (2024, 1, 2, 3, 4, 6))
    sbom.check_wheel(out, VERSION, document)
    with zipfile.ZipFile(plain) as a, zipfile.ZipFile(out) as b:
        assert [n for n in b.namelist() if n != member] == a.namelist()
        assert all(a.getinfo(n).CRC == b.getinfo(n).CRC for n in a.namelist()
                   if not n.endswith("RECORD"))
        verify.check_record_against_content(b, f"vllm-{VERSION}.dist-info/RECORD")
    with pytest.raises(OverlayError, match="already has"):
        sbom.embed(out, tmp_path / "twice.whl", VERSION, document, (2024, 1, 2, 3, 4, 6))


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_test_lock_pins_every_test_requirement_at_its_version(arch):
    """A package added to requirements-test.txt without `make lock` would be missing from the
    runtime venv (it installs the lock, not the requirements file): caught here, not in CI."""
    wanted = requirement_lines((REPO / "tests" / "upstream" / "requirements-test.txt").read_text())
    _, locked = constraints.read_lock(constraints.test_lock(arch))
    _, runtime = constraints.read_lock(constraints.runtime_lock(arch))
    for line in wanted:
        name, _, version = line.partition("==")
        key = normalize_name(name.split("[")[0].strip())
        assert key in locked or key in runtime, f"{line}: not in locks/test-{arch}.txt: make lock"
        if version:
            assert (locked.get(key) or runtime.get(key)) == version.split(";")[0].strip(), line
