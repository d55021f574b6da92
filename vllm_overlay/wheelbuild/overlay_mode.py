"""MODE=overlay, the default of `make wheel`: the upstream wheel with the series' files
swapped in (fetch -> apply -> plan + write -> verify -> wheelhouse)."""

import time
from pathlib import Path

from vllm_overlay.wheelbuild import apply, beside, constraints, fetch, key, overlay, sbom, verify
from vllm_overlay.wheelbuild import wheelhouse as wheelhouse_store
from vllm_overlay.wheelbuild.zipraw import epoch_to_date_time
from vllm_overlay.common import log, pin, series
from vllm_overlay.common.paths import BUILD_TREES, REPO
from vllm_overlay.common import wheelfile

WHEELHOUSE = wheelhouse_store.WHEELHOUSE
_log, _apply_log = log.stage("wheel"), log.stage("apply")


def build_overlay_wheel(arch: str = "x86_64", wheelhouse: Path = WHEELHOUSE,
                        patches_dir: Path = series.PATCHES, repo: Path = REPO) -> Path:
    """MODE=overlay: the upstream wheel with the series' files swapped in."""
    started = time.monotonic()
    with wheelhouse_store.locked_inputs(wheelhouse, patches_dir, repo) as (the_pin, patches,
                                                                          snapshot):
        series_sha = series.series_digest(patches, snapshot)
        epoch = key.source_date_epoch(patches, the_pin.released)
        build_key = key.build_key(the_pin, arch, series_sha, epoch,
                                  extra=beside.inputs(arch, repo))

        def build_overlay(tmp_dir: Path) -> tuple[Path, str, dict]:
            upstream_art = the_pin.wheel(arch)
            sdist = fetch.fetch(the_pin.sdist, the_pin.project, rehash=True)  # 31 MB: cheap
            upstream = fetch.fetch(upstream_art, the_pin.project)
            tree = repo / BUILD_TREES / arch / f"vllm-{the_pin.upstream_version}"
            _apply_log.info(f"{len(patches)} patch(es) onto {the_pin.sdist.filename} in {tree}")
            apply.apply_series(sdist, patches, tree, the_pin.released, reuse=True)
            applied = time.monotonic()
            shipped, _ = overlay.classify_changes(tree, patches)
            document = sbom.render(sbom.facts(
                the_pin, arch, the_pin.overlay_version, patches, series_sha, epoch, tree,
                shipped, constraints.requires_dist(upstream, the_pin.upstream_version,
                                                   upstream_art.filename), repo))
            plan = overlay.plan_wheel(upstream, upstream_art.filename, the_pin.upstream_version,
                                      the_pin.overlay_version, tree, patches, upstream_art.sha256,
                                      {sbom.MEMBER: document})
            tmp = tmp_dir / plan.filename
            # hashes the upstream wheel as it copies it: the copied bytes are the pinned ones
            sha256 = overlay.write_wheel(plan, tmp, epoch_to_date_time(epoch),
                                         upstream_art.sha256, upstream_art.filename)
            verify.verify_wheel(plan, tmp, upstream_art.sha256,
                                wheelfile.dist_info(the_pin.upstream_version))
            sbom.check_wheel(tmp, the_pin.overlay_version, document)
            _log.info(f"apply {applied - started:.1f} s, wheel "
                      f"{time.monotonic() - applied:.1f} s")
            return tmp, sha256, {"changed_members": plan.changed, "not_shipped": plan.outside}

        return wheelhouse_store.store(wheelhouse, "overlay", arch, build_key, the_pin, epoch,
                                      series_sha, patches, build_overlay, repo)
