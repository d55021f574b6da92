"""Provenance: an in-toto v1 statement with a SLSA provenance v1 predicate per wheel.

Written beside the wheel as `<wheel name>.intoto.json` (unsigned: signing needs an identity,
which the GitHub release job has: actions/attest-build-provenance). Subjects: the wheel
and its SBOM copy, by sha256. Resolved dependencies: the upstream sdist and wheel, the
series file, every patch, the runtime lock, and this repository's commit. No wall-clock
time: the same inputs and commit give the same bytes.
"""

import json
import os
import sys
from pathlib import Path

from vllm_overlay.common.git import git_query
from vllm_overlay.wheelbuild.record import BuildRecord

BUILD_TYPE = "urn:vllm-overlay:build-type:make-wheel:v1"  # docs/supply-chain.md
LOCAL_BUILDER = "urn:vllm-overlay:builder:local"


def beside_name(wheel_name: str) -> str:
    return wheel_name.removesuffix(".whl") + ".intoto.json"


def _git(repo: Path, *args: str) -> str | None:
    return git_query(repo, *args)


def source_dependency(repo: Path) -> dict | None:
    """This repository at its commit (None outside a git checkout)."""
    top, commit = _git(repo, "rev-parse", "--show-toplevel"), _git(repo, "rev-parse", "HEAD")
    if not commit or not top or Path(top).resolve() != repo.resolve():
        return None
    remote = _git(repo, "remote", "get-url", "origin") or ""
    entry = {"name": "vllm-overlay", "digest": {"gitCommit": commit}}
    if remote.startswith(("https://", "ssh://", "git@")):
        entry["uri"] = f"git+{remote}@{commit}"
    if _git(repo, "status", "--porcelain", "--untracked-files=no"):
        entry["annotations"] = {"dirty": True}  # built with uncommitted changes
    return entry


def statement(subjects: dict[str, str], record: BuildRecord, version: str) -> str:
    """subjects: file name -> sha256; `version`: the wheel's."""
    the_pin = record.pin
    deps = [{"name": a.filename,
             "uri": f"pkg:pypi/{the_pin.project}@{the_pin.upstream_version}"
                    f"?file_name={a.filename}",
             "digest": {"sha256": a.sha256}} for a in (the_pin.sdist, record.upstream)]
    deps.append({"name": "patches/series", "digest": {"sha256": record.series_sha}})
    deps += [{"name": f"patches/{p.name}", "digest": {"sha256": record.patch_sha256[p.name]}}
             for p in record.patches]
    deps.append({"name": record.lock.label, "digest": {"sha256": record.lock.sha256}})
    if source := source_dependency(record.repo):
        deps.append(source)
    doc = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": n, "digest": {"sha256": d}} for n, d in subjects.items()],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"mode": record.mode, "arch": record.arch,
                                       "version": version, "source_date_epoch": record.epoch},
                "internalParameters": {"python": sys.version.split()[0]},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": os.environ.get("VLLM_OVERLAY_BUILDER_ID", LOCAL_BUILDER)},
                "metadata": {},
            },
        },
    }
    return json.dumps(doc, indent=2) + "\n"
