"""`publish`: upload the wheelhouse's wheels to an internal index with twine."""

from pathlib import Path

from vllm_overlay.wheelbuild.wheelhouse import WHEELHOUSE
from vllm_overlay.publishing import publish


def add(sub) -> None:
    p = sub.add_parser("publish", help="upload the wheelhouse's wheels with twine")
    p.add_argument("--index-url", required=True, help="upload URL of the package index")
    p.add_argument("--simple-url", help="its PEP 503 simple URL (default: derived)")
    p.add_argument("--wheelhouse", type=Path, default=WHEELHOUSE)
    p.set_defaults(func=run)


def run(args) -> None:
    publish.publish(args.index_url, args.wheelhouse, args.simple_url)
