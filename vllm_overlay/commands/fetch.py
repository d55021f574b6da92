"""`fetch`: download + verify the pinned upstream artifacts."""

from vllm_overlay.wheelbuild import fetch
from vllm_overlay.common import pin


def add(sub) -> None:
    p = sub.add_parser("fetch", help="download + verify the pinned upstream artifacts")
    p.add_argument("--arch", nargs="*", default=["x86_64"], help="wheel architectures")
    p.set_defaults(func=run)


def run(args) -> None:
    the_pin = pin.load()
    artifacts = [the_pin.sdist, *(the_pin.wheel(arch) for arch in args.arch)]
    for art in artifacts:
        print(fetch.fetch(art, the_pin.project))
