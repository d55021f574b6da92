"""`bisect`: the first upstream release where a check (apply, or a test command) fails."""

import os
from pathlib import Path

from vllm_overlay.common import log, pin, series
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.paths import REPORTS
from vllm_overlay.upstream import bisect, releases

_log = log.stage("bisect")


def add(sub) -> None:
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
    p.set_defaults(func=run)



def run(args) -> None:
    the_pin = pin.load()
    args.patches = args.patches.resolve()
    patches = series.read_series(args.patches)
    if args.check == "test" and not args.cmd:
        raise OverlayError("bisect --check test needs --cmd (make: CMD='...'), the command "
                           "that exits 0 on a good release")
    good = args.good or the_pin.upstream_version
    versions, urls = releases.selected(the_pin, f"{good}..{args.bad}", args.pre)
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
            checks = bisect.Checks(the_pin, patches, urls, log)
            check = checks.apply if args.check == "apply" else checks.test(args.cmd)
            outcome = bisect.run(the_pin, patches, versions, check, say,
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
            _log.info(f"log in {log_path}")
