"""MODE=overlay, the default of `make wheel`: the upstream wheel with the series' files
swapped in (record -> fetch -> apply -> plan + write -> verify -> wheelhouse)."""

import time
from concurrent.futures import ThreadPoolExecutor
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
    requires_dist = constraints.requires_dist(upstream, the_pin.upstream_version,
                                              build.upstream.filename)
    # the SBOM's facts (their lock check) and render, two subprocesses of ~0.2 and ~0.5 s,
    # run while the upstream members are copied: the writer needs the document only when it
    # reaches the dist-info, after every vllm/ member; an error there stops the write
    with ThreadPoolExecutor(1, thread_name_prefix="sbom-render") as pool:
        document = pool.submit(lambda: sbom.render(sbom.facts(build, tree, changes[0],
                                                              requires_dist)))
        plan = overlay.plan_wheel(upstream, build, tree, changes,
                                  {sbom.MEMBER: document.result})
        tmp = tmp_dir / plan.filename
        planned = time.monotonic()
        # one pass: hashes the upstream wheel as it copies it (the copied bytes are the
        # pinned ones) and the new wheel as it writes it
        written = overlay.write_wheel(plan, tmp, build)
    wrote = time.monotonic()
    # the SBOM is a member of the plan: verify reads it back against the rendered document
    # and checks its RECORD row (sbom.check_wheel is for the setup.py modes' embed)
    verify.verify_wheel(plan, tmp, build, written)
    _log.info(phases(applied - started, planned - applied, wrote - planned,
                     time.monotonic() - wrote, written.phases))
    return tmp, written.sha256, {"changed_members": plan.changed, "not_shipped": plan.outside}


def phases(apply_s: float, plan_s: float, pass_s: float, verify_s: float,
           pass_phases: dict[str, float]) -> str:
    """The build's timing line (benchmarks/bench_wheel.py prints it)."""
    p = pass_phases
    return (f"apply {apply_s:.1f} s, wheel {plan_s + pass_s + verify_s:.1f} s (plan "
            f"{plan_s:.2f} s; pass {pass_s:.2f} s: read+hash {p['read+hash']:.2f} s "
            f"beside write+hash {p['write+hash']:.2f} s, SBOM waited for "
            f"{p['waited']:.2f} s, fsync {p['fsync']:.2f} s; verify {verify_s:.2f} s)")
