"""Small synthetic vLLM wheels and clean venvs for the distribution tests.

A synthetic wheel has the shape of the real one (name `vllm-<version>-cp38-abi3-
manylinux_2_31_x86_64.whl`, dist-info with METADATA / WHEEL / entry_points.txt / RECORD,
vllm/_version.py, vllm/config/compilation.py with or without the series symbol) but
holds a few kilobytes, so it installs and uploads in milliseconds.
"""

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from vllm_overlay.publishing.in_image.image_check import SERIES_SYMBOL

TAG = "cp38-abi3-manylinux_2_31_x86_64"


def compilation_source(with_symbol: bool, extra: str = "") -> str:
    _, cls, field = SERIES_SYMBOL
    lines = ["from dataclasses import dataclass", "", "", "@dataclass", f"class {cls}:",
             "    cudagraph_mm_encoder: bool = False"]
    if with_symbol:
        lines.append(f"    {field}: int | None = None")
    return "\n".join(lines) + f"\n{extra}"


def package_files(version: str, with_symbol: bool, extra: str = "") -> dict[str, bytes]:
    return {
        "vllm/__init__.py": b"from ._version import __version__\n",
        "vllm/_version.py": f"__version__ = version = {version!r}\n".encode(),
        "vllm/config/__init__.py": b"",
        SERIES_SYMBOL[0]: compilation_source(with_symbol, extra).encode(),
        "vllm/entrypoints/cli.py": b"def main():\n    print('vllm cli')\n",
        "vllm/_C.abi3.so": bytes(range(256)) * 64,  # stands in for the unchanged binaries
    }


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(out_dir: Path, version: str, files: dict[str, bytes] | None = None,
                with_symbol: bool = True, extra: str = "",
                requires: tuple[str, ...] = ("torch==2.10.0",)) -> Path:
    """Write vllm-<version>-<TAG>.whl into out_dir (a valid wheel pip and twine accept)."""
    files = dict(files if files is not None else package_files(version, with_symbol, extra))
    info = f"vllm-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        "Metadata-Version: 2.1\nName: vllm\n"
        f"Version: {version}\nSummary: synthetic vLLM for the overlay's tests\n"
        "Requires-Python: >=3.10\n" + "".join(f"Requires-Dist: {r}\n" for r in requires) +
        "Description-Content-Type: text/markdown\n\n# vllm (synthetic)\n").encode()
    files[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                              f"Tag: {TAG}\n\n").encode()
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\nvllm = vllm.entrypoints.cli:main\n"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    record += f"{info}/RECORD,,\n"
    path = out_dir / f"vllm-{version}-{TAG}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/RECORD", record)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_sums(wheelhouse: Path, *wheels: Path) -> None:
    (wheelhouse / "SHA256SUMS").write_text("".join(f"{sha256(w)}  {w.name}\n" for w in wheels))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus pip's and twine's settings (no user config, no extra index)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "TWINE_", "VLLM_OVERLAY_FAULT"))}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def make_venv(path: Path) -> Path:
    """A clean venv without pip (pip runs from the tools venv with --python); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(python), *args],
                          capture_output=True, text=True, env=clean_env(), timeout=300)


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                          "['purelib'])"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())
