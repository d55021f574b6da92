"""Bisect: the first upstream release where a check fails, by binary search over the
ordered releases between GOOD and BAD, the way `git bisect run` does.

Checks: "apply" (the whole series applies, 3-way allowed; a conflict is bad) or "test" (a
user command run in the release's tree with the series applied, exit codes as for
`git bisect run`: 0 good, 125 skip, 1-127 bad, anything else aborts). For the test check a
patch that conflicts because it is already upstream (its probes hold) is dropped; a release
where another patch does not apply cannot be tested: the test check skips it.
"""

import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vllm_overlay.upstream import status
from vllm_overlay.upstream import releases as upstream
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.gittree import STOPS
from vllm_overlay.common.gittree import Outcome as Fared  # (Outcome here: a search's)
from vllm_overlay.common.http import BatchProgress
from vllm_overlay.common.pin import Pin
from vllm_overlay.common.series import Patch

GOOD, BAD, SKIP = "good", "bad", "skip"


@dataclass
class Outcome:
    first_bad: str | None        # None: BAD passed (nothing failed) or skips hide it
    candidates: list[str]        # more than one when skipped releases hide the answer
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (version, verdict, why)
    end_checks: list[tuple[str, str, str]] = field(default_factory=list)


Check = Callable[[str], tuple[str, str]]


def search(versions: list[str], check: Check, say: Callable[[str], None]) -> Outcome:
    """versions[0] is good, versions[-1] is bad; binary search for the first bad one."""
    lo, hi, skipped, steps = 0, len(versions) - 1, set(), []
    while True:
        inside = [i for i in range(lo + 1, hi) if i not in skipped]
        if not inside:
            break
        mid = (lo + hi) // 2
        pick = min(inside, key=lambda i: (abs(i - mid), i))  # nearest to the middle
        left = hi - lo - 1
        say(f"Bisecting: {left} release(s) left between {versions[lo]} (good) and "
            f"{versions[hi]} (bad) (roughly {math.ceil(math.log2(left + 1))} step(s))")
        verdict, why = check(versions[pick])
        steps.append((versions[pick], verdict, why))
        say(f"[step {len(steps)}] {versions[pick]}: {verdict}" + (f" ({why})" if why else ""))
        if verdict == GOOD:
            lo = pick
        elif verdict == BAD:
            hi = pick
        else:
            skipped.add(pick)
    hidden = [versions[i] for i in range(lo + 1, hi)]
    if hidden:
        return Outcome(None, hidden + [versions[hi]], steps)
    return Outcome(versions[hi], [versions[hi]], steps)


def run(pin: Pin, patches: list[Patch], versions: list[str], check: Check,
        say: Callable[[str], None], verify_ends: bool = True) -> Outcome:
    """Check the ends (unless told not to), then search between them."""
    if len(versions) < 2:
        raise OverlayError("bisect needs GOOD older than BAD")
    ends = []
    if verify_ends:
        for version, expected in ((versions[0], GOOD), (versions[-1], BAD)):
            verdict, why = check(version)
            ends.append((version, verdict, why))
            say(f"[end check] {version}: {verdict}" + (f" ({why})" if why else ""))
            if verdict == SKIP:
                raise OverlayError(f"bisect: {version} cannot be checked ({why})")
            if expected == GOOD and verdict == BAD:
                raise OverlayError(f"bisect: GOOD={version} fails the check: {why}")
            if expected == BAD and verdict == GOOD:
                say(f"BAD={version} passes the check: no failing release in "
                    f"{versions[0]}..{version}")
                return Outcome(None, [], [], ends)
    outcome = search(versions, check, say)
    outcome.end_checks = ends
    return outcome


# --- the two checks -------------------------------------------------------------------------


class Checks:
    """Check callables sharing one pin tree (the series applied there once, for 3-way)."""

    def __init__(self, pin: Pin, patches: list[Patch], urls: dict[str, str] | None,
                 log: Callable[[str], None]):
        self.pin, self.patches, self.urls, self.log = pin, patches, urls, log
        self.parsed = status.parse_all(patches)
        self.progress = BatchProgress()
        self._cells_of(pin.upstream_version)  # writes the bases of 3-way merges to the store

    def _cells_of(self, version: str, inside=None):
        with upstream.release_tree(self.pin, version, self.urls, self.progress) as (_, tree):
            return status.evaluate_release(tree, self.patches, self.parsed, inside)

    @staticmethod
    def _conflicts(cells: dict[str, status.Cell], upstreamed_too: bool = True) -> str:
        return "; ".join(f"{name} " + ("conflicts in" if cell.apply is Fared.CONFLICT else
                                      "changes files upstream deleted:")
                         + f" {', '.join(cell.files) or '?'}"
                         + (" (already upstream: its probes hold)"
                            if cell.status is Fared.UPSTREAM else "")
                         for name, cell in cells.items() if cell.apply in STOPS
                         and (upstreamed_too or cell.status is not Fared.UPSTREAM))

    def apply(self, version: str) -> tuple[str, str]:
        cells, _ = self._cells_of(version)
        conflicts = self._conflicts(cells)
        how = ", ".join(f"{name[:4]} {cell.apply}" for name, cell in cells.items())
        self.log(f"  {version}: {how or 'empty series'}")
        return (BAD, conflicts) if conflicts else (GOOD, "series applies")

    def test(self, command: str) -> Check:
        def check(version: str) -> tuple[str, str]:
            def run_command(tree: Path, cells: dict[str, status.Cell]):
                # a patch that conflicts because upstream has it is simply dropped here
                if self._conflicts(cells, upstreamed_too=False):
                    return None
                env = {**os.environ, "VLLM_OVERLAY_TREE": str(tree),
                       "VLLM_OVERLAY_RELEASE": version}
                started = time.monotonic()
                proc = subprocess.run(command, shell=True, cwd=tree, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                return proc.returncode, proc.stdout, time.monotonic() - started

            cells, result = self._cells_of(version, run_command)
            if result is None:
                return SKIP, f"series does not apply: {self._conflicts(cells, False)}"
            code, output, seconds = result
            self.log(f"  $ {command}   (in {version}'s tree, exit {code}, {seconds:.1f} s)")
            self.log("\n".join("  | " + line for line in output.splitlines()[-200:]))
            if code == 0:
                return GOOD, f"exit 0 in {seconds:.1f} s"
            if code == 125:
                return SKIP, "exit 125 (skip)"
            if 0 < code < 128:
                return BAD, f"exit {code} in {seconds:.1f} s"
            raise OverlayError(f"bisect: `{command}` exited {code} on {version}: aborting "
                               "(as git bisect run does for exit codes < 0 or >= 128)")
        return check
