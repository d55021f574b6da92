"""`lock`: resolve the hash-locked runtime and test packages into locks/ (uv; network)."""

from vllm_overlay.wheelbuild import constraints, lockmeta, supplyenv
from vllm_overlay.publishing import publish


def add(sub) -> None:
    p = sub.add_parser("lock", help="resolve locks/runtime-<arch>.txt and locks/test-<arch>.txt "
                       "with hashes (uv pip compile; network), and locks/metadata-<arch>.json; "
                       "and the tool venvs' locks (requirements-supply.lock, "
                       "requirements-publish.lock)")
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    p.set_defaults(func=run)


def run(args) -> None:
    lockmeta.lock_pin(args.arch)  # the same code `make rebase` runs for a new pin
    for source, out in ((supplyenv.REQUIREMENTS, supplyenv.LOCK),
                        (publish.TWINE_REQUIREMENTS, publish.TWINE_LOCK)):
        constraints.compile_tool_lock(source, out)  # the tool venvs: hash-locked too
