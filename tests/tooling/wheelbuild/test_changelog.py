"""`make changelog`: what changed since the previous overlay version, from the records."""

import json
import re
import shutil

import pytest

from vllm_overlay.wheelbuild import changelog
from vllm_overlay.common import pin, series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO


UPSTREAM = pin.load().upstream_version  # whatever the pin is (a rebase moves it)
VERSION, OLD = f"{UPSTREAM}+mmcg.1", f"{UPSTREAM}+mmcg.0"
FORWARDED = "https://github.com/vllm-project/vllm/pull/43403"
NEW_PATCH = f"""\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: vLLM MM overlay <overlay@example.invalid>
Date: Mon, 23 Nov 2026 09:29:50 +0000
Subject: [PATCH] A patch new in this version

Made up by the test, after the real series (which may be one patch long).

Origin: vendor
Forwarded: {FORWARDED}
---
 vllm/made_up.py | 1 +
 1 file changed, 1 insertion(+)

diff --git a/vllm/made_up.py b/vllm/made_up.py
new file mode 100644
--- /dev/null
+++ b/vllm/made_up.py
@@ -0,0 +1 @@
+MADE_UP = True
"""


@pytest.fixture
def repo(tmp_path):
    """A copy of what the changelog reads: VERSION, the lock, patches/ (plus one made-up
    patch at the end), locks/, CHANGELOG.md."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("VERSION", "upstream.lock.json", "CHANGELOG.md"):
        shutil.copy(REPO / name, root / name)
    for name in ("patches", "locks"):
        shutil.copytree(REPO / name, root / name)
    (root / "VERSION").write_text(f"{VERSION}\n")  # the names below, whatever VERSION is now
    name = f"{len(series.read_series(root / 'patches')) + 1:04d}-A-patch-new-in-this-version.patch"
    (root / "patches" / name).write_text(NEW_PATCH)
    with open(root / "patches" / "series", "a") as f:
        f.write(f"{name}\n")
    return root


def carried_urls(repo) -> list[str]:
    """The lines "Upstream changes carried" must have: each PR/issue URL in a patch's
    Origin, Bug or Forwarded trailer, with its number and Applied-Upstream release."""
    lines = []
    for patch in series.read_series(repo / "patches"):
        words = " ".join(v for k in ("Origin", "Bug", "Forwarded")
                         for v in patch.trailers.get(k, []))
        upstream = patch.trailers.get("Applied-Upstream")
        for url in re.findall(r"https://github\.com/\S+/(?:pull|issues)/\d+", words):
            lines.append(f"- {url} ({patch.name[:4]}"
                         + (f", upstream in {upstream[0]})" if upstream else ")"))
    return lines


def previous(repo) -> dict:
    """A made-up <pin>+mmcg.0: the first patch differed, the last (made-up) one absent, an
    extra patch, older deps."""
    old = changelog.record("x86_64", repo)
    old["version"] = OLD
    patches = old["series"]["patches"]
    patches[0]["sha256"] = "0" * 64
    patches.pop()  # the series' last patch is new in this version
    patches.append({"name": "0007-Old-workaround.patch", "sha256": "1" * 64,
                    "subject": "An old workaround", "origin": "vendor"})
    lock = old["runtime_lock"]
    lock["torch"] = "2.9.1"
    del lock["tqdm"]
    lock["oldpkg"] = "1.0"
    (repo / "releases").mkdir()
    (repo / "releases" / f"{OLD}.json").write_text(json.dumps(old))
    return old


def test_changes_since_the_previous_version(repo):
    previous(repo)
    out = changelog.make_changelog("x86_64", repo=repo, wheelhouse=repo / "wheelhouse")
    notes = out.read_text()
    assert out.name == f"CHANGES-{VERSION}.md"
    assert f"since {OLD} ({OLD}.json)" in notes
    added = notes.split("### Patches added (1)\n")[1].split("\n\n")[0]
    last = series.read_series(repo / "patches")[-1]
    assert added.startswith(f"- `{last.name}`") and f"Origin: {last.trailers['Origin'][0]}" in added
    assert notes.split("### Patches changed (1)\n")[1].startswith("- `0001-")
    assert notes.split("### Patches dropped (1)\n")[1].startswith("- `0007-Old-workaround.patch`")
    carried = notes.split("### Upstream changes carried\n")[1].split("\n\n")[0]
    assert carried.splitlines() == carried_urls(repo)
    assert f"- {FORWARDED} ({last.name[:4]})" in carried  # Forwarded:
    if UPSTREAM == "0.19.1":
        assert "- https://github.com/vllm-project/vllm/pull/38997 (0001, upstream in 0.20.0)" \
            in carried
    deps = notes.split("### Runtime dependency changes")[1]
    torch = changelog.record("x86_64", repo)["runtime_lock"]["torch"]
    assert f"- torch: 2.9.1 -> {torch}" in deps and "- oldpkg: 1.0 -> (dropped)" in deps
    assert "- tqdm: (new) -> " in deps and deps.count("\n- ") == 3
    record = json.loads((repo / "releases" / f"{VERSION}.json").read_text())
    first = series.read_series(repo / "patches")[0]
    assert record["series"]["patches"][0]["origin"] == first.trailers["Origin"][0]
    assert record["series"]["patches"][-1]["forwarded"] == FORWARDED


def test_changelog_section_gets_the_entry_once(repo):
    previous(repo)
    for _ in range(2):  # re-running replaces this version's entry, never duplicates it
        changelog.make_changelog("x86_64", repo=repo, wheelhouse=repo / "wheelhouse")
    text = (repo / "CHANGELOG.md").read_text()
    section = text.split(changelog.START)[1].split(changelog.END)[0]
    assert section.count(f"### {VERSION}\n") == 1
    assert "#### Patches added (1)" in section


def test_first_version_and_a_previous_manifest(repo, tmp_path):
    notes = changelog.make_changelog("x86_64", repo=repo, wheelhouse=repo / "wheelhouse")
    assert "first overlay version" in notes.read_text()
    assert f"### Patches added ({len(series.read_series(repo / 'patches'))})" in notes.read_text()
    bad = tmp_path / "manifest.json"
    bad.write_text("not json")
    with pytest.raises(OverlayError, match="manifest.json: not a release record"):
        changelog.make_changelog("x86_64", bad, repo=repo, wheelhouse=repo / "wheelhouse")


def test_after_a_rebase_it_says_what_happened(repo):
    """The pin moved 0.18.0 -> the current pin: the series was renumbered (a patch upstream
    has was dropped before them), one patch was dropped by the rebase, one by its header,
    one by hand; the lock moved torch. Not "N added / M dropped"."""
    new = changelog.record("x86_64", repo)
    old = json.loads(json.dumps(new))
    old["version"], old["upstream"]["version"] = "0.18.0+mmcg.1", "0.18.0"
    renumbered = []
    for patch in old["series"]["patches"]:
        number, rest = patch["name"].split("-", 1)
        patch["name"] = f"{int(number) + 3:04d}-{rest}"
        renumbered.append(patch["name"])
    old["series"]["patches"][0]["sha256"] = "0" * 64  # rebased: its hunks moved
    old["series"]["patches"][:0] = [
        {"name": "0001-Found-by-the-rebase.patch", "sha256": "1" * 64,
         "subject": "Found by the rebase", "origin": "backport"},
        {"name": "0002-Header-says-upstream.patch", "sha256": "2" * 64,
         "subject": "Header says upstream", "origin": "backport",
         "applied_upstream": "0.19.0"},
        {"name": "0003-Skipped-by-hand.patch", "sha256": "3" * 64,
         "subject": "Skipped by hand", "origin": "vendor"}]
    old["runtime_lock"]["torch"] = "2.9.0"
    (repo / "releases").mkdir()
    (repo / "releases" / "0.18.0+mmcg.1.json").write_text(json.dumps(old))
    up = new["upstream"]["version"]
    (repo / "reports").mkdir()
    (repo / "reports" / f"rebase-0.18.0-{up}.json").write_text(json.dumps({"patches": [
        {"patch": "0001-Found-by-the-rebase.patch", "subject": "Found by the rebase",
         "result": "dropped-upstream", "release": "0.18.1"},
        {"patch": "0003-Skipped-by-hand.patch", "subject": "Skipped by hand",
         "result": "conflict", "resolution": "dropped by hand (nothing committed for it)"},
        {"patch": renumbered[0], "subject": new["series"]["patches"][0]["subject"],
         "result": "applied-3way"}]}))
    notes = changelog.make_changelog("x86_64", repo=repo,
                                     wheelhouse=repo / "wheelhouse").read_text()
    count = len(new["series"]["patches"])
    assert f"- **Upstream pin**: 0.18.0 -> {up}: 2 patch(es) dropped because upstream has " \
           f"them, {count} carried over (1 rebased), 1 dropped otherwise, 0 added" in notes
    assert "### Patches added (0)\n- none" in notes
    dropped_upstream = notes.split("### Patches dropped upstream (2)\n")[1].split("\n\n")[0]
    assert "`0001-Found-by-the-rebase.patch`: Found by the rebase (Origin: backport): " \
           "upstream in 0.18.1 (the rebase found it there)" in dropped_upstream
    assert "`0002-Header-says-upstream.patch`: Header says upstream (Origin: backport): " \
           "upstream since 0.19.0 (its Applied-Upstream header)" in dropped_upstream
    assert notes.split("### Patches dropped (1)\n")[1].startswith(
        "- `0003-Skipped-by-hand.patch`: Skipped by hand (Origin: vendor): dropped by hand "
        "(nothing committed for it) in the rebase")
    changed = notes.split("### Patches changed (1)\n")[1].split("\n\n")[0]
    first = new["series"]["patches"][0]["name"]
    assert changed.startswith(f"- `{first}`") and \
        f"; was `{renumbered[0]}`, rebase: applied-3way" in changed
    assert "- torch: 2.9.0 -> " in notes.split("### Runtime dependency changes")[1]
