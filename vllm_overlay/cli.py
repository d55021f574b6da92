"""Command line: a thin layer over the pipeline modules. `python -m vllm_overlay --help`."""

import argparse
import sys

from vllm_overlay.commands import (apply, bisect, changelog, check_patches, cross_check, docker,
                                   export, fetch, lock, publish, pytest_tools, rebase, status,
                                   test, wheel)
from vllm_overlay.common.errors import OverlayError

# In the order of `--help`: one driver module per command, each with add(sub) and run(args).
COMMANDS = (fetch, apply, export, check_patches, lock, wheel, changelog, cross_check, publish,
            docker, test, pytest_tools, status, bisect, rebase)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllm_overlay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except OverlayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
