"""`status`: the patch x release matrix against upstream releases (reports/status.*)."""

import json
import sys
from pathlib import Path

from vllm_overlay.common import log, pin, series
from vllm_overlay.common.paths import REPORTS
from vllm_overlay.upstream import drift, drift_report, releases, status

_log = log.stage("status")


def run(args) -> int:
    the_pin = pin.load()
    args.patches = args.patches.resolve()  # git runs inside the release trees
    patches = series.read_series(args.patches)
    versions, urls = releases.selected(the_pin, args.releases, args.pre)
    if args.list_releases:
        print(json.dumps(versions))
        return
    _log.info(f"{len(patches)} patch(es) from {args.patches} x {len(versions)} release(s) "
              f"({versions[0]} .. {versions[-1]}), {args.jobs} in parallel")
    matrix = status.compute(the_pin, patches, versions, urls, args.patches,
                            status.check_jobs(args.jobs), not args.no_install_check)
    found = None if args.no_drift else drift.for_matrix(the_pin, patches, matrix)
    md, js = status.write_reports(matrix, args.out, found)
    print(status.to_markdown(matrix))
    print(status.timing_table(matrix), file=sys.stderr)
    _log.info(f"wrote {md} and {js}")
    if found is not None:
        print(drift_report.summary(found, md))
    if matrix.changes:
        print(f"status: {len(matrix.changes)} change(s) since the last report:\n  "
              + "\n  ".join(matrix.changes), file=sys.stderr)
        if args.fail_on_change:
            return 1
    return 0


def add(sub) -> None:
    p = sub.add_parser("status", help="patch x release matrix against upstream releases")
    p.add_argument("--releases", help="'A..B' range (ends optional, 'latest' = newest) or "
                                      "'A,B,C' list; default: the pin to the newest")
    p.add_argument("--pre", action="store_true", help="include pre-releases")
    p.add_argument("--patches", type=Path, default=series.PATCHES, help="patches dir")
    p.add_argument("--jobs", type=int, default=4, help="releases handled in parallel")
    p.add_argument("--out", type=Path, default=REPORTS, help="where status.md/.json go")
    p.add_argument("--no-drift", action="store_true",
                   help="leave out the drift of the code each patch touches")
    p.add_argument("--no-install-check", action="store_true",
                   help="leave out whether each release's runtime resolves from the "
                        "configured indexes (uv pip compile, as make lock; cached)")
    p.add_argument("--fail-on-change", action="store_true",
                   help="exit 1 when something changed since the last report in --out (a "
                        "patch newly upstream, newly conflicting, newly drifting; a new "
                        "release; installability)")
    p.add_argument("--list-releases", action="store_true",
                   help="only print the selected releases as a JSON list (CI matrix)")
    p.set_defaults(func=run)
