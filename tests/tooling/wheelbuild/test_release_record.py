"""The release record of the current VERSION describes the series that ships under it.

A wheel's content is decided by patches/; its name by VERSION. When the shipped series
changes, VERSION must move on and `make changelog` must record the new series, or two
different wheels carry one version and CHANGELOG.md names a series that is not the
shipped one.

Right after `make rebase` the pin is on a release no record names yet and VERSION is new
(<release>+mmcg.1); `make test` comes before `make changelog` there (the rebase says so),
so until the changelog records it the record is pending, not missing: those tests skip,
saying so. On a pin some record already names (a VERSION bump without a rebase), or for a
VERSION older than a recorded one, a missing record still fails."""

import dataclasses
import json
import sys

import pytest

from vllm_overlay.common import pin, series
from vllm_overlay.common.paths import REPO
from vllm_overlay.wheelbuild import changelog


def recorded_version() -> str:
    """VERSION, when a release record of it is due; else skip (the pin just moved)."""
    the_pin = pin.load()
    version = the_pin.overlay_version
    if (REPO / "releases" / f"{version}.json").is_file():
        return version
    records = [changelog.load_record(p) for p in sorted((REPO / "releases").glob("*.json"))]
    if any(r["upstream"]["version"] == the_pin.upstream_version for r in records) or any(
            changelog._version_key(r["version"]) >= changelog._version_key(version)
            for r in records):
        return version  # the record is due: the assertion below names the missing file
    pytest.skip(f"VERSION {version} is the first on upstream {the_pin.upstream_version}, "
                f"newer than every release record: `make changelog` records it")


def test_release_record_of_version_describes_the_current_series():
    version = recorded_version()
    path = REPO / "releases" / f"{version}.json"
    assert path.is_file(), f"{path.name}: no release record for VERSION {version}: run make changelog"
    record = json.loads(path.read_text())
    patches = series.read_series()
    current = series.series_digest(patches, series.PATCHES)
    assert record["series"]["sha256"] == current, (
        f"{path.name} records series {record['series']['sha256'][:16]}, patches/ is "
        f"{current[:16]}: the shipped series changed, so bump VERSION and run make changelog")
    assert [p["sha256"] for p in record["series"]["patches"]] == [p.sha256() for p in patches]


def test_changelog_names_the_current_series():
    version = recorded_version()
    current = series.series_digest(series.read_series(), series.PATCHES)
    changes = REPO / "CHANGELOG.md"
    text = changes.read_text()
    entry = text.split(f"## {version}\n", 1)[1] if f"## {version}\n" in text else ""
    assert f"`{current[:16]}`" in entry.split("\n## ", 1)[0], (
        f"{changes.name}: the entry for {version} does not name series {current[:16]}: make changelog")


def test_a_record_is_pending_only_for_the_first_version_on_a_new_pin(monkeypatch, tmp_path):
    """The skip above, on made-up releases/: a bumped VERSION on a recorded pin, or one
    older than a record, still needs its record; a rebase's new VERSION waits for it."""
    the_pin = pin.load()
    up = the_pin.upstream_version
    releases = tmp_path / "releases"
    releases.mkdir()
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    record = changelog.record("x86_64")

    def records(*versions: str) -> None:
        for path in releases.glob("*.json"):
            path.unlink()
        for version in versions:
            upstream = version.partition("+")[0]
            (releases / f"{version}.json").write_text(json.dumps(
                {**record, "version": version, "upstream": {"version": upstream}}))

    def pending(version: str) -> bool:
        monkeypatch.setattr(pin, "load", lambda *a: dataclasses.replace(
            the_pin, overlay_version=version))
        try:
            recorded_version()
        except pytest.skip.Exception:
            return True
        return False

    records(f"{up}+mmcg.1")
    assert not pending(f"{up}+mmcg.1") and not pending(f"{up}+mmcg.2")  # bump, same pin
    records("0.0.1+mmcg.1")
    assert pending(f"{up}+mmcg.1")  # a rebase from 0.0.1: nothing records this pin yet
    records("0.0.1+mmcg.1", "9999.0.0+mmcg.1")
    assert not pending(f"{up}+mmcg.1")  # older than a recorded version
