"""Drift of the code each patch touches, on synthetic releases 2.0.0 (the pin) .. 2.0.6.

  P1 changes touched() and K.method      2.0.1 reformats touched (comment, docstring, layout)
                                         and changes untouched(); 2.0.2 and 2.0.4 change
                                         touched(); K.method never changes
  P2 adds helper() and _private(),      2.0.3: helper() appears upstream (o.py gets a
     changes to_rename(), to_delete(),   _private() of its own), to_rename is renamed
     n.py's to_move() and                (same body), to_move moves to o.py and changes,
     to_move_rename()                    to_move_rename moves to o.py as moved_renamed;
                                         2.0.4 deletes to_delete; 2.0.5 changes renamed_fn
  P3 changes LIMIT (module code),        2.0.2 lands it; 2.0.5 adds an import: a follow-up
     Applied-Upstream: 2.0.2
  2.0.6 is 2.0.5 again: no change.
"""

import json

import pytest

from tests.tooling.helpers.upstream_releases import make_sdist, pinned_repo, write_patches
from vllm_overlay import cli
from vllm_overlay.commands import status as status_command
from vllm_overlay.common import pin, series
from vllm_overlay.upstream import drift, pydefs, status
from vllm_overlay.upstream import releases as upstream

VERSIONS = [f"2.0.{i}" for i in range(7)]

M = '''"""Module m."""
import os

LIMIT = 3


def touched(x):
    """Add one."""
    return x + 1


def untouched(x):
    return x * 2


def to_rename(a, b):
    return a - b + LIMIT


class K:
    field = 0

    def method(self):
        return self.field


def to_delete():
    return os.sep
'''
N = '''def to_move(values, offset):
    return [v + offset for v in values]


def to_move_rename(items, scale_factor):
    return sorted(item * scale_factor for item in items)
'''
REFORMATTED = '''def touched(x):
    """Add one: the docstring says more now."""
    # a comment upstream added
    return (x +
            1)
'''


def release_files(i: int) -> dict[str, str]:
    m, n, o = M, N, ""
    if i >= 1:
        m = m.replace('def touched(x):\n    """Add one."""\n    return x + 1\n', REFORMATTED)
        m = m.replace("return x * 2", "return x * 3")
    if i >= 2:
        m = m.replace(REFORMATTED, 'def touched(x):\n    """Add one."""\n    return x + 10\n')
        m = m.replace("LIMIT = 3", "LIMIT = 4")
    if i >= 3:
        m = m.replace("def to_rename(a, b):", "def renamed_fn(a, b):")
        m += "\n\ndef helper(y):\n    return y * 1\n"
        o, n = n.replace("to_move_rename", "moved_renamed").replace("in values", "in list(values)"), ""
        o += "\n\ndef _private(z):\n    return z\n"  # not ours, though of the same name
    if i >= 4:
        m = m.replace("return x + 10", "return x + 20")
        m = m.replace("\n\ndef to_delete():\n    return os.sep\n", "")
        m = m.replace("        return self.field\n",
                      "        return self.field\n\n    def other(self):\n        return 1\n")
    if i >= 5:
        m = m.replace("return a - b + LIMIT", "return a - b - LIMIT")
        m = m.replace("import os\n", "import os\nimport sys\n")
    files = {"vllm/__init__.py": "", "vllm/m.py": m, "setup.py": "raise SystemExit(1)\n"}
    if n:
        files["vllm/n.py"] = n
    if o:
        files["vllm/o.py"] = o
    return files


PATCHES = {
    "P1: touched and K.method": ({"vllm/m.py": lambda t: t.replace("return x + 1", "return x + 2")
                                  .replace("return self.field", "return self.field + 1")}, []),
    "P2: helper and friends": ({
        "vllm/m.py": lambda t: t.replace("return a - b + LIMIT", "return a - b + LIMIT + 1")
        .replace("return os.sep", "return os.sep * 2")
        + "\n\ndef helper(y):\n    return y\n\n\ndef _private(z):\n    return z\n",
        "vllm/n.py": lambda t: t.replace("v + offset", "v - offset")
        .replace("item * scale_factor", "item / scale_factor")}, []),
    "P3: raise LIMIT": ({"vllm/m.py": lambda t: t.replace("LIMIT = 3", "LIMIT = 4")}, []),
}


@pytest.fixture
def drift_upstream(tmp_path, monkeypatch):
    """(pin, patches dir, index URL) of the scenario above, cache in tmp_path."""
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path / "cache"))
    dist, index = tmp_path / "dist", tmp_path / "index" / "vllm"
    dist.mkdir()
    index.mkdir(parents=True)
    for i, version in enumerate(VERSIONS):
        make_sdist(dist / f"vllm-{version}.tar.gz", version, release_files(i))
    (index / "index.html").write_text("".join(f'<a href="{p.as_uri()}">{p.name}</a>\n'
                                              for p in sorted(dist.iterdir())))
    repo, sdist = pinned_repo(tmp_path, dist / f"vllm-{VERSIONS[0]}.tar.gz", VERSIONS[0])
    write_patches(repo / "patches", sdist, tmp_path, PATCHES)
    p3 = next((repo / "patches").glob("0003-*.patch"))
    p3.write_text(p3.read_text().replace("Risk: none\n", "Risk: none\nApplied-Upstream: 2.0.2\n"))
    return pin.load(repo), repo / "patches", (tmp_path / "index").as_uri()


def run_drift(drift_upstream):
    the_pin, patches_dir, index = drift_upstream
    urls = upstream.list_sdists("vllm", [index])
    patches = series.read_series(patches_dir)
    matrix = status.compute(the_pin, patches, VERSIONS, urls, patches_dir, 2)
    return matrix, drift.for_matrix(the_pin, patches, matrix)


def definitions(found: drift.Drift) -> dict[str, dict[tuple[str, str], list[tuple]]]:
    """patch prefix -> (file, name) -> [(release, kind, location)] newest first."""
    return {p["name"][:4]: {(d["file"], d["name"]): [(c["release"], c["kind"], c["location"])
                                                     for c in d["changes"]]
                            for d in p["definitions"]}
            for p in found.data["patches"]}


def test_normalisation_ignores_layout_comments_and_docstrings():
    pin_defs = pydefs.index(M)
    reformatted = pydefs.index(release_files(1)["vllm/m.py"])
    assert reformatted["touched"].dump == pin_defs["touched"].dump
    assert reformatted["untouched"].dump != pin_defs["untouched"].dump
    changed = pydefs.index(release_files(2)["vllm/m.py"])
    assert changed["touched"].dump != pin_defs["touched"].dump
    # a class's own code leaves its methods out; <module> leaves every definition out
    added_method = pydefs.index(release_files(4)["vllm/m.py"])
    assert added_method["K"].dump == pin_defs["K"].dump
    assert added_method["<module>"].dump == changed["<module>"].dump
    assert changed["<module>"].dump != pin_defs["<module>"].dump  # LIMIT = 4
    renamed = pydefs.index(release_files(3)["vllm/m.py"])["renamed_fn"]
    assert renamed.body == pin_defs["to_rename"].body and renamed.dump != \
        pin_defs["to_rename"].dump
    assert pydefs.innermost(pin_defs, M.splitlines().index("        return self.field") + 1) \
        == "K.method"
    assert pydefs.innermost(pin_defs, M.splitlines().index("    field = 0") + 1) == "K"
    assert pydefs.innermost(pin_defs, 4) == "<module>"


def test_targets_are_the_definitions_each_patch_touches(drift_upstream):
    _, found = run_drift(drift_upstream)
    targets = {p["name"][:4]: sorted((d["file"], d["name"], d["new"])
                                     for d in p["definitions"])
               for p in found.data["patches"]}
    assert targets == {
        "0001": [("vllm/m.py", "K.method", False), ("vllm/m.py", "touched", False)],
        "0002": [("vllm/m.py", "_private", True), ("vllm/m.py", "helper", True),
                 ("vllm/m.py", "to_delete", False),
                 ("vllm/m.py", "to_rename", False), ("vllm/n.py", "to_move", False),
                 ("vllm/n.py", "to_move_rename", False)],
        "0003": [("vllm/m.py", "<module>", False)]}


def test_changes_moves_renames_deletes_and_a_new_function(drift_upstream, tmp_path):
    matrix, found = run_drift(drift_upstream)
    got = definitions(found)
    # changed in 2.0.2 (not in 2.0.1, which only reformats it) and again in 2.0.4
    assert got["0001"][("vllm/m.py", "touched")] == [
        ("2.0.4", "changed", "vllm/m.py::touched"), ("2.0.2", "changed", "vllm/m.py::touched")]
    assert got["0001"][("vllm/m.py", "K.method")] == []
    assert all(name != "untouched" for p in got.values() for _, name in p)
    p2 = got["0002"]
    assert p2[("vllm/m.py", "helper")] == [("2.0.3", "appeared", "vllm/m.py::helper")]
    assert p2[("vllm/m.py", "_private")] == []  # o.py's _private is another one
    assert p2[("vllm/m.py", "to_rename")] == [
        ("2.0.5", "changed", "vllm/m.py::renamed_fn"),
        ("2.0.3", "renamed", "vllm/m.py::renamed_fn")]
    assert p2[("vllm/m.py", "to_delete")] == [("2.0.4", "deleted", "")]
    assert p2[("vllm/n.py", "to_move")] == [("2.0.3", "moved and changed", "vllm/o.py::to_move")]
    assert p2[("vllm/n.py", "to_move_rename")] == [
        ("2.0.3", "moved and renamed", "vllm/o.py::moved_renamed")]
    assert got["0003"][("vllm/m.py", "<module>")] == [
        ("2.0.5", "changed", "vllm/m.py::<module>"), ("2.0.2", "changed", "vllm/m.py::<module>")]

    # the report: diffs beside it, counts, newest first; P3 shows only its follow-up
    md, js = status.write_reports(matrix, tmp_path / "out", found)
    data = json.loads(js.read_text())["drift"]
    touched = next(d for d in data["patches"][0]["definitions"] if d["name"] == "touched")
    first = touched["changes"][1]
    assert first["changed_lines"] == 2 and first["step_from"] == "2.0.1"  # the reformatted
    text = (tmp_path / "out" / first["diff"]).read_text()
    assert "-    return x + 1\n" in text and "+    return x + 10\n" in text
    again = touched["changes"][0]
    assert again["step_from"] == "2.0.3" and again["step_changed_lines"] == 2
    assert "+    return x + 20" in (tmp_path / "out" / again["step_diff"]).read_text()
    helper = next(d for d in data["patches"][1]["definitions"] if d["name"] == "helper")
    helper_diff = (tmp_path / "out" / helper["changes"][0]["diff"]).read_text()
    assert "-    return y\n" in helper_diff and "+    return y * 1\n" in helper_diff  # ours vs
    module = data["patches"][2]["definitions"][0]["changes"]
    assert [(c["release"], c["follow_up"]) for c in module] == [("2.0.5", True),
                                                                ("2.0.2", False)]
    section = md.read_text().split("## Drift")[1]
    p3 = section.split("### 0003")[1]
    assert "2.0.5 changed" in p3 and "2.0.2" not in p3.split("|", 4)[-1]
    assert "2.0.3 moved and changed: now `vllm/o.py::to_move`" in section
    assert section.index("2.0.4 changed") < section.index("2.0.2 changed")
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_make_status_prints_the_drift_summary(drift_upstream, monkeypatch, capsys, tmp_path):
    the_pin, patches_dir, index = drift_upstream
    monkeypatch.setenv("PIP_INDEX_URL", index)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setattr(status_command.pin, "load", lambda: the_pin)
    out = tmp_path / "reports"
    (out / "drift" / "stale").mkdir(parents=True)  # an earlier run's diffs are replaced
    assert cli.main(["status", "--patches", str(patches_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = printed.split("drift: ", 1)[1]
    assert "0001: 1 changed" in summary and "vllm/m.py::touched: 2.0.4, 2.0.2" in summary
    assert "0003: 1 changed after 2.0.2" in summary
    assert "vllm/m.py::to_delete: 2.0.4 deleted" in summary
    assert f"report in {out / 'status.md'}" in summary
    assert not (out / "drift" / "stale").exists() and list((out / "drift").rglob("*.diff"))
    assert cli.main(["status", "--patches", str(patches_dir), "--out", str(out),
                     "--no-drift"]) == 0
    assert "drift:" not in capsys.readouterr().out
    assert "## Drift" not in (out / "status.md").read_text()


def test_a_range_that_starts_after_the_pin(drift_upstream):
    """2.0.3 alone: its changes are counted against the pin (nothing in between)."""
    the_pin, patches_dir, index = drift_upstream
    urls = upstream.list_sdists("vllm", [index])
    patches = series.read_series(patches_dir)
    matrix = status.compute(the_pin, patches, ["2.0.3"], urls, patches_dir, 1)
    got = definitions(drift.for_matrix(the_pin, patches, matrix))
    assert got["0001"][("vllm/m.py", "touched")] == [("2.0.3", "changed", "vllm/m.py::touched")]
    assert got["0002"][("vllm/m.py", "to_rename")] == [
        ("2.0.3", "renamed", "vllm/m.py::renamed_fn")]


def test_diff_lines_skip_blanks_and_comments_and_read_headers_per_file():
    diff = ("diff --git a/x.md b/x.md\n--- a/x.md\n+++ b/x.md\n@@ -3 +3,2 @@\n"
            "--- a removed line that looks like a header\n+++ an added one\n+\n"
            "diff --git a/gone.py b/gone.py\ndeleted file mode 100644\n--- a/gone.py\n"
            "+++ /dev/null\n@@ -1,3 +0,0 @@\n-x = 1\n-# a comment\n-\n"
            "diff --git a/new.py b/new.py\nnew file mode 100644\n--- /dev/null\n+++ b/new.py\n"
            "@@ -0,0 +1,2 @@\n+\n+y = 2\n")
    assert drift._code_lines(diff) == {"x.md": ({3}, {3}), "gone.py": ({1}, set()),
                                       "new.py": (set(), {2})}


def test_a_name_query_finds_the_names_def_and_class_lines_define():
    """What the per-name regex `^\\s*(async def|def|class)\\s+<name>\\b` found, from one pass:
    a name whose word goes on (e_f for e), a comment or call are no definition; a keyword
    alone on a line does not hide the definition on the next."""
    text = ("async def a():\n    pass\nclass B(Base):\n  def c(self): ...\n# def g\n"
            "call(def_h)\ndef e_f(): ...\n    def\nclass D: ...\n\n\n   async   def  k(): ...\n")
    names = drift._defined_names(text, {}, "blob")
    assert {"a", "B", "c", "e_f", "D", "k"} <= names
    assert not {"g", "def_h", "e", "Base"} & names
