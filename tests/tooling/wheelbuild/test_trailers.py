"""check-patches' DEP-3 trailer rules (export.check_trailers) on patches written here."""

from vllm_overlay.wheelbuild import export
from vllm_overlay.common.series import parse_patch

DIFF = "---\ndiff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n"


def patch(tmp_path, trailers: str):
    path = tmp_path / "0001-x.patch"
    path.write_text("From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] x\n\nbody\n\n"
                    f"{trailers}\nRisk: none\nProbe: defines vllm/a.py::A\n{DIFF}")
    return parse_patch(path)


def test_backport_with_issue_passes(tmp_path):
    p = patch(tmp_path, "Origin: backport, https://github.com/o/r/pull/1\n"
                        "Bug: https://github.com/o/r/issues/2")
    assert export.check_trailers([p]) == []


def test_vendor_needs_forwarded(tmp_path):
    assert export.check_trailers([patch(tmp_path, "Origin: vendor")]) == [
        "0001-x.patch: a vendor patch needs a Forwarded: trailer"]
    ok = patch(tmp_path, "Origin: vendor\nForwarded: not-needed (why)")
    assert ok.trailers["Forwarded"] == ["not-needed (why)"]
    assert export.check_trailers([ok]) == []


def test_bug_must_be_an_issue(tmp_path):
    p = patch(tmp_path, "Origin: vendor\nForwarded: no\nBug: https://github.com/o/r/pull/3")
    (problem,) = export.check_trailers([p])
    assert "is a pull request, not an issue" in problem


def test_missing_required(tmp_path):
    path = tmp_path / "0002-y.patch"
    path.write_text(f"From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] y\n\nbody\n\n{DIFF}")
    (problem,) = export.check_trailers([parse_patch(path)])
    assert problem == "0002-y.patch: missing trailer(s) Origin, Risk, Probe"
