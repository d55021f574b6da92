"""Synthetic upstream releases for the status / bisect / rebase / drift tests, built by the
tests (the fixtures are in tests/tooling/upstream/conftest.py).

Eleven releases 1.0.0 (the pin) .. 1.0.10 (plus a pre-release 1.1.0rc1) on a file:// simple
index, and a series of five patches written against the pin:

  A  changes vllm/a.py         releases >= 1.0.2 add lines on top      -> offset
  B  changes vllm/b.py B_10    releases >= 1.0.7 change B_10 too       -> conflict (N = 7)
  C  adds Config.new_field     1.0.3 adds it (elsewhere) as `int`, >= 1.0.4 as `int | None`:
     (probes: defines + annotation)   both of its probes hold from M = 4
  D  changes vllm/d.py D_10    releases >= 1.0.5 change D_13, inside the hunk's context:
     (no probe)                                                          plain apply fails, 3-way works
  E  adds vllm/e.py            its probe (defines A_0) already holds on the pin: a bad probe
Every release also has vllm/m.py's Runner (1.0.8 adds Runner.ours), which 1.0.9 deletes
(moved to vllm/gpu/runner.py): no patch of these five touches it (test_deleted_* do).
The runtime (requirements/cuda.txt) is numpy and torch; 1.0.10 adds flashinfer-python==0.7.3,
which the faked resolver (network_lock) lacks when a test says so.
"""

import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from vllm_overlay.common.git import git
from vllm_overlay.wheelbuild import apply, export
from vllm_overlay.common import pin
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.requirements import normalize_name, requirement_lines

VERSIONS = [f"1.0.{i}" for i in range(11)]
PRE = "1.1.0rc1"
CONFLICT_FROM = 7   # B conflicts from 1.0.7
UPSTREAM_FROM = 4   # C's probes hold from 1.0.4
OFFSET_FROM = 2
THREE_WAY_FROM = 5
RUNNER_UPSTREAM_FROM = 8  # Runner.ours: upstream in 1.0.8, then from 1.0.9 vllm/m.py is
RUNNER_MOVED_FROM = 9      # deleted, Runner moved to vllm/gpu/runner.py (as GPUModelRunner in 0.34)
NEW_RUNTIME_FROM = 10      # 1.0.10 pins a package version no index has (flashinfer in 0.34)
NEW_RUNTIME_PIN = "flashinfer-python==0.7.3"


def release_files(i: int) -> dict[str, str]:
    a = "".join(f"A_{k} = {k}\n" for k in range(40))
    if i >= OFFSET_FROM:
        a = "# upstream header 1\n# upstream header 2\n# upstream header 3\n" + a
    b = "".join(f"B_{k} = {k}\n" for k in range(20))
    if i >= CONFLICT_FROM:
        b = b.replace("B_10 = 10\n", "B_10 = 'upstream'\n")
    c = "class Config:\n    old: int = 0\n" + "".join(f"    x{k}: int = {k}\n" for k in range(8))
    if i == UPSTREAM_FROM - 1:
        c += "    new_field: int = 0\n"
    elif i >= UPSTREAM_FROM:
        c += "    new_field: int | None = None  # upstream's own\n"
    d = "".join(f"D_{k} = {k}\n" for k in range(30))
    if i >= THREE_WAY_FROM:
        d = d.replace("D_13 = 13\n", "D_13 = 'upstream'\n")
    files = {"vllm/__init__.py": "", "vllm/a.py": a, "vllm/b.py": b, "vllm/c.py": c,
             "vllm/d.py": d, "setup.py": "raise SystemExit('synthetic')\n",
             "requirements/common.txt": "numpy\n",
             "requirements/cuda.txt": "-r common.txt\ntorch==2.10.0\n"
             + (f"{NEW_RUNTIME_PIN}\n" if i >= NEW_RUNTIME_FROM else "")}
    runner = "class Runner:\n" + "".join(f"    def m{k}(self):\n        return {k}\n"
                                         for k in range(6))
    if i >= RUNNER_UPSTREAM_FROM:
        runner += "    def ours(self):\n        return 'upstream'\n"
    if i >= RUNNER_MOVED_FROM:  # rewritten as it moved: no rename a 3-way merge could follow
        runner = '"""The runner, rewritten."""\n\nBASE = 10\n\n\nclass Runner:\n' + "".join(
            f"    def m{k}(self):\n        value = BASE + {k}\n        return value\n"
            for k in range(6)) + "    def ours(self):\n        return 'upstream'\n"
    files["vllm/gpu/runner.py" if i >= RUNNER_MOVED_FROM else "vllm/m.py"] = runner
    return files


def make_sdist(path: Path, version: str, files: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"vllm-{version}/{name}")
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


PATCHES = {  # subject -> (edits, probes)
    "A: change A_20": ({"vllm/a.py": lambda t: t.replace("A_20 = 20", "A_20 = 'ours'")}, []),
    "B: change B_10": ({"vllm/b.py": lambda t: t.replace("B_10 = 10", "B_10 = 'ours'")}, []),
    "C: add Config.new_field": (
        {"vllm/c.py": lambda t: t.replace("    old: int = 0\n", "    old: int = 0\n"
                                          "    new_field: int | None = None\n")},
        ["defines vllm/c.py::Config.new_field",
         "annotation vllm/c.py::Config.new_field int|None"]),
    "D: change D_10": ({"vllm/d.py": lambda t: t.replace("D_10 = 10", "D_10 = 'ours'")}, None),
    "E: add e.py": ({"vllm/e.py": lambda t: "E = 1\n"}, ["defines vllm/a.py::A_0"]),
}


class NetworkLock:
    """What `make lock` gets from the network, faked: `uv pip compile` pins every requirement
    of its sources at 1.0 (one made-up hash each), and PyPI's metadata of a locked package
    has no requirements. Everything else of the lock step runs as `make lock` runs it."""

    def __init__(self):
        self.calls: list[str] = []
        self.fail: str | None = None
        self.missing: set[str] = set()  # requirements no index has (uv's own message)

    def compile_lock(self, sources, out, arch, cwd, constraints=()):
        self.calls.append(f"compile {out}")
        if self.fail:
            raise OverlayError(f"uv pip compile ({out}) failed (exit 2):\n{self.fail}")
        lines = [line for source in sources
                 for line in requirement_lines((cwd / source).read_text())]
        for line in lines:
            if line in self.missing:
                raise OverlayError(
                    f"uv pip compile ({out}) failed (exit 1):\nerror: No solution found when "
                    f"resolving dependencies\n  cause: Because there is no version of {line} "
                    f"and you require {line}, we can conclude that your requirements are "
                    f"unsatisfiable.")
        names = sorted({normalize_name(re.split(r"[\s;<>=!~\[]", line, 1)[0])
                        for line in lines})
        text = "".join(f"{n}==1.0 \\\n    --hash=sha256:{hashlib.sha256(n.encode()).hexdigest()}\n"
                       for n in names)
        (cwd / out).write_text(f"#    make lock ARCH={arch}\n{text}")
        return (cwd / out).read_text()

    def package_metadata(self, name, version, hashes, arch):
        return {"version": version, "from": f"{name}-{version}.whl", "requires_dist": [],
                "requires_python": ""}


@dataclass
class Upstream:
    root: Path
    index: str         # file:// URL of the simple index
    dist: Path
    pin: pin.Pin
    patches: Path      # patches dir with series

    def sdist(self, version: str) -> Path:
        return self.dist / f"vllm-{version}.tar.gz"


def write_patches(dest: Path, pin_sdist: Path, root: Path, patches=PATCHES) -> None:
    tree = root / "dev"
    apply.unpack_sdist(pin_sdist, tree)
    apply.init_base(tree, "2024-01-02T03:04:05Z")
    for subject, (edits, probes, *more) in patches.items():  # more: [other trailer lines]
        for name, edit in edits.items():
            path = tree / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(edit(path.read_text() if path.exists() else ""))
        git(tree, "add", "-A")
        trailers = "".join(f"Probe: {p}\n" for p in probes or []) + \
            "".join(f"{line}\n" for line in (more[0] if more else []))
        git(tree, "commit", "-q", "-m", f"{subject}\n\nOrigin: vendor\nRisk: none\n"
                  f"{trailers}", env={"GIT_AUTHOR_DATE": "2024-02-03T04:05:06Z"})
    export.export(tree, dest)


def pinned_repo(tmp_path: Path, sdist: Path, version: str) -> tuple[Path, Path]:
    """tmp_path/repo pinned to `sdist` of `version` (VERSION, lock), the sdist cached as
    `make fetch` leaves it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    data = sdist.read_bytes()
    (repo / "VERSION").write_text(f"{version}+test.1\n")
    (repo / "upstream.lock.json").write_text(json.dumps({
        "project": "vllm", "version": version, "released": "2024-01-02T03:04:05Z",
        "artifacts": {"sdist": {"filename": sdist.name, "size": len(data),
                                "sha256": hashlib.sha256(data).hexdigest()}}}))
    blobs = tmp_path / "cache" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    return repo, sdist
