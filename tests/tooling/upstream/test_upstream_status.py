"""`status` and `bisect` on synthetic upstream releases (the scenario:
tests/tooling/helpers/upstream_releases.py)."""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from vllm_overlay.upstream import bisect as bisection
from vllm_overlay import cli
from vllm_overlay.common import series
from vllm_overlay.upstream import status
from vllm_overlay.upstream import releases as upstream
from vllm_overlay.commands import bisect as upstream_cli
from vllm_overlay.commands import status as status_cli
from vllm_overlay.common.gittree import GitTree
from vllm_overlay.common.paths import REPO
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.wheelbuild import constraints
from vllm_overlay.upstream import installable
from tests.tooling.helpers.synthetic import link_supply_venv
from tests.tooling.helpers.upstream_releases import (CONFLICT_FROM, NEW_RUNTIME_PIN, OFFSET_FROM,
                                                     PRE, RUNNER_MOVED_FROM, THREE_WAY_FROM,
                                                     UPSTREAM_FROM, VERSIONS, write_patches)

REAL_COMPILE_LOCK = constraints.compile_lock  # before the fixtures fake it


def releases(u, spec=None, pre=False):
    urls = upstream.list_sdists("vllm", [u.index])
    return upstream.select(urls, u.pin.upstream_version, spec, pre), urls


def compute(u, versions, urls, jobs=3):
    return status.compute(u.pin, series.read_series(u.patches), versions, urls, u.patches,
                          jobs)


def test_version_order_follows_pep440():
    shuffled = ["0.9.10", "0.10.0", "0.9.2", "0.9.2.post1", "0.9.2rc1", "0.9.2.dev3",
                "0.9.2a1", "0.9.2b2", "0.19.1", "0.20.0", "0.9.0.1", "1.0"]
    assert upstream.sort_versions(shuffled) == [
        "0.9.0.1", "0.9.2.dev3", "0.9.2a1", "0.9.2b2", "0.9.2rc1", "0.9.2", "0.9.2.post1",
        "0.9.10", "0.10.0", "0.19.1", "0.20.0", "1.0"]
    assert upstream.version_key("1.0") == upstream.version_key("1.0.0")
    with pytest.raises(OverlayError, match="1.0-foo"):
        upstream.version_key("1.0-foo")


def test_release_selection(synth_upstream):
    u = synth_upstream
    versions, urls = releases(u)
    assert versions == VERSIONS  # pin .. newest, 1.0.10 after 1.0.9, no pre-release
    assert releases(u, pre=True)[0] == VERSIONS + [PRE]
    assert releases(u, "1.0.3..1.0.5")[0] == ["1.0.3", "1.0.4", "1.0.5"]
    assert releases(u, "1.0.9..latest")[0] == ["1.0.9", "1.0.10"]
    assert releases(u, "1.0.10,1.0.2")[0] == ["1.0.2", "1.0.10"]
    with pytest.raises(OverlayError, match="2.0.0"):
        releases(u, "1.0.1,2.0.0")
    with pytest.raises(OverlayError, match="empty release range"):
        releases(u, "1.0.5..1.0.3")


def test_matrix(synth_upstream, tmp_path):
    u = synth_upstream
    versions, urls = releases(u)
    matrix = compute(u, versions, urls)
    names = [p.name for p in matrix.patches]
    a, b, c, d, e = names
    cells = {r.version: r.cells for r in matrix.releases}
    for i, version in enumerate(VERSIONS):
        row = cells[version]
        assert row[a].status == ("offset" if i >= OFFSET_FROM else "clean"), version
        assert row[b].status == ("conflict" if i >= CONFLICT_FROM else "clean"), version
        assert row[c].status == ("upstream" if i >= UPSTREAM_FROM else "clean"), version
        assert row[c].apply == "clean"
        assert row[d].status == ("3-way" if i >= THREE_WAY_FROM else "clean"), version
        assert row[e].status == "upstream"  # its bad probe holds everywhere
        assert row[d].without == row[e].without == ([b] if i >= CONFLICT_FROM else [])
    assert cells["1.0.7"][b].files == ["vllm/b.py"]
    assert "does not match" in cells["1.0.7"][b].detail
    assert "offset" in cells["1.0.2"][a].detail
    # 1.0.3 has new_field, but annotated `int`: one probe of two holds, so not upstream
    probe_holds = [r["holds"] for r in cells["1.0.3"][c].probes]
    assert probe_holds == [True, False]
    info = {p.name: p for p in matrix.patches}
    assert info[c].suggested_applied_upstream == VERSIONS[UPSTREAM_FROM]
    assert info[a].suggested_applied_upstream is None
    assert info[d].probes == []
    assert [x.patch for x in matrix.bad_probes] == [e]

    md, js = status.write_reports(matrix, tmp_path / "out")
    data = json.loads(js.read_text())
    assert [r["version"] for r in data["releases"]] == VERSIONS
    assert data["releases"][CONFLICT_FROM]["cells"][b]["files"] == ["vllm/b.py"]
    text = md.read_text()
    row_b = next(line for line in text.splitlines() if line.startswith(f"| {b[:4]} "))
    assert row_b.split(" | ")[1:] == ["clean"] * CONFLICT_FROM + ["conflict"] * (
        len(VERSIONS) - CONFLICT_FROM - 1) + ["conflict |"]
    assert "## Bad probes" in text and "defines vllm/a.py::A_0" in text
    assert f"| {c[:4]} | - | {VERSIONS[UPSTREAM_FROM]} |" in text
    assert "1.0.7 .. 1.0.10 (4 releases) 0002 **conflict**: vllm/b.py" in text


def _add_ours(text: str) -> str:
    return text.replace("class Runner:\n", "class Runner:\n    def ours(self):\n        return 1\n")


def test_a_patch_whose_file_upstream_deleted_is_not_a_conflict(synth_upstream, tmp_path):
    u = synth_upstream
    ours = ({"vllm/m.py": _add_ours}, ["defines vllm/m.py::Runner.ours"])
    write_patches(tmp_path / "mp", u.sdist(VERSIONS[0]), tmp_path / "mp-dev", {
        "M: add Runner.ours (upstream in 1.0.8)": (*ours, ["Applied-Upstream: 1.0.8"]),
        "P: change Runner.m3 (ours only)": (
            {"vllm/m.py": lambda t: t.replace("return 3", "return 'ours'")},
            ["defines vllm/m.py::Runner.never"])})
    write_patches(tmp_path / "n", u.sdist(VERSIONS[0]), tmp_path / "n-dev",
                  {"N: add Runner.ours, no header (its probe holds in 1.0.8)": ours})
    versions, urls = releases(u, "1.0.0,1.0.7,1.0.8,1.0.9,1.0.10")
    matrix = status.compute(u.pin, series.read_series(tmp_path / "mp"), versions, urls,
                            tmp_path / "mp", 2)
    m, p = [x.name for x in matrix.patches]
    cells = {r.version: r.cells for r in matrix.releases}
    assert VERSIONS[RUNNER_MOVED_FROM] == "1.0.9"
    for version in ("1.0.9", "1.0.10"):
        # upstream had M (its header says so), then deleted the file: upstream, not conflict
        assert cells[version][m].apply == "deleted" and cells[version][m].status == "upstream"
        assert cells[version][m].short() == "upstream/deleted"
        assert cells[version][m].files == ["vllm/m.py"]
        assert "since 1.0.8 (its Applied-Upstream header)" in cells[version][m].detail
        # P is ours alone: its file is gone, a port, not a merge conflict
        assert cells[version][p].status == "deleted" and cells[version][p].files == ["vllm/m.py"]
    assert cells["1.0.8"][m].status == "upstream" and cells["1.0.8"][p].status == "clean"
    md = status.to_markdown(matrix)
    assert "conflict" not in md.split("| patch |")[1].split("Legend:")[0]  # the matrix
    assert "| 1.0.9 | yes | 1 | 0 | 0 | 1: 0002 deleted (1 hunk, 2 lines) |" in md
    assert "**deleted** a file the patch changes was deleted upstream" in md
    assert "upstream deleted vllm/m.py, which it changes" in md
    # no header: the first release where its probes held (1.0.8) says the same
    matrix = status.compute(u.pin, series.read_series(tmp_path / "n"), versions, urls,
                            tmp_path / "n", 2)
    cell = matrix.releases[-1].cells[matrix.patches[0].name]
    assert cell.short() == "upstream/deleted" and "its probes held there" in cell.detail


def test_sdist_hash_is_recorded_then_verified(synth_upstream):
    u = synth_upstream
    versions, urls = releases(u, "1.0.0,1.0.1")
    compute(u, versions, urls)
    record = json.loads(upstream.tofu_file().read_text())
    sha = record["vllm-1.0.1.tar.gz"]["sha256"]
    assert sha == upstream.sha256_file(u.sdist("1.0.1"))
    # reuse works without any index (urls=None) and re-hashes the cached file
    assert compute(u, versions, None).releases[1].sha256 == sha
    blob = upstream.blobcache.blob_path(sha)
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes() + b"tampered")
    with pytest.raises(OverlayError) as err:
        compute(u, versions, None)
    assert "vllm-1.0.1.tar.gz" in str(err.value) and sha in str(err.value)
    blob.unlink()  # a re-download that brings other bytes than first seen is refused too
    (u.sdist("1.0.1")).write_bytes(b"other bytes")
    with pytest.raises(OverlayError, match=f"vllm-1.0.1.tar.gz: downloaded sha256 .* != {sha}"):
        compute(u, versions, urls)


def test_bad_probe_syntax_is_a_tool_error(synth_upstream):
    u = synth_upstream
    patch = u.patches / sorted(p.name for p in u.patches.glob("0005-*"))[0]
    text = patch.read_text()
    patch.write_text(text.replace("Probe: defines vllm/a.py::A_0", "Probe: exists vllm/a.py"))
    with pytest.raises(OverlayError) as err:
        compute(u, ["1.0.0"], None)
    message = str(err.value)
    line = text.splitlines().index("Probe: defines vllm/a.py::A_0") + 1
    assert f"{patch.name}:{line}:" in message and "unknown kind 'exists'" in message
    patch.write_text(text.replace("vllm/a.py::A_0", "vllm/a.py:A_0"))
    with pytest.raises(OverlayError, match=r"0005-.*<path>::<Dotted.Name>"):
        compute(u, ["1.0.0"], None)


def test_bisect_apply_finds_the_first_conflict_in_log2_steps(synth_upstream):
    u = synth_upstream
    versions, urls = releases(u)
    said, checked = [], []
    checks = bisection.Checks(u.pin, series.read_series(u.patches), urls, said.append)

    def counting(version):
        checked.append(version)
        return checks.apply(version)

    outcome = bisection.run(u.pin, [], versions, counting, said.append, verify_ends=False)
    assert outcome.first_bad == VERSIONS[CONFLICT_FROM]
    assert len(outcome.steps) <= math.ceil(math.log2(len(versions) - 1))
    assert checked == [v for v, _, _ in outcome.steps]
    assert all(v not in ("1.0.0", "1.0.10") for v in checked)
    assert any("Bisecting:" in line for line in said)


def test_bisect_test_command_and_end_checks(synth_upstream):
    u = synth_upstream
    versions, urls = releases(u, "1.0.0..1.0.6")
    checks = bisection.Checks(u.pin, series.read_series(u.patches), urls, lambda _: None)
    # the command sees the patched tree: fails once upstream's D_13 change is there
    check = checks.test("test -f vllm/e.py && grep -q \"D_13 = 13\" vllm/d.py")
    outcome = bisection.run(u.pin, [], versions, check, lambda _: None)
    assert outcome.first_bad == VERSIONS[THREE_WAY_FROM]
    assert [v for v, _, _ in outcome.end_checks] == ["1.0.0", "1.0.6"]
    passing = checks.test("true")
    assert bisection.run(u.pin, [], versions, passing, lambda _: None).first_bad is None
    with pytest.raises(OverlayError, match="GOOD=1.0.0 fails"):
        bisection.run(u.pin, [], versions, checks.test("false"), lambda _: None)
    # a release where the series does not apply cannot be tested: skipped
    verdict, why = checks.test("true")(VERSIONS[CONFLICT_FROM])
    assert verdict == bisection.SKIP and "vllm/b.py" in why


def test_search_around_skipped_releases():
    versions = [f"1.{i}" for i in range(10)]
    skip = {"1.4", "1.5"}

    def check(v):
        if v in skip:
            return bisection.SKIP, ""
        return (bisection.BAD if int(v[2:]) >= 7 else bisection.GOOD), ""

    assert bisection.search(versions, check, lambda _: None).first_bad == "1.7"
    skip.update({"1.6", "1.7"})
    hidden = bisection.search(versions, lambda v: (bisection.SKIP, "") if v in skip else
                              ((bisection.BAD if int(v[2:]) >= 6 else bisection.GOOD), ""),
                              lambda _: None)
    assert hidden.first_bad is None and hidden.candidates == ["1.4", "1.5", "1.6", "1.7", "1.8"]


def test_bisect_cli_prints_steps_and_keeps_the_log(synth_upstream, monkeypatch, capsys):
    u = synth_upstream
    monkeypatch.setenv("PIP_INDEX_URL", u.index)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setattr(upstream_cli.pin, "load", lambda: u.pin)  # the synthetic pin
    log = u.root / "logs" / "bisect.log"
    monkeypatch.chdir(u.patches.parent)  # a relative --patches works (git runs elsewhere)
    code = cli.main(["bisect", "--patches", "patches", "--good", "1.0.0",
                     "--bad", "latest", "--log", str(log)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{VERSIONS[CONFLICT_FROM]} is the first bad release" in out
    assert "[step 1]" in out and "[end check] 1.0.10: bad" in out
    text = log.read_text()
    assert out.strip().splitlines()[-1] in text and "0002 conflict" in text
    assert not list(log.parent.glob(".*tmp*"))
    code = cli.main(["bisect", "--patches", str(u.patches), "--check", "test"])
    assert code == 1 and "needs --cmd" in capsys.readouterr().err


def test_status_says_per_release_whether_its_runtime_installs(synth_upstream, network_lock,
                                                              monkeypatch, tmp_path):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip's indexes: PyPI alone
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(installable, "unresolvable_host", lambda texts: None)  # fake hosts
    network_lock.missing = {NEW_RUNTIME_PIN}  # the configured index lacks it
    u = synth_upstream
    versions, urls = releases(u, "1.0.9..latest")
    matrix = compute(u, versions, urls)
    can = {r.version: r.installable for r in matrix.releases}
    assert can["1.0.9"]["installable"] is True and can["1.0.9"]["text"] == "yes"
    assert can["1.0.10"]["installable"] is False
    assert can["1.0.10"]["text"] == f"no ({NEW_RUNTIME_PIN} not on https://pypi.org/simple)"
    md, js = status.write_reports(matrix, tmp_path / "out")
    assert f"| 1.0.10 | no ({NEW_RUNTIME_PIN} not on https://pypi.org/simple) |" in \
        md.read_text()
    data = json.loads(js.read_text())
    assert data["releases"][1]["installable"]["package"] == NEW_RUNTIME_PIN
    # warm: the answer is cached per release runtime and index settings, not resolved again
    calls = len(network_lock.calls)
    compute(u, versions, urls)
    assert len(network_lock.calls) == calls
    # other index settings: resolved again
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://user:secret@internal.example/simple")
    again = compute(u, ["1.0.10"], urls).releases[0].installable
    assert len(network_lock.calls) > calls
    assert again["text"] == (f"no ({NEW_RUNTIME_PIN} not on https://pypi.org/simple, "
                             "https://***@internal.example/simple)")
    # a "no" is resolved again once it is old: the index got the pin since
    network_lock.missing = set()
    assert compute(u, ["1.0.10"], urls).releases[0].installable["installable"] is False
    for cached in (tmp_path / "cache" / "installable").glob("[0-9a-f]*.json"):
        data = json.loads(cached.read_text())
        data["checked"] = 0  # long ago
        cached.write_text(json.dumps(data))
    assert compute(u, ["1.0.10"], urls).releases[0].installable["text"] == "yes"


def test_installability_names_what_the_real_uv_cannot_find(tmp_path, monkeypatch,
                                                           supply_venv):
    """The real uv (no network: a file:// index) and the parsing of its message."""
    monkeypatch.setattr(constraints, "compile_lock", REAL_COMPILE_LOCK)
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path / "cache"))
    link_supply_venv(tmp_path / "cache", supply_venv)
    project = tmp_path / "simple" / "flashinfer-python"
    project.mkdir(parents=True)
    (project / "index.html").write_text(
        '<a href="flashinfer_python-0.6.8-py3-none-any.whl">'
        "flashinfer_python-0.6.8-py3-none-any.whl</a>\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip's indexes: this one alone
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "simple").as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    result = installable.resolve([NEW_RUNTIME_PIN], "x86_64")
    assert result["installable"] is False, result
    assert result["text"] == f"no ({NEW_RUNTIME_PIN} not on {(tmp_path / 'simple').as_uri()})"
    result = installable.resolve(["no-such-package==1.0"], "x86_64")
    assert result["package"] == "no-such-package==1.0"


def _status(u, out, spec, *more):
    return cli.main(["status", "--patches", str(u.patches), "--out", str(out), "--releases",
                     spec, "--no-drift", *more])


def test_first_screen_says_what_a_move_costs_and_fail_on_change_alerts(
        synth_upstream, monkeypatch, capsys, tmp_path):
    u = synth_upstream
    monkeypatch.setattr(status_cli.pin, "load", lambda: u.pin)
    monkeypatch.setenv("PIP_INDEX_URL", u.index)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    out = tmp_path / "reports"
    assert _status(u, out, "1.0.6..1.0.7", "--fail-on-change") == 0  # nothing to compare yet
    md = (out / "status.md").read_text()
    first_screen = md.splitlines()[:12]
    assert "## Can we move, and what does it cost?" in first_screen
    a, b, c, d, e = [p.name for p in series.read_series(u.patches)]
    # 1.0.7: C and E upstream (dropped by a rebase), A at shifted lines, D 3-way, B conflicts
    assert "| 1.0.7 | yes | 2 | 1 | 1 | 1: 0002 (1 hunk, 2 lines) |" in first_screen
    assert "| 1.0.6 | yes | 2 | 2 | 1 | 0 |" in first_screen
    assert "- not compared: no earlier report" in md
    summary = json.loads((out / "status.json").read_text())["summary"]["1.0.7"]
    assert summary["conflicting_patches"] == [{"patch": b, "hunks": 1, "lines": 2,
                                               "why": "conflict"}]
    # the same again: nothing changed, exit 0 even with the flag
    assert _status(u, out, "1.0.6..1.0.7", "--fail-on-change") == 0
    assert "- nothing (compared with " in (out / "status.md").read_text()
    # the last report said B applied and C did not hold on 1.0.7: newly conflict / upstream
    data = json.loads((out / "status.json").read_text())
    cells = data["releases"][1]["cells"]
    cells[b]["status"] = cells[c]["status"] = "clean"
    (out / "status.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert _status(u, out, "1.0.6..1.0.7") == 0  # reported, but no flag: exit 0
    (out / "status.json").write_text(json.dumps(data))
    assert _status(u, out, "1.0.6..1.0.7", "--fail-on-change") == 1
    err = capsys.readouterr().err
    assert f"1.0.7: {b} newly conflict (was clean; " in err
    assert f"1.0.7: {c} newly upstream (was clean)" in err
    assert f"- 1.0.7: {c} newly upstream (was clean)" in (out / "status.md").read_text()
    # a release newer than the last report's newest is a change too
    assert _status(u, out, "1.0.6..1.0.8", "--fail-on-change") == 1
    assert "1.0.8: new release (installable: yes)" in capsys.readouterr().err


def test_newly_drifting_is_a_change():
    def report(releases):
        return {"pin": "1.0.0", "releases": [], "drift": {"patches": [{
            "name": "0001-x.patch", "definitions": [{"file": "vllm/a.py", "name": "f",
                                                    "changes": [{"release": r, "follow_up": True}
                                                                for r in releases]}]}]}}
    assert status.changes_since(report(["1.0.2"]), report(["1.0.2"])) == []
    assert status.changes_since(report(["1.0.2"]), report(["1.0.3", "1.0.2"])) == [
        "1.0.3: 0001-x.patch newly drifting: upstream changed vllm/a.py::f"]
    assert status.changes_since({"pin": "0.9"}, report([])) == [
        "the pin moved: 0.9 -> 1.0.0 (cells not compared)"]


def test_make_status_passes_fail_on_change():
    make = subprocess.run(["make", "-n", "status", "FAIL_ON_CHANGE=1"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    assert "--fail-on-change" in make
    make = subprocess.run(["make", "-n", "status"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout
    assert "--fail-on-change" not in make


def test_warm_status_reuses_cached_cells_and_reads_pip_config_once(synth_upstream, monkeypatch,
                                                                    tmp_path):
    """A second `status` on the same releases, pin, series and code runs no git on the trees
    (the cells are cached by content); the result is the same; a changed patch is evaluated
    again. pip's index settings are read once per run, not per release and arch."""
    u = synth_upstream
    versions, urls = releases(u, "1.0.0,1.0.7,1.0.9,1.0.10")
    cold = status.to_json(compute(u, versions, urls))
    real_evaluate, real_urls = status.evaluate_release, installable.pipindex.pip_index_urls
    evaluated, reads = [], []
    monkeypatch.setattr(status, "evaluate_release",
                        lambda tree, *a, **k: evaluated.append(tree) or real_evaluate(tree, *a, **k))
    monkeypatch.setattr(installable.pipindex, "pip_index_urls",
                        lambda: reads.append(1) or real_urls())
    assert status.to_json(compute(u, versions, urls)) == cold
    assert evaluated == []
    assert len(reads) == 1
    # another series (same names, other bytes): no stale cells
    changed = tmp_path / "changed"
    changed.mkdir()
    for item in u.patches.iterdir():
        data = item.read_bytes()
        (changed / item.name).write_bytes(data + b"\n" if item.name.endswith(".patch") else data)
    status.compute(u.pin, series.read_series(changed), versions, urls, changed, 2)
    assert len(evaluated) == len(versions)  # the pin too: its blobs are the 3-way bases


def test_the_store_holds_each_release_once_and_no_work_tree_stays(synth_upstream):
    """Each release's files are one commit of the cache's store, the same tree as the
    unpacked sdist; a blob two releases share is stored once (the later import skips it);
    the work trees status evaluates in are gone after the run."""
    u = synth_upstream
    versions, urls = releases(u, "1.0.0,1.0.10")
    matrix = compute(u, versions, urls)
    store = upstream.store()

    def tree_of(rev: str, where: Path = store) -> str:
        return subprocess.run(["git", "-C", str(where), "rev-parse", f"{rev}^{{tree}}"],
                              capture_output=True, text=True, check=True).stdout.strip()

    def blobs(sha256: str) -> set[str]:
        out = subprocess.run(["git", "-C", str(store), "ls-tree", "-r",
                              upstream.sdist_ref(sha256)],
                             capture_output=True, text=True, check=True).stdout
        return {line.split()[2] for line in out.splitlines()}

    for release in matrix.releases:
        unpacked = GitTree.unpack(u.dist / release.sdist, u.root / "unpacked" / release.version,
                                  u.pin.released)
        assert tree_of(upstream.sdist_ref(release.sha256)) == tree_of("HEAD", unpacked.path)
    pin_blobs, later = blobs(matrix.releases[0].sha256), blobs(matrix.releases[1].sha256)
    shared = pin_blobs & later
    assert shared and later - shared  # the scenario: some files changed, most did not
    packs = sorted(str(p) for p in (store / "objects" / "pack").glob("*.idx"))
    packed = subprocess.run(["git", "-C", str(store), "verify-pack", "-v", *packs],
                            capture_output=True, text=True, check=True).stdout.split()
    for blob in shared:
        assert packed.count(blob) == 1, blob
    assert not any((upstream.cache_dir() / "upstream-work").iterdir())


def test_the_series_applied_on_the_pin_leaves_its_blobs_in_the_store(synth_upstream):
    """Every blob the patches' `index` lines name (before and after each patch) is in the
    store after a status run, though the work trees are gone: a patch on a file an earlier
    patch changed needs the earlier patch's result as its 3-way base in later releases."""
    u = synth_upstream
    versions, urls = releases(u, "1.0.0,1.0.10")
    compute(u, versions, urls)
    named = set()
    for patch in series.read_series(u.patches):
        for line in patch.path.read_text().splitlines():
            if line.startswith("index "):
                named.update(b for b in line.split()[1].split("..") if set(b) != {"0"})
    assert named
    for blob in sorted(named):
        subprocess.run(["git", "-C", str(upstream.store()), "rev-parse", "--verify", "-q",
                        f"{blob}^{{blob}}"], check=True, capture_output=True)


def test_an_index_host_dns_does_not_know_is_unknown_at_once_and_not_cached(tmp_path,
                                                                           monkeypatch):
    """Some releases name --extra-index-url https://flashinfer.ai/whl/: where DNS does not
    know the host, uv retried it for ~5 s per release and arch, on every run."""
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path / "cache"))
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                  "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    asked = []
    monkeypatch.setattr(constraints, "compile_lock", lambda *a, **k: asked.append(a) or "")
    lines = ["--extra-index-url https://no-such-host.invalid/whl/", "torch==2.10.0"]
    result = installable.resolve(lines, "x86_64", ["file:///nowhere/simple"])
    assert result["installable"] is None and not asked
    assert result["text"] == "unknown (cannot resolve no-such-host.invalid)"
    assert not (tmp_path / "cache" / "installable").exists()  # asked again next run
    assert installable.resolve(lines[1:], "x86_64", ["file:///nowhere/simple"])["text"] \
        == "yes" and len(asked) == 1  # the control: a known host (none here) goes to uv
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # the proxy resolves names
    installable.resolve(lines, "x86_64", ["file:///nowhere/simple"])
    assert len(asked) == 2
