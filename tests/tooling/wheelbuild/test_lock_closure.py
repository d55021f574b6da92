"""Each committed lock is closed (no network): every Requires-Dist of every locked package,
extras and markers evaluated for the arch and CPython 3.11, is locked at a version that
satisfies it. Installs use --no-deps (common/venvs.py), so a lock that is not closed would
install a broken environment: this is what catches it before pip check does."""

import re
import shutil

import pytest

from vllm_overlay.wheelbuild import constraints, lockcheck, lockmeta
from vllm_overlay.common import pin
from vllm_overlay.common.paths import REPO

ARCHES = ["x86_64", "aarch64"]
WHAT = f"vllm {pin.load().upstream_version}"  # the pin's, whichever a rebase made it
ROOT_PINS = {m[1]: m[2] for line in lockmeta.lock_roots("x86_64")["runtime"]
             if (m := re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)$", line))}


def closure(arch: str, lock: str, repo=REPO) -> list[str]:
    return lockcheck.problems(**lockmeta.closure_request(arch, lock, repo))


@pytest.mark.parametrize("lock", ["runtime", "test"])
@pytest.mark.parametrize("arch", ARCHES)
def test_committed_lock_is_closed(arch, lock):
    assert closure(arch, lock) == []


@pytest.mark.parametrize("arch", ARCHES)
def test_metadata_describes_every_locked_version(arch):
    """The record was made from these very locks (make lock writes both)."""
    request = lockmeta.closure_request(arch, "test")
    assert {name: meta["version"] for name, meta in request["packages"].items()} == request["locked"]


@pytest.fixture
def repo(tmp_path):
    """A copy of the repo's locks and test requirements, to break one thing in."""
    shutil.copytree(REPO / "locks", tmp_path / "locks")
    (tmp_path / "tests" / "upstream").mkdir(parents=True)
    shutil.copy(REPO / constraints.TEST_REQUIREMENTS, tmp_path / constraints.TEST_REQUIREMENTS)
    return tmp_path


def edit_lock(repo, arch: str, kind: str, name: str, version: str | None) -> None:
    """Remove `name`'s entry from a lock file (version None) or change its pinned version."""
    path = repo / "locks" / f"{kind}-{arch}.txt"
    text = path.read_text()
    if version is None:
        path.write_text(constraints.drop_entries(text, {name}))
    else:
        old = constraints.entries(text)[name]
        path.write_text(text.replace(f"\n{name}=={old} \\", f"\n{name}=={version} \\"))


def test_hand_removed_dependency_is_named(repo):
    edit_lock(repo, "x86_64", "runtime", "h11", None)  # uvicorn needs it
    found = closure("x86_64", "runtime", repo)
    assert any(line.startswith("h11: required by uvicorn==") and "not in the runtime lock" in line
               for line in found), found


def test_missing_dependency_of_an_extra_is_named(repo):
    """uvloop comes only through uvicorn[standard] (fastapi-cli asks for that extra)."""
    edit_lock(repo, "x86_64", "runtime", "uvloop", None)
    found = closure("x86_64", "runtime", repo)
    assert any(line.startswith("uvloop: required by uvicorn[standard]==") for line in found), found


def test_version_outside_a_specifier_is_named(repo):
    edit_lock(repo, "x86_64", "runtime", "h11", "0.7.0")  # uvicorn: h11>=0.8
    found = closure("x86_64", "runtime", repo)
    assert any(line.startswith("h11==0.7.0: does not satisfy uvicorn==") for line in found), found
    assert any("h11==0.7.0: no metadata recorded" in line for line in found), found


def test_test_package_missing_from_the_test_lock_is_named(repo):
    edit_lock(repo, "x86_64", "test", "hypothesis", None)
    assert any(line.startswith("hypothesis: required by the roots") for line in
               closure("x86_64", "test", repo))
    assert closure("x86_64", "runtime", repo) == []  # the runtime lock alone is still closed


def test_markers_are_evaluated_for_the_arch():
    """A dependency behind a marker for the other arch is not required (torch's nvidia-*
    on aarch64 are not in that lock: the check must not ask for them)."""
    packages = {"a": {"version": "1", "requires_dist": [
        "b; platform_machine == 'aarch64'", "c[x]; python_version >= '3.11'"]},
        "c": {"version": "2", "requires_dist": ["d; extra == 'x'", "e; extra == 'y'"]},
        "d": {"version": "3", "requires_dist": []}}
    locked = {"a": "1", "c": "2", "d": "3"}
    ask = dict(packages=packages, roots=["a"], python="3.11", lock="runtime")
    assert lockcheck.problems(locked, arch="x86_64", **ask) == []
    assert lockcheck.problems(locked, arch="aarch64", **ask) == [
        "b: required by a==1 (b; platform_machine == 'aarch64') but not in the runtime lock"]
    del locked["d"]
    assert lockcheck.problems(locked, arch="x86_64", **ask) == [
        "d: required by c[x]==2 (d; extra == 'x') but not in the runtime lock"]


def test_missing_record_names_make_lock(repo):
    (repo / "locks" / "metadata-x86_64.json").unlink()
    with pytest.raises(Exception, match=r"metadata-x86_64.json: no lock metadata.*make lock ARCH=x86_64"):
        lockmeta.closure_request("x86_64", "runtime", repo)


def test_record_is_checked_against_what_an_install_put_in_a_venv(tmp_path):
    """testenv.check_metadata (make test's environment stage) on this tools venv: the record
    must name each package's installed version and Requires-Dist; one changed line fails."""
    import json
    import sys
    from importlib.metadata import distribution
    from pathlib import Path

    from vllm_overlay.common.errors import OverlayError
    from vllm_overlay.testing import testenv

    pytest_dist = distribution("pytest")
    record = {"packages": {"pytest": {"version": pytest_dist.version,
                                      "requires_dist": pytest_dist.requires or []}}}
    (tmp_path / "locks").mkdir()
    path = tmp_path / "locks" / "metadata-x86_64.json"
    path.write_text(json.dumps(record))
    assert testenv.check_metadata(Path(sys.prefix), "x86_64", tmp_path) == 1
    record["packages"]["pytest"]["requires_dist"] = ["iniconfig>=99"]
    path.write_text(json.dumps(record))
    with pytest.raises(OverlayError, match=r"pytest: recorded .*iniconfig>=99"):
        testenv.check_metadata(Path(sys.prefix), "x86_64", tmp_path)
    record["packages"]["no-such-package"] = {"version": "1", "requires_dist": []}
    path.write_text(json.dumps(record))
    with pytest.raises(OverlayError, match="no-such-package: not installed"):
        testenv.check_metadata(Path(sys.prefix), "x86_64", tmp_path)


def real_requires_dist() -> list[str]:
    """The pin's runtime Requires-Dist as `make lock` recorded them (locks/runtime-x86_64.in)."""
    return lockmeta.lock_roots("x86_64")["runtime"]


def test_build_accepts_the_committed_lock_for_the_pin():
    lockmeta.check_wheel_requirements("x86_64", real_requires_dist(), WHAT, REPO)


@pytest.mark.parametrize("edit, named", [
    (("torch", "2.9.0"), rf"torch==2.9.0: does not satisfy {re.escape(WHAT)}'s "
                         rf"'torch=={re.escape(ROOT_PINS['torch'])}'"),
    (("tqdm", None), rf"tqdm: required by {re.escape(WHAT)} \(tqdm\) but not in the runtime lock"),
])
def test_build_refuses_a_lock_edited_against_the_wheel(repo, edit, named):
    """What make wheel runs before the SBOM (sbom.facts): the issue's case, torch==2.9.0
    and tqdm dropped, each refused with the package named and the fix."""
    from vllm_overlay.common.errors import OverlayError

    edit_lock(repo, "x86_64", "runtime", *edit)
    with pytest.raises(OverlayError, match=named + r".*make lock ARCH=x86_64"):
        lockmeta.check_wheel_requirements("x86_64", real_requires_dist(), WHAT, repo)
