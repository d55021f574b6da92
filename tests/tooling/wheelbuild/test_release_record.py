"""The release record of the current VERSION describes the series that ships under it.

A wheel's content is decided by patches/; its name by VERSION. When the shipped series
changes, VERSION must move on and `make changelog` must record the new series, or two
different wheels carry one version and CHANGELOG.md names a series that is not the
shipped one."""

import json

from vllm_overlay.common import pin, series
from vllm_overlay.common.paths import REPO


def test_release_record_of_version_describes_the_current_series():
    version = pin.load().overlay_version
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
    version = pin.load().overlay_version
    current = series.series_digest(series.read_series(), series.PATCHES)
    changes = REPO / "CHANGELOG.md"
    text = changes.read_text()
    entry = text.split(f"## {version}\n", 1)[1] if f"## {version}\n" in text else ""
    assert f"`{current[:16]}`" in entry.split("\n## ", 1)[0], (
        f"{changes.name}: the entry for {version} does not name series {current[:16]}: make changelog")
