"""`check-patches`: fail unless patches/ equals a fresh apply + export round trip."""

import tempfile
from pathlib import Path

from vllm_overlay.wheelbuild import apply, export
from vllm_overlay.common import series
from vllm_overlay.common.errors import OverlayError


def add(sub) -> None:
    p = sub.add_parser("check-patches", help="fail unless patches/ is a fresh export")
    p.set_defaults(func=run)


def run(args) -> None:
    patches = series.read_series()
    problems = export.check_trailers(patches)
    with tempfile.TemporaryDirectory(prefix="check-patches-") as tmp:
        tree = apply.apply_pinned(Path(tmp) / "tree")
        fresh = Path(tmp) / "patches"
        export.export(tree, fresh)
        problems += export.compare_exports(series.PATCHES, fresh)
    if problems:
        raise OverlayError("patches/ is not a fresh export of the series (run `make apply` "
                           "then `make export-patches`):\n  " + "\n  ".join(problems))
    print(f"check-patches: {len(patches)} patch(es) apply exactly and re-export byte-identically")
