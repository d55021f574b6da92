"""Bad input is one line naming the file, key or host at fault, a non-zero exit and nothing
half-written (issue 27, case 8): `make changelog` on a file that is no release record, a
release list that selects nothing, a password inside INDEX_URL, `make docker` on a
checkout with uncommitted changes."""

import json
import shutil
import subprocess

import pytest

from vllm_overlay.wheelbuild import changelog
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPO


def make(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(REPO), *args], capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The tool's own message: exactly one `error:` line and no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


# --- make changelog -------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path):
    """A copy of what the changelog reads and writes: VERSION, the lock, patches/, locks/,
    CHANGELOG.md, releases/."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("VERSION", "upstream.lock.json", "CHANGELOG.md"):
        shutil.copy(REPO / name, root / name)
    for name in ("patches", "locks", "releases"):
        shutil.copytree(REPO / name, root / name)
    return root


def snapshot(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


NOT_RECORDS = {
    "the pin": (REPO / "upstream.lock.json").read_text(),
    "a list": "[1, 2]",
    "empty object": "{}",
    "empty file": "",
    "no patches": json.dumps({"version": "0.19.0+mmcg.1", "upstream": {"version": "0.19.0"},
                              "series": {"sha256": "0" * 64}}),
    "patch without name": json.dumps({"version": "0.19.0+mmcg.1",
                                      "upstream": {"version": "0.19.0"},
                                      "series": {"patches": [{"sha256": "0" * 64}]}}),
    "lock not a mapping": json.dumps({"version": "0.19.0+mmcg.1",
                                      "upstream": {"version": "0.19.0"},
                                      "series": {"patches": []}, "runtime_lock": ["torch"]}),
}


@pytest.mark.parametrize("text", NOT_RECORDS.values(), ids=NOT_RECORDS)
def test_a_previous_that_is_no_record_is_one_error_and_nothing_is_written(repo, tmp_path,
                                                                         text):
    bad = tmp_path / "previous.json"
    bad.write_text(text)
    before = snapshot(repo)
    with pytest.raises(OverlayError, match=r"previous\.json: not a release record or manifest"):
        changelog.make_changelog("x86_64", bad, repo=repo, wheelhouse=repo / "wheelhouse")
    assert snapshot(repo) == before  # no CHANGELOG.md entry, no releases/ record, no notes


@pytest.mark.parametrize("text", ["", "[]", "{}", '{"version": 1}'],
                         ids=["empty", "list", "empty object", "version not a string"])
def test_a_junk_file_in_releases_is_named(repo, text):
    (repo / "releases" / "junk.json").write_text(text)
    before = snapshot(repo)
    with pytest.raises(OverlayError, match=r"releases/junk\.json: not a release record"):
        changelog.make_changelog("x86_64", repo=repo, wheelhouse=repo / "wheelhouse")
    assert snapshot(repo) == before


def test_versions_with_a_numeric_local_part_compare(repo):
    """PEP 440: <pin>+1 (numeric local part) sorts after <pin>+mmcg.N, so it is not the
    previous version; 0.19.0+7 (older than any pin) is. (0.19.1+1 and 0.19.0+7 on 0.19.1.)"""
    record = changelog.record("x86_64", repo)
    upstream = record["upstream"]["version"]
    for path in (repo / "releases").glob("*.json"):  # only the two below are candidates
        path.unlink()
    for version in (f"{upstream}+1", "0.19.0+7"):
        (repo / "releases" / f"{version}.json").write_text(json.dumps({**record,
                                                                       "version": version}))
    notes = changelog.make_changelog("x86_64", repo=repo, wheelhouse=repo / "wheelhouse")
    assert "since 0.19.0+7 (0.19.0+7.json)" in notes.read_text()
    assert changelog._version_key("0.19.1+1") > changelog._version_key("0.19.1+mmcg.1")
    assert changelog._version_key("0.20.0") > changelog._version_key("0.19.1+mmcg.9")


def test_a_changelog_without_the_section_writes_nothing(repo):
    changes = repo / "CHANGELOG.md"
    changes.write_text(changes.read_text().replace(changelog.START, ""))
    before = snapshot(repo)
    with pytest.raises(OverlayError, match="CHANGELOG.md: no changelog section"):
        changelog.make_changelog("x86_64", repo=repo, wheelhouse=repo / "wheelhouse")
    assert snapshot(repo) == before  # neither the notes nor the releases/ record


@pytest.mark.parametrize("previous", ["upstream.lock.json", "LIST"])
def test_make_changelog_previous_is_one_line(previous, tmp_path):
    """Through make, in the real checkout (the error comes before anything is written)."""
    if previous == "LIST":
        previous = tmp_path / "list.json"
        previous.write_text("[1]")  # (an empty one would have been "first version")
    proc = make("changelog", f"PREVIOUS={previous}")
    line = one_error_line(proc)
    assert f"{previous}: not a release record or manifest" in line, line


# --- make status ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [",", ",,", " , "])
def test_a_release_list_that_names_nothing_is_refused(spec):
    from vllm_overlay.upstream import releases

    with pytest.raises(OverlayError, match="names no release"):
        releases.select(["0.19.1", "0.20.0"], "0.19.1", spec)


def test_make_status_with_an_empty_list_is_one_line_before_any_download():
    line = one_error_line(make("status", "RELEASES=,", timeout=60))
    assert "RELEASES=',' names no release" in line, line


# --- make docker: the revision label ------------------------------------------------------------


@pytest.fixture
def checkout(tmp_path):
    """A committed copy of what `make docker` MODE=source reads: VERSION, the pin, patches/."""
    from vllm_overlay.common.git import git

    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("VERSION", "upstream.lock.json"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "patches", root / "patches")
    git(root, "init", "-q")
    git(root, "remote", "add", "origin", "https://deploy:s3cr3t-token@git.example/overlay.git")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "release")
    return root


def test_the_image_revision_says_dirty_after_an_uncommitted_series_change(checkout):
    from vllm_overlay.common.git import git_value
    from vllm_overlay.publishing import docker

    head = git_value(checkout, "rev-parse", "HEAD")
    assert docker.build_args("source", repo=checkout)["VCS_REF"] == head
    series_file = checkout / "patches" / "series"
    series_file.write_text(series_file.read_text() + "# an uncommitted change\n")
    args = docker.build_args("source", repo=checkout)
    assert args["VCS_REF"] == f"{head}-dirty"  # never HEAD as if the image were HEAD's
    (checkout / "patches" / "0099-new.patch").write_text("")  # an untracked file, too
    git_value(checkout, "checkout", "--", "patches/series")
    assert docker.build_args("source", repo=checkout)["VCS_REF"] == f"{head}-dirty"


def test_the_source_label_never_carries_the_remote_s_credentials(checkout):
    from vllm_overlay.publishing import docker

    source = docker.build_args("source", repo=checkout)["SOURCE_URL"]
    assert "s3cr3t" not in source and source == "https://git.example/overlay.git"
