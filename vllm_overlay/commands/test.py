"""`test`: everything `make test` runs after check-patches (testing/harness.py)."""

from vllm_overlay.testing import harness
from vllm_overlay.wheelbuild.overlay_mode import build_overlay_wheel
from vllm_overlay.testing.results import Options


def add(sub) -> None:
    p = sub.add_parser("test", help="everything `make test` runs after check-patches: tooling "
                       "tests, wheel, runtime venv, behaviour tests, upstream subset pristine "
                       "vs overlay; report in reports/")
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    p.set_defaults(func=run)


def run(args) -> int:
    return harness.main(Options(build_overlay_wheel, arch=args.arch))
