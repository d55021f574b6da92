"""Synthetic upstream releases for the tooling tests: a small sdist, a wheel, a repo, patches.

Everything is built by the tests themselves; nothing is downloaded (the `network` marker
selects the few tests that use the real pinned artifacts).
"""

import base64
import gzip
import hashlib
import io
import json
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from vllm_overlay.wheelbuild import apply
from vllm_overlay.wheelbuild import export

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
        apply.git(tree, "add", "-A")
        trailers = "Origin: vendor\nRisk: none, a test patch\nProbe: defines vllm/a.py::A_0\n"
        apply.git(tree, "commit", "-q", "-m", f"{message}\n\nWhy: a test.\n\n{trailers}",
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


@pytest.fixture(scope="session")
def supply_venv() -> Path:
    """The real cache's supply venv (the SBOM library; created once), for test caches."""
    from vllm_overlay.wheelbuild import supplyenv

    return supplyenv.bin_dir().parent


def link_supply_venv(cache: Path, venv: Path) -> None:
    (cache / "venvs").mkdir(parents=True, exist_ok=True)
    (cache / "venvs" / venv.name).symlink_to(venv)


SYNTH_LOCK = "# synthetic runtime lock: the synthetic wheel has no Requires-Dist\n"


@pytest.fixture(autouse=True)
def real_wheelhouse_untouched():
    """No test may write into the repository's wheelhouse/: `make publish` uploads every
    wheel SHA256SUMS lists there. Tests build into a temporary wheelhouse."""
    house = Path(__file__).resolve().parents[2] / "wheelhouse"
    before = visible_files(house)
    yield
    assert visible_files(house) == before, \
        f"this test changed {house} (use a temporary wheelhouse)"


@pytest.fixture(scope="session")
def sbom_renders(tmp_path_factory) -> Path:
    """Where this process keeps the `cdx render` outputs it made (tests/tooling/sbom_reuse.py);
    under xdist each worker has its own."""
    return tmp_path_factory.mktemp("sbom-renders")


@pytest.fixture(autouse=True)
def sbom_rendered_once_per_input(request, monkeypatch):
    """Each distinct SBOM input rendered once for real (sbom_reuse.py), but in the tests
    marked `real_sbom_render` (determinism, the supply venv's own failure paths)."""
    from tests.tooling import sbom_reuse
    from vllm_overlay.wheelbuild import supplyenv

    if request.node.get_closest_marker("real_sbom_render"):
        monkeypatch.delenv(sbom_reuse.ENV, raising=False)
        return
    folder = request.getfixturevalue("sbom_renders")
    monkeypatch.setenv(sbom_reuse.ENV, str(folder))
    monkeypatch.setattr(supplyenv, "run_module", sbom_reuse.reusing(supplyenv.run_module, folder))


# `pip config list` (fetch.pip_index_urls: pip's index URLs) costs a pip start, ~0.2 s of
# CPU, and the rebase, status and lock code asks it hundreds of times a session with the same
# answer. Its answer depends only on the environment (PIP_*, HOME, XDG_*, VIRTUAL_ENV ...)
# and pip's configuration files: each test process asks pip once per distinct pair of those.
_PIP_INDEXES: dict[tuple, list[str]] = {}


def _pip_config_files() -> tuple:
    import sys

    home = Path.home()
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    dirs = os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    paths = [*(Path(d) / "pip" / "pip.conf" for d in dirs.split(":")), Path("/etc/pip.conf"),
             home / ".pip" / "pip.conf", Path(xdg) / "pip" / "pip.conf",
             Path(sys.prefix) / "pip.conf"]
    stats = []
    for path in paths:
        try:
            st = path.stat()
            stats.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            stats.append((str(path), None))
    return tuple(stats)


@pytest.fixture(autouse=True)
def pip_config_read_once_per_environment(monkeypatch):
    from vllm_overlay.wheelbuild import fetch

    real = fetch.pip_index_urls

    def pip_index_urls() -> list[str]:
        key = (tuple(sorted(os.environ.items())), _pip_config_files())
        if key not in _PIP_INDEXES:
            _PIP_INDEXES[key] = real()
        return list(_PIP_INDEXES[key])

    monkeypatch.setattr(fetch, "pip_index_urls", pip_index_urls)


@pytest.fixture
def synth(tmp_path, monkeypatch, supply_venv) -> Synth:
    cache = tmp_path / "cache"
    link_supply_venv(cache, supply_venv)
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(cache))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    dist, repo = tmp_path / "dist", tmp_path / "repo"
    dist.mkdir()
    (repo / "patches").mkdir(parents=True)
    make_sdist(dist / f"vllm-{UPSTREAM}.tar.gz")
    make_wheel(dist / WHEEL_NAME)
    (repo / "VERSION").write_text(VERSION + "\n")
    lock = {"project": "vllm", "version": UPSTREAM, "released": "2024-01-02T03:04:05Z",
            "artifacts": {"sdist": artifact(dist / f"vllm-{UPSTREAM}.tar.gz"),
                          "wheel-x86_64": artifact(dist / WHEEL_NAME)}}
    (repo / "upstream.lock.json").write_text(json.dumps(lock, indent=2))
    (repo / "patches" / "series").write_text("# empty\n")
    (repo / "locks").mkdir()
    (repo / "locks" / "runtime-x86_64.txt").write_text(SYNTH_LOCK)
    return Synth(tmp_path, repo, dist, cache)


# --- once per inputs: the minutes-long real checks ---------------------------------------
# A test marked `once_per_inputs` runs when what it checks changed since it last passed on
# this machine, and is skipped (with the reason in the report) otherwise. Its inputs: the
# pipeline's code, the series, the pin, the locks and the test's own module and conftests.
# VLLM_OVERLAY_RERUN=1 runs them all anyway.
INPUT_PATHS = ("vllm_overlay", "patches", "locks", "VERSION", "upstream.lock.json")


def inputs_key(test_file: Path) -> str:
    repo = Path(__file__).resolve().parents[2]
    files = []
    for name in INPUT_PATHS:
        path = repo / name
        files += [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    files += [test_file, *(folder / "conftest.py" for folder in test_file.parents
                           if repo in folder.parents and (folder / "conftest.py").is_file())]
    digest = hashlib.sha256()
    for file in files:
        digest.update(os.path.relpath(file, repo).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def _passed_marker(item) -> Path:
    from vllm_overlay.common.paths import cache_dir

    key = inputs_key(Path(str(item.fspath)))
    name = hashlib.sha256(f"{item.nodeid}\n{key}".encode()).hexdigest()[:24]
    return cache_dir() / "passed-checks" / f"{name}.json"


@pytest.hookimpl(tryfirst=True)  # before the fixtures (a real wheel build) are set up
def pytest_runtest_setup(item):
    if item.get_closest_marker("once_per_inputs"):
        # the inputs as they are when the test starts: a pass is recorded under these
        item.passed_marker = marker = _passed_marker(item)
        if marker.is_file() and not os.environ.get("VLLM_OVERLAY_RERUN"):
            when = json.loads(marker.read_text())["passed"]
            pytest.skip(f"passed {when} for the same inputs (pipeline code, series, pin, "
                        f"locks, test module): not rerun; VLLM_OVERLAY_RERUN=1 reruns it")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed and hasattr(item, "passed_marker"):
        import datetime

        marker = item.passed_marker
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"test": item.nodeid, "passed": datetime.datetime.now(
            datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}) + "\n")
