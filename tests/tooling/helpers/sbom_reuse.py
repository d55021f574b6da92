"""One real `cdx render` per distinct input, for the synthetic builds of a test session.

`cdx render` (the SBOM, run in the supply venv) is a pure function of its input, the facts
JSON, for one cdx.py and one supply venv: the same input gives the same bytes (the tests
marked `real_sbom_render` prove it on every run). One run costs ~0.5 s of CPU (~1.5 s
before the supply venv had rfc3987: the schema validator built an IRI grammar at import),
and most synthetic builds of a session render the very same facts. So the first build with an input runs the tool for
real and keeps its output in `folder`; later builds with that input, in this process or
in a test's own build subprocess that calls install() (test_reliability's CLI_BUILD), get
those bytes. A render that failed is never kept; `cdx validate` always runs.
"""

import hashlib
import os
import subprocess
from pathlib import Path

ENV = "VLLM_OVERLAY_TEST_SBOM_RENDERS"  # the folder, for a test's build subprocess


def install(folder: Path | None = None) -> None:
    """Route supplyenv.run_module's `cdx render` through `folder` (default: $ENV; nothing
    when neither is set). For a subprocess; the tests' own process uses the conftest
    fixture, which undoes it after each test."""
    folder = folder or (Path(os.environ[ENV]) if os.environ.get(ENV) else None)
    if folder is not None:
        from vllm_overlay.wheelbuild import supplyenv

        supplyenv.run_module = reusing(supplyenv.run_module, folder)


def reusing(real, folder: Path):
    from vllm_overlay.wheelbuild import supplyenv

    def run_module(module: str, args: list[str], stdin: str) -> subprocess.CompletedProcess:
        if (module, args) != ("cdx", ["render"]):
            return real(module, args, stdin)
        key = hashlib.sha256(f"{supplyenv.venv().resolve()}\0{stdin}".encode()).hexdigest()
        kept = folder / f"{key}.cdx.json"
        if kept.is_file():
            return subprocess.CompletedProcess(["cdx", "render"], 0,
                                               kept.read_text(encoding="utf-8"), "")
        proc = real(module, args, stdin)
        if proc.returncode == 0:
            tmp = kept.with_name(f".{kept.name}.{os.getpid()}")
            try:
                tmp.write_text(proc.stdout, encoding="utf-8")
                os.replace(tmp, kept)  # whole or absent, for a concurrent reader
            except OSError:  # not kept (a test's private mounts): the next build renders
                tmp.unlink(missing_ok=True)
        return proc

    return run_module
