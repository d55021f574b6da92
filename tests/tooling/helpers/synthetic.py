"""The synthetic upstream release of the tooling tests: a small sdist and wheel of a made-up
vLLM 9.9.9, a repo pinning them, patches written in a dev tree (Synth), and the overlay build
on it. The `synth` fixture (tests/tooling/conftest.py) makes one per test."""

import base64
import gzip
import hashlib
import io
import os
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from vllm_overlay.common.git import git
from vllm_overlay.wheelbuild import apply, export, overlay_mode

UPSTREAM = "9.9.9"
VERSION = "9.9.9+test.1"
WHEEL_NAME = f"vllm-{UPSTREAM}-cp38-abi3-manylinux_2_31_x86_64.whl"

SOURCES = {
    "vllm/__init__.py": "from vllm.version import __version__\n",
    "vllm/version.py": "from vllm._version import __version__\n",
    "vllm/_version.py": f"__version__ = version = '{UPSTREAM}'\n",
    "vllm/a.py": "".join(f"A_{i} = {i}\n" for i in range(40)),
    "vllm/b.py": "B = 'b'\n",
    "vllm/data/chat.jinja": "{{ messages }}\n",
    "csrc/kernel.cu": "__global__ void k() {}\n",
    "tests/test_a.py": "def test_a():\n    assert True\n",
    "setup.py": "raise SystemExit('not for the tooling tests')\n",
}
# Build-time generated members that exist only in the wheel, as in real vLLM wheels.
WHEEL_ONLY = {"vllm/_C.abi3.so": os.urandom(256 * 1024),
              "vllm/third_party/generated.py": b"GENERATED = True\n"}



def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
        b"=").decode()


def make_sdist(path: Path) -> None:
    """Byte-identical every time (gzip's header mtime fixed, not the clock's): the builds of
    a session then share one pin, and so one SBOM input (sbom_rendered_once_per_input)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=1_700_000_000) \
            as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, text in SOURCES.items():
            data = text.encode()
            info = tarfile.TarInfo(f"vllm-{UPSTREAM}/{name}")
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


def make_wheel(path: Path) -> None:
    members = {n: t.encode() for n, t in SOURCES.items() if n.startswith("vllm/")}
    members.update(WHEEL_ONLY)
    info_dir = f"vllm-{UPSTREAM}.dist-info/"
    members[info_dir + "METADATA"] = (f"Metadata-Version: 2.4\nName: vllm\nVersion: {UPSTREAM}"
                                      "\nSummary: synthetic\n").encode()
    members[info_dir + "WHEEL"] = b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\n" \
                                  b"Tag: cp38-abi3-linux_x86_64\n\n"
    members[info_dir + "entry_points.txt"] = b"[console_scripts]\nvllm = vllm.cli:main\n"
    record = "".join(f"{n},{_record_hash(d)},{len(d)}\n" for n, d in members.items())
    members[info_dir + "RECORD"] = (record + f"{info_dir}RECORD,,\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 2, 3, 4, 6)), data,
                        compress_type=zipfile.ZIP_DEFLATED)


def artifact(path: Path) -> dict:
    data = path.read_bytes()
    return {"filename": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@dataclass
class Synth:
    root: Path
    repo: Path
    dist: Path  # where the upstream artifacts were made
    cache: Path

    @property
    def wheelhouse(self) -> Path:
        return self.repo / "wheelhouse"

    @property
    def patches(self) -> Path:
        return self.repo / "patches"

    def seed_cache(self) -> None:
        """Put the artifacts into the sha256 cache, as a previous fetch would have."""
        blobs = self.cache / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        for path in self.dist.iterdir():
            (blobs / hashlib.sha256(path.read_bytes()).hexdigest()).write_bytes(path.read_bytes())

    def dev_tree(self) -> Path:
        """A fresh upstream work tree (base commit tagged) to write patches in."""
        tree = self.root / "dev" / f"vllm-{UPSTREAM}"
        if tree.exists():
            import shutil

            shutil.rmtree(tree)
        apply.unpack_sdist(self.dist / f"vllm-{UPSTREAM}.tar.gz", tree)
        apply.init_base(tree, "2024-01-02T03:04:05Z")
        return tree

    def commit(self, tree: Path, message: str, edits: dict[str, str | None]) -> None:
        for name, text in edits.items():
            path = tree / name
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        git(tree, "add", "-A")
        trailers = "Origin: vendor\nRisk: none, a test patch\nProbe: defines vllm/a.py::A_0\n"
        git(tree, "commit", "-q", "-m", f"{message}\n\nWhy: a test.\n\n{trailers}",
                  env={"GIT_AUTHOR_DATE": "2024-02-03T04:05:06Z"})

    def write_series(self, patches: dict[str, dict[str, str | None]]) -> None:
        """Export one patch per entry (message -> edits), in order, into repo/patches."""
        tree = self.dev_tree()
        for message, edits in patches.items():
            self.commit(tree, message, edits)
        export.export(tree, self.patches)


def visible_files(house: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in house.iterdir()
            if not p.name.startswith(".")} if house.is_dir() else {}


def link_supply_venv(cache: Path, venv: Path) -> None:
    (cache / "venvs").mkdir(parents=True, exist_ok=True)
    (cache / "venvs" / venv.name).symlink_to(venv)


SYNTH_LOCK = "# synthetic runtime lock: the synthetic wheel has no Requires-Dist\n"


def build(s: Synth) -> Path:
    """The overlay wheel of the synthetic release (make wheel), into its wheelhouse."""
    return overlay_mode.build_overlay_wheel("x86_64", wheelhouse=s.wheelhouse,
                                            patches_dir=s.patches, repo=s.repo)


# A patch's change of vllm/a.py (its 40 lines, one value changed).
CHANGE_A = "".join(f"A_{i} = {i * (2 if i == 20 else 1)}\n" for i in range(40))

# The overlay build with the CLI's error handling: an OverlayError is one line, exit 1.
CLI_BUILD = """import sys
from pathlib import Path
from tests.tooling.helpers import sbom_reuse
sbom_reuse.install()  # an SBOM input the tests rendered before: its kept output (conftest)
from vllm_overlay.wheelbuild import overlay_mode
from vllm_overlay.common.errors import OverlayError
repo = Path(sys.argv[1])
try:
    print(overlay_mode.build_overlay_wheel("x86_64", repo / "wheelhouse", repo / "patches",
                                           repo))
except OverlayError as exc:
    sys.exit(f"error: {exc}")
"""


def cli_build(s: Synth) -> list[str]:
    """The command line of CLI_BUILD on the synthetic repo (a process to kill, or to race)."""
    return [sys.executable, "-c", CLI_BUILD, str(s.repo)]
