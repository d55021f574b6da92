"""MODE=overlay, the default of `make wheel`: the upstream wheel with the series' files
swapped in (record -> fetch -> apply -> plan + write -> verify -> wheelhouse)."""

import time
from pathlib import Path

from vllm_overlay.wheelbuild import apply, beside, constraints, fetch, key, overlay, record, sbom
from vllm_overlay.wheelbuild import verify
from vllm_overlay.wheelbuild import wheelhouse as wheelhouse_store
from vllm_overlay.wheelbuild.record import BuildRecord
from vllm_overlay.common import log, series
from vllm_overlay.common.paths import REPO

WHEELHOUSE = wheelhouse_store.WHEELHOUSE
_log, _apply_log = log.stage("wheel"), log.stage("apply")


def build_overlay_wheel(arch: str = "x86_64", wheelhouse: Path = WHEELHOUSE,
                        patches_dir: Path = series.PATCHES, repo: Path = REPO) -> Path:
    """MODE=overlay: the upstream wheel with the series' files swapped in."""
    with wheelhouse_store.locked_inputs(wheelhouse, patches_dir, repo) as (the_pin, patches,
                                                                          snapshot):
        build = record.create(the_pin, arch, "overlay", patches, snapshot,
                              constraints.lock_dir(repo), repo)
        return wheelhouse_store.store(wheelhouse, build,
                                      key.build_key(build, extra=beside.inputs(build)),
                                      lambda tmp_dir: write_overlay(build, tmp_dir))


def write_overlay(build: BuildRecord, tmp_dir: Path) -> tuple[Path, str, dict]:
    """The overlay wheel of `build` in tmp_dir, verified: (wheel, sha256, manifest fields)."""
    started = time.monotonic()
    the_pin, tree = build.pin, build.tree
    sdist = fetch.fetch(the_pin.sdist, the_pin.project, rehash=True)  # 31 MB: cheap
    upstream = fetch.fetch(build.upstream, the_pin.project)
    _apply_log.info(f"{len(build.patches)} patch(es) onto {the_pin.sdist.filename} in {tree}")
    apply.apply_series(sdist, build.patches, tree, the_pin.released, reuse=True)
    applied = time.monotonic()
    changes = overlay.classify_changes(tree, build.patches)
    document = sbom.render(sbom.facts(build, tree, changes[0], constraints.requires_dist(
        upstream, the_pin.upstream_version, build.upstream.filename)))
    plan = overlay.plan_wheel(upstream, build, tree, changes, {sbom.MEMBER: document})
    tmp = tmp_dir / plan.filename
    # hashes the upstream wheel as it copies it: the copied bytes are the pinned ones
    sha256 = overlay.write_wheel(plan, tmp, build)
    verify.verify_wheel(plan, tmp, build)
    sbom.check_wheel(tmp, build.version, document)
    _log.info(f"apply {applied - started:.1f} s, wheel {time.monotonic() - applied:.1f} s")
    return tmp, sha256, {"changed_members": plan.changed, "not_shipped": plan.outside}
