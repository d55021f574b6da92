"""The tool venvs (issue 27, case 5): a venv that cannot run the SBOM tool is named as a
broken environment and rebuilt once, never reported as an invalid SBOM; a tool that runs
and fails is named as such; only the tool's own verdict means an invalid document. The
supply and publish venvs are installed from hash locks, like the runtime."""

import json
import re
import subprocess
import sys

import pytest

from vllm_overlay.wheelbuild import constraints, sbom, supplyenv
from vllm_overlay.common import venvs
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.requirements import normalize_name, requirement_lines
from vllm_overlay.publishing import publish

pytestmark = pytest.mark.real_sbom_render  # the supply venv's own failure paths: always the tool

VALID = b'{"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1}\n'


@pytest.mark.network  # the rebuild installs the supply lock's packages from the index
def test_a_broken_supply_venv_is_named_and_rebuilt_once(tmp_path, monkeypatch, capfd):
    """A venv marked ready that lacks the SBOM library (a damaged or half-deleted venv)."""
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path / "cache"))
    venv = venvs.locked_venv_dir("supply", [supplyenv.LOCK])
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / ".complete").write_text("0 s\n")
    sbom.validate(VALID, "a valid SBOM")  # no error: the venv was rebuilt, then it ran
    err = capfd.readouterr().err
    assert f"the supply venv {venv} is broken (cdx does not run: ModuleNotFoundError: " \
        f"No module named 'cyclonedx'); rebuilding it" in err, err
    assert "not a valid CycloneDX" not in err
    assert supplyenv.broken(venv, "cdx") is None
    with pytest.raises(OverlayError, match="not a valid CycloneDX 1.6 document"):
        sbom.validate(b'{"bomFormat": "CycloneDX"}', "a broken SBOM")  # the verdict still works


def test_a_venv_that_stays_broken_is_one_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(venvs, "_create", lambda venv, *a: (
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True),
        (venv / ".complete").write_text(""), venv)[-1])  # every rebuild is broken again
    with pytest.raises(OverlayError) as exc:
        sbom.validate(VALID, "a valid SBOM")
    message = str(exc.value)
    assert message.startswith(f"the supply venv {venvs.cache_dir() / 'venvs'}/supply-")
    assert "is still broken after rebuilding it (cdx does not run: ModuleNotFoundError" in \
        message and "not a valid" not in message, message


def test_a_tool_that_crashes_is_not_a_verdict_on_the_document(monkeypatch):
    """The real (working) supply venv: the tool runs and fails on input it cannot parse."""
    with pytest.raises(OverlayError) as exc:
        sbom.validate(b"\xff not json", "garbage")
    assert "garbage: not a valid CycloneDX 1.6 document (1 error(s)): not JSON: " in \
        str(exc.value)  # a verdict on the document (cdx's own), no crash
    with pytest.raises(OverlayError) as exc:
        sbom.render({"version": "1"})  # facts without the keys cdx.render needs: a KeyError
    message = str(exc.value)
    assert message.startswith("cdx render failed (exit 1) in the supply venv ") and \
        "KeyError" in message and "not a valid" not in message, message


TOOLS = {"supply": (supplyenv.REQUIREMENTS, supplyenv.LOCK),
         "publish": (publish.TWINE_REQUIREMENTS, publish.TWINE_LOCK)}


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_tool_venvs_are_installed_from_hash_locks(name):
    """The tools' own pins (and so the SBOM bytes) no longer depend on the day the venv is
    made: every package of the venv is locked with hashes, the tools at their pins."""
    requirements, lock = TOOLS[name]
    text = lock.read_text()
    locked = constraints.entries(text)
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        if constraints.entries(block):
            assert "--hash=sha256:" in block, f"{lock.name}: no hash for {block.splitlines()[0]}"
    for line in requirement_lines(requirements.read_text()):
        project, _, version = line.partition("==")
        assert locked[normalize_name(project.split("[")[0])] == version, line
    venv = venvs.ensure_locked_venv(name, [lock])
    assert venv == venvs.locked_venv_dir(name, [lock])
    out = subprocess.run([str(venvs.python_of(venv)), "-c", "import importlib.metadata as m, "
                          "json; print(json.dumps({d.metadata['Name']: d.version "
                          "for d in m.distributions()}))"], capture_output=True, text=True,
                         check=True).stdout
    installed = {normalize_name(k): v for k, v in json.loads(out).items()
                 if normalize_name(k) not in ("pip", "setuptools")}
    assert installed.items() <= locked.items(), set(installed.items()) - set(locked.items())
    assert {normalize_name(r.partition("==")[0].split("[")[0])
            for r in requirement_lines(requirements.read_text())} <= set(installed)
