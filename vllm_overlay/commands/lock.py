"""`lock`: resolve the hash-locked runtime and test packages into locks/ (uv; network)."""

from vllm_overlay.build import lockmeta


def add(sub) -> None:
    p = sub.add_parser("lock", help="resolve locks/runtime-<arch>.txt and locks/test-<arch>.txt "
                       "with hashes (uv pip compile; network), and locks/metadata-<arch>.json")
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    p.set_defaults(func=run)


def run(args) -> None:
    lockmeta.lock_pin(args.arch)  # the same code `make rebase` runs for a new pin
