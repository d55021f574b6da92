"""The user's install command, exactly as constraints-<arch>.txt prints it, run by the pip
that `python -m venv` brings (23.2.1 on the stock CPython 3.11.7 and 3.12.1 here), from a
local index that also holds a newer release of a locked package. A small synthetic project
shows the pip behaviour without torch: vllm needs `dep[standard]>=1.0`, the lock pins
dep==1.0 and its extra's `extradep`, and the index has dep 2.0 too (the uvicorn case of a
stock Python 3.11 venv meeting the real lock). The real lock is installed by make test's
environment stage the same way (common/venvs.py: ensure_locked_venv)."""

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.tooling.helpers.synthetic import VERSION
from tests.tooling.helpers.deploy import build_wheel, clean_env
from vllm_overlay.wheelbuild import constraints


def stock_pythons() -> list[str]:
    found = {}
    for name in ("python3.11", "python3.12"):
        # pyenv's shims answer for one version only: its versions' own binaries first
        base = next(iter(sorted(Path.home().glob(f".pyenv/versions/{name[6:]}.*/bin/{name}"))),
                    None) or shutil.which(name)
        if base:
            found[name] = str(base)
    return [pytest.param(found.get(n), id=n, marks=pytest.mark.skipif(
        n not in found, reason=f"no {n} on this machine")) for n in ("python3.11", "python3.12")]


def plain_wheel(out: Path, name: str, version: str, requires: list[str],
                extras: list[str] = ()) -> Path:
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": b"",
             f"{info}/METADATA": ("Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                                  + "".join(f"Provides-Extra: {e}\n" for e in extras)
                                  + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n\n"}
    path = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(f"{info}/RECORD", "".join(f"{m},,\n" for m in files) + f"{info}/RECORD,,\n")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """A PEP 503 index (file://) with vllm, dep 1.0 + 2.0, extradep; and the constraints
    file make wheel writes for it (constraints.constraints_text over a lock of dep 1.0)."""
    root = tmp_path_factory.mktemp("user-install")
    files = root / "files"
    files.mkdir()
    wheels = [build_wheel(files, VERSION, requires=("dep[standard]>=1.0",)),
              *(plain_wheel(files, "dep", v, ['extradep; extra == "standard"'], ["standard"])
                for v in ("1.0", "2.0")),
              plain_wheel(files, "extradep", "1.0", [])]
    for wheel in wheels:
        project = root / "simple" / wheel.name.split("-")[0]
        project.mkdir(parents=True, exist_ok=True)
        with open(project / "index.html", "a") as page:
            page.write(f'<a href="{wheel.as_uri()}#sha256={sha256(wheel)}">{wheel.name}</a>\n')
    by_name = {w.name: w for w in wheels}
    lock = "".join(f"{n}==1.0 \\\n    --hash=sha256:{sha256(by_name[f'{n}-1.0-py3-none-any.whl'])}\n"
                   for n in ("dep", "extradep"))
    (root / "repo" / "locks").mkdir(parents=True)
    (root / "repo" / "locks" / "runtime-x86_64.txt").write_text(lock)
    text = constraints.constraints_text("x86_64", {wheels[0].name: sha256(wheels[0])}, VERSION,
                                        root / "repo")
    (root / "constraints-x86_64.txt").write_text(text)
    return root


def stock_venv(python: str, path: Path) -> Path:
    """A venv as a user makes one: `python -m venv`, with the pip it brings."""
    subprocess.run([python, "-m", "venv", str(path)], check=True, env=clean_env())
    return path / "bin" / "python"


def run_in(index: Path, python: Path, command: str) -> subprocess.CompletedProcess:
    """One `pip ...` command of the file's header, with the venv's own pip, the local index
    as pip's only index and no pip configuration of this machine."""
    args = command.split()
    assert args[0] == "pip", command
    extra = ["--index-url", (index / "simple").as_uri()] if args[1] == "install" else []
    return subprocess.run([str(python), "-m", "pip", *args[1:], *extra], cwd=index,
                          capture_output=True, text=True, timeout=300,
                          env=clean_env(PIP_NO_CACHE_DIR="1"))


def printed_commands(index: Path) -> list[str]:
    header = [line[2:] for line in (index / "constraints-x86_64.txt").read_text().splitlines()
              if line.startswith("# pip ")]
    assert header == [constraints.INSTALL_COMMAND.format(arch="x86_64")]
    return [part.strip() for part in header[0].split("&&")]


@pytest.mark.parametrize("python", stock_pythons())
def test_printed_command_installs_exactly_the_lock_with_a_stock_pip(index, python, tmp_path):
    venv_python = stock_venv(python, tmp_path / "venv")
    for command in printed_commands(index):
        proc = run_in(index, venv_python, command)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout}\n{proc.stderr}"
    versions = subprocess.run([str(venv_python), "-c", "import importlib.metadata as m; print("
                               "m.version('vllm'), m.version('dep'), m.version('extradep'))"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert versions == [VERSION, "1.0", "1.0"]  # the locked dep, not the index's newer 2.0


def test_resolving_install_of_the_same_file_fails_with_a_stock_pip(index, tmp_path):
    """Negative control: without --no-deps, pip 23.2 resolves `dep[standard]` again, finds
    dep 2.0 on the index and refuses it (the fresh-machine failure). If this starts passing,
    the pip behaviour changed and the test above proves less."""
    python = stock_pythons()[0].values[0]
    if python is None:
        pytest.skip("no python3.11 on this machine")
    venv_python = stock_venv(python, tmp_path / "venv")
    pip_version = subprocess.run([str(venv_python), "-m", "pip", "--version"],
                                 capture_output=True, text=True).stdout.split()[1]
    if int(pip_version.split(".")[0]) >= 26:
        pytest.skip(f"this python's own pip is {pip_version}: it does not show the failure")
    proc = run_in(index, venv_python, "pip install --require-hashes -r constraints-x86_64.txt")
    assert proc.returncode != 0
    assert "must have their versions pinned with ==" in proc.stderr and "dep" in proc.stderr


def test_printed_command_fails_on_a_tampered_hash(index, tmp_path):
    python = next(p.values[0] for p in stock_pythons() if p.values[0])
    bad = tmp_path / "bad"
    shutil.copytree(index, bad, symlinks=True)
    text = (bad / "constraints-x86_64.txt").read_text()
    digest = text.split("dep==1.0 \\\n    --hash=sha256:", 1)[1][:64]
    (bad / "constraints-x86_64.txt").write_text(text.replace(digest, "0" * 64))
    proc = run_in(bad, stock_venv(python, tmp_path / "venv"), printed_commands(bad)[0])
    assert proc.returncode != 0 and "DO NOT MATCH THE HASHES" in proc.stderr, proc.stderr
