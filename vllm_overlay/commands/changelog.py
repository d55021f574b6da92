"""`changelog`: release notes since the previous overlay version (wheelhouse/CHANGES-<V>.md)."""

from pathlib import Path

from vllm_overlay.wheelbuild import changelog


def add(sub) -> None:
    p = sub.add_parser("changelog", help="what changed since the previous overlay version: "
                       "wheelhouse/CHANGES-<VERSION>.md, releases/<VERSION>.json, CHANGELOG.md")
    p.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    p.add_argument("--previous", type=Path, help="the previous version's releases/*.json or "
                   "wheelhouse manifest (default: the newest older releases/*.json)")
    p.set_defaults(func=run)


def run(args) -> None:
    print(changelog.make_changelog(args.arch, args.previous))
