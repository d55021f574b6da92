"""Is a lock closed? Every requirement reachable from its roots is locked at a version that
satisfies it, with extras and environment markers evaluated for the target (CPython 3.11,
Linux, the arch). The versions are the lock files' own; each locked package's dependencies
come from locks/metadata-<arch>.json (lockmeta), which must describe that very version.
Uses `packaging`, so it runs in the supply or tools venv, never in the stdlib-only
bootstrap: `python -m vllm_overlay.wheelbuild.lockcheck` reads the request that
lockmeta.closure_request makes on stdin and prints one problem a line (exit 3, supplyenv.INVALID, if any).
"""

import json
import sys

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from vllm_overlay.wheelbuild.supplyenv import INVALID


def target_env(arch: str, python: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": f"{python}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "implementation_version": f"{python}.0", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": arch,
            "platform_release": "", "platform_version": "", "extra": ""}


def _applies(marker: Marker | None, env: dict[str, str], extras: frozenset[str]) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate({**env, "extra": extra}) for extra in ("", *extras))


def problems(locked: dict[str, str], packages: dict, roots: list[str], arch: str,
             python: str, lock: str, root: str = "the roots") -> list[str]:
    """What keeps the lock (`locked`: name -> version, called `lock` in messages) from being
    closed over `roots`, one line each naming the package and the requirement at fault."""
    env = target_env(arch, python)
    found: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    queue: list[tuple[str, str, frozenset[str]]] = [(root, line, frozenset())
                                                    for line in roots]
    while queue:
        who, line, who_extras = queue.pop()
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            found.append(f"{who}: cannot parse requirement {line!r}: {exc}")
            continue
        if not _applies(req.marker, env, who_extras):
            continue
        name = canonicalize_name(req.name)
        if name not in locked:
            found.append(f"{name}: required by {who} ({line}) but not in the {lock} lock")
            continue
        version = locked[name]
        if not req.specifier.contains(Version(version), prereleases=True):
            found.append(f"{name}=={version}: does not satisfy {who}'s {line!r}")
        if packages.get(name, {}).get("version") != version:
            found.append(f"{name}=={version}: no metadata recorded for this version in "
                         f"locks/metadata-{arch}.json: run `make lock ARCH={arch}`")
            continue
        key = (name, frozenset(canonicalize_name(e) for e in req.extras))
        if key in seen:
            continue
        seen.add(key)
        where = f"{name}{'[' + ','.join(sorted(key[1])) + ']' if key[1] else ''}=={version}"
        queue += [(where, dep, key[1]) for dep in packages[name]["requires_dist"]]
    return sorted(set(found))


def main() -> int:
    request = json.load(sys.stdin)
    found = problems(**request)
    print("".join(f"{line}\n" for line in found), end="")
    return INVALID if found else 0


if __name__ == "__main__":
    sys.exit(main())
