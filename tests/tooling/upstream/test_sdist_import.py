"""upstream/sdist_import.py: an sdist streamed into the store is the tree an unpack commits."""

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.gittree import GitTree
from vllm_overlay.upstream import sdist_import

DATE = "2026-04-18T00:00:00Z"


def _sdist(path: Path, extra: list[tarfile.TarInfo] = ()) -> Path:
    """Files of the kinds an sdist may hold: plain, executable, a symlink, names with a
    space, a quote and non-ASCII, a folder entry, a dotfile (extra: more members)."""
    def add(tar, name, data=b"", **attrs):
        info = tarfile.TarInfo(f"vllm-1.0/{name}")
        info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
        for key, value in attrs.items():
            setattr(info, key, value)
        tar.addfile(info, io.BytesIO(data) if info.isfile() else None)

    with tarfile.open(path, "w:gz") as tar:
        add(tar, "", type=tarfile.DIRTYPE, mode=0o755)
        add(tar, "vllm/a.py", b"A = 1\n")
        add(tar, "tools/run.sh", b"#!/bin/sh\n", mode=0o755)
        add(tar, "vllm/link.py", type=tarfile.SYMTYPE, linkname="a.py")
        add(tar, 'docs/a "quoted" name é.md', b"text\n")
        add(tar, ".gitignore", b"*.py\n")
        for info in extra:
            tar.addfile(info)
    return path


def _tree(where: Path, rev: str) -> str:
    return subprocess.run(["git", "-C", str(where), "rev-parse", f"{rev}^{{tree}}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_the_imported_commit_is_the_unpacked_and_committed_tree(tmp_path):
    sdist = _sdist(tmp_path / "vllm-1.0.tar.gz")
    store = tmp_path / "store"
    subprocess.run(["git", "init", "-q", "--bare", str(store)], check=True)
    sdist_import.import_sdist(sdist, store, "refs/sdist/x", DATE)
    unpacked = GitTree.unpack(sdist, tmp_path / "tree", DATE)
    assert _tree(store, "refs/sdist/x") == _tree(unpacked.path, "HEAD")
    assert GitTree(store).out("rev-parse", "refs/sdist/x") == unpacked.head()  # same commit
    listing = GitTree(store).out("ls-tree", "-r", "refs/sdist/x")
    assert "100755 blob" in listing and "120000 blob" in listing  # (the scenario holds)


def test_a_hard_link_is_a_copy_of_the_file_it_names(tmp_path):
    """(`GitTree.unpack` cannot extract one: its renamed members lose the link's target.)"""
    hard = tarfile.TarInfo("vllm-1.0/vllm/hard.py")
    hard.type, hard.linkname = tarfile.LNKTYPE, "vllm-1.0/vllm/a.py"
    sdist = _sdist(tmp_path / "vllm-1.0.tar.gz", [hard])
    store = tmp_path / "store"
    subprocess.run(["git", "init", "-q", "--bare", str(store)], check=True)
    sdist_import.import_sdist(sdist, store, "refs/sdist/x", DATE)
    assert GitTree(store).out("show", "refs/sdist/x:vllm/hard.py") == "A = 1"


def test_a_member_outside_the_sdist_is_refused(tmp_path):
    outside = tarfile.TarInfo("vllm-1.0/../../evil.py")
    sdist = _sdist(tmp_path / "vllm-1.0.tar.gz", [outside])
    store = tmp_path / "store"
    subprocess.run(["git", "init", "-q", "--bare", str(store)], check=True)
    with pytest.raises(OverlayError, match="outside the sdist"):
        sdist_import.import_sdist(sdist, store, "refs/sdist/x", DATE)
    assert GitTree(store).rev("refs/sdist/x") is None


def test_a_reused_work_tree_holds_exactly_the_next_commits_files(tmp_path, monkeypatch):
    """WorkTrees reuses a tree for the next release: what the last one left (an untracked
    file, a change, a folder only it had) is gone, as in a fresh checkout."""
    from tests.tooling.helpers.upstream_releases import make_sdist
    from vllm_overlay.upstream import releases

    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path / "cache"))
    store = releases.store()
    commits = []
    for version, files in (("1.0", {"vllm/a.py": "A = 1\n", "vllm/old/b.py": "B = 1\n"}),
                           ("2.0", {"vllm/a.py": "A = 2\n", "vllm/c.py": "C = 1\n"})):
        make_sdist(tmp_path / f"vllm-{version}.tar.gz", version, files)
        sdist_import.import_sdist(tmp_path / f"vllm-{version}.tar.gz", store,
                                  f"refs/sdist/{version}", DATE)
        commits.append(GitTree(store).rev(f"refs/sdist/{version}"))
    with releases.WorkTrees(store) as trees:
        with trees.checkout(commits[0]) as first:
            (first / "vllm" / "a.py").write_text("changed\n")
            (first / "vllm" / "new.py").write_text("untracked\n")
            (first / "build" / "x").mkdir(parents=True)
        with trees.checkout(commits[1]) as second:
            assert second == first  # (the scenario: the same tree, reused)
            files = sorted(str(p.relative_to(second)) for p in second.rglob("*")
                           if ".git" not in p.parts)
            assert files == ["vllm", "vllm/a.py", "vllm/c.py"]
            assert (second / "vllm" / "a.py").read_text() == "A = 2\n"
    assert not first.exists()
