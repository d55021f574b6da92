"""The wheelhouse as a PEP 503 simple index: wheelhouse/simple/index.html + <project>/index.html.

Generated from SHA256SUMS (written by the build, so nothing is re-hashed here) with a
`#sha256=` fragment on every link, which pip checks on download. With it,
`pip install --index-url file://<repo>/wheelhouse/simple vllm==0.19.1` installs the
overlay wheel: PEP 440 lets `==0.19.1` match the local version `0.19.1+<label>`.
Each page is written to a temp file and renamed into place, and only when it changed.
"""

import contextlib
import html
import re
import urllib.parse
from pathlib import Path

from vllm_overlay.common import log
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.fs import atomic_write
from vllm_overlay.common.requirements import normalize_name

SIMPLE = "simple"
_DIST_RE = re.compile(r"^(?P<name>[A-Za-z0-9._]+?)-\d")  # wheel and sdist names: name-version...


def read_sums(wheelhouse: Path) -> dict[str, str]:
    """filename -> sha256 from wheelhouse/SHA256SUMS (empty if there is none)."""
    sums_file = wheelhouse / "SHA256SUMS"
    if not sums_file.exists():
        return {}
    sums = {}
    for number, line in enumerate(sums_file.read_text().splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest) or "/" in name or not name:
            raise OverlayError(f"{sums_file}:{number}: not a `<sha256>  <filename>` line: {line!r}")
        sums[name] = digest
    return sums


def render(sums: dict[str, str]) -> dict[str, str]:
    """Pages of the simple index, by path relative to wheelhouse/simple/."""
    projects: dict[str, list[str]] = {}
    for filename in sorted(sums):
        if filename.endswith((".whl", ".tar.gz")) and (match := _DIST_RE.match(filename)):
            projects.setdefault(normalize_name(match["name"]), []).append(filename)
    head = ('<!DOCTYPE html>\n<html>\n<head>\n<meta name="pypi:repository-version" '
            'content="1.0">\n<title>{}</title>\n</head>\n<body>\n')
    root = [head.format("Simple index")]
    root += [f'<a href="{p}/">{p}</a><br>\n' for p in sorted(projects)]
    pages = {"index.html": "".join(root) + "</body>\n</html>\n"}
    for project, files in sorted(projects.items()):
        lines = [head.format(f"Links for {project}")]
        lines += [f'<a href="../../{urllib.parse.quote(f)}#sha256={sums[f]}">{html.escape(f)}</a>'
                  f'<br>\n' for f in files]
        pages[f"{project}/index.html"] = "".join(lines) + "</body>\n</html>\n"
    return pages


def sync(wheelhouse: Path) -> bool:
    """Bring wheelhouse/simple/ in line with SHA256SUMS; True if a page was (re)written.

    Called by wheelhouse.store (under its lock) on every build, no-op builds included.
    Project pages are written before the root page, so a link never points to a page that
    is missing; files listed in SHA256SUMS but absent from the wheelhouse are left out.
    """
    sums = {name: digest for name, digest in read_sums(wheelhouse).items()
            if (wheelhouse / name).is_file()}
    pages = render(sums)
    simple, changed = wheelhouse / SIMPLE, False
    for leftover in simple.glob("**/.tmp-*"):  # from an interrupted sync
        leftover.unlink(missing_ok=True)
    for rel in sorted(pages, key=lambda r: r == "index.html"):  # root page last
        dest = simple / rel
        if dest.is_file() and dest.read_text() == pages[rel]:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, pages[rel], mode=0o644)
        changed = True
    for stale in simple.glob("*/index.html"):  # a project with no file left (root page first)
        if stale.relative_to(simple).as_posix() not in pages:
            stale.unlink()
            with contextlib.suppress(OSError):
                stale.parent.rmdir()
            changed = True
    if changed:
        log.stage("index").info(f"{simple} lists {len(sums)} file(s) "
                                f"(pip install --index-url {simple.resolve().as_uri()} ...)")
    return changed
