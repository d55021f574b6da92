"""Command line: a thin layer over the pipeline modules. `python -m vllm_overlay --help`."""

import argparse
import importlib
import sys

from vllm_overlay.common.errors import OverlayError

# Command -> its driver module in commands/ (add(sub) and run(args)), in the order of --help.
COMMANDS = {"fetch": "fetch", "apply": "apply", "export": "export",
            "check-patches": "check_patches", "lock": "lock", "wheel": "wheel",
            "changelog": "changelog", "cross-check": "cross_check", "publish": "publish",
            "docker": "docker", "test": "test", "pytest": "pytest_tools", "status": "status",
            "bisect": "bisect", "rebase": "rebase"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Only the named command's driver is imported: `make wheel` need not load the status,
    # rebase or publish code (a tenth of a second of a rebuild). Anything else: all of them.
    names = argv[:1] if argv[:1] and argv[0] in COMMANDS else list(COMMANDS)
    parser = argparse.ArgumentParser(prog="vllm_overlay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in names:
        importlib.import_module(f"vllm_overlay.commands.{COMMANDS[name]}").add(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except OverlayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
