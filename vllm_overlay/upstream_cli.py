"""CLI commands `status` and `bisect` (upstream releases); cli.py adds them with add_commands."""

import json
import os
import sys
from pathlib import Path

from . import bisection, drift, pin, series, status, upstream
from .errors import OverlayError
from .paths import REPO

REPORTS = REPO / "reports"


def _releases(the_pin: pin.Pin, spec: str | None, pre: bool) -> tuple[list[str], dict | None]:
    """The selected versions and the index's URLs (None when only the cache is used)."""
    explicit = bool(spec) and ".." not in spec
    try:
        urls = upstream.list_sdists(the_pin.project)
    except OverlayError:
        if not explicit:
            raise
        names = [n.strip() for n in spec.split(",") if n.strip()]
        print("status: no index reachable; using cached sdists only", file=sys.stderr)
        return upstream.select(names, the_pin.upstream_version, spec, pre), None
    return upstream.select(urls, the_pin.upstream_version, spec, pre), urls


def cmd_status(args) -> None:
    the_pin = pin.load()
    args.patches = args.patches.resolve()  # git runs inside the release trees
    patches = series.read_series(args.patches)
    versions, urls = _releases(the_pin, args.releases, args.pre)
    if args.list_releases:
        print(json.dumps(versions))
        return
    print(f"status: {len(patches)} patch(es) from {args.patches} x {len(versions)} release(s) "
          f"({versions[0]} .. {versions[-1]}), {args.jobs} in parallel", file=sys.stderr)
    matrix = status.compute(the_pin, patches, versions, urls, args.patches,
                            status.check_jobs(args.jobs))
    found = None if args.no_drift else drift.for_matrix(the_pin, patches, matrix)
    md, js = status.write_reports(matrix, args.out, found)
    print(status.to_markdown(matrix))
    print(status.timing_table(matrix), file=sys.stderr)
    print(f"status: wrote {md} and {js}", file=sys.stderr)
    if found is not None:
        print(drift.summary(found.data, md))


def cmd_bisect(args) -> None:
    the_pin = pin.load()
    args.patches = args.patches.resolve()
    patches = series.read_series(args.patches)
    if args.check == "test" and not args.cmd:
        raise OverlayError("bisect --check test needs --cmd (make: CMD='...'), the command "
                           "that exits 0 on a good release")
    good = args.good or the_pin.upstream_version
    versions, urls = _releases(the_pin, f"{good}..{args.bad}", args.pre)
    if versions[0] != good:
        raise OverlayError(f"bisect: GOOD={good} is not a release on the index")
    log_path = args.log or REPORTS / f"bisect-{versions[0]}-{versions[-1]}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    part = log_path.with_name(f".{log_path.name}.tmp{os.getpid()}")
    with open(part, "w") as log_file:
        def log(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()

        def say(line: str) -> None:
            print(line, flush=True)
            log(line)

        try:
            say(f"bisect: check={args.check}{' cmd=' + repr(args.cmd) if args.cmd else ''}, "
                f"{len(patches)} patch(es) from {args.patches}, releases {versions[0]} (good) "
                f".. {versions[-1]} (bad): {len(versions)} in order")
            checks = bisection.Checks(the_pin, patches, urls, log)
            check = checks.apply if args.check == "apply" else checks.test(args.cmd)
            outcome = bisection.run(the_pin, patches, versions, check, say,
                                    verify_ends=not args.trust_ends)
            if outcome.first_bad:
                say(f"{outcome.first_bad} is the first bad release "
                    f"({len(outcome.steps)} bisection step(s)"
                    f"{', plus 2 end checks' if outcome.end_checks else ''})")
            elif outcome.candidates:
                say("skipped releases hide the answer: the first bad release is one of "
                    + ", ".join(outcome.candidates))
        except OverlayError as exc:
            log(f"error: {exc}")
            raise
        finally:
            os.replace(part, log_path)
            print(f"bisect: log in {log_path}", file=sys.stderr)


def add_commands(sub) -> None:
    p = sub.add_parser("status", help="patch x release matrix against upstream releases")
    p.add_argument("--releases", help="'A..B' range (ends optional, 'latest' = newest) or "
                                      "'A,B,C' list; default: the pin to the newest")
    p.add_argument("--pre", action="store_true", help="include pre-releases")
    p.add_argument("--patches", type=Path, default=series.PATCHES, help="patches dir")
    p.add_argument("--jobs", type=int, default=4, help="releases handled in parallel")
    p.add_argument("--out", type=Path, default=REPORTS, help="where status.md/.json go")
    p.add_argument("--no-drift", action="store_true",
                   help="leave out the drift of the code each patch touches")
    p.add_argument("--list-releases", action="store_true",
                   help="only print the selected releases as a JSON list (CI matrix)")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("bisect", help="first upstream release where a check fails")
    p.add_argument("--good", help="a release where the check passes (default: the pin)")
    p.add_argument("--bad", default="latest", help="a release where it fails (default: latest)")
    p.add_argument("--check", choices=["apply", "test"], default="apply")
    p.add_argument("--cmd", help="for --check test: shell command run in the patched tree "
                                 "(exit 0 good, 125 skip, 1-127 bad)")
    p.add_argument("--patches", type=Path, default=series.PATCHES, help="patches dir")
    p.add_argument("--pre", action="store_true", help="include pre-releases")
    p.add_argument("--log", type=Path, help="log file (default reports/bisect-GOOD-BAD.log)")
    p.add_argument("--trust-ends", action="store_true",
                   help="do not check GOOD and BAD first (as git bisect run)")
    p.set_defaults(func=cmd_bisect)

