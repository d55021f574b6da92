"""The supply venv (issue 27, case 5): a venv that cannot run the SBOM tool is named as a
broken environment and rebuilt once, never reported as an invalid SBOM; a tool that runs
and fails is named as such; only the tool's own verdict means an invalid document."""

import subprocess
import sys

import pytest

from vllm_overlay.build import sbom, supplyenv
from vllm_overlay.common import venvs
from vllm_overlay.common.errors import OverlayError
from vllm_overlay.common.requirements import requirement_lines

def supply_requirements() -> list[str]:
    return requirement_lines(supplyenv.REQUIREMENTS.read_text())


VALID = b'{"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1}\n'


def test_a_broken_supply_venv_is_named_and_rebuilt_once(tmp_path, monkeypatch, capfd):
    """A venv marked ready that lacks the SBOM library (a damaged or half-deleted venv)."""
    monkeypatch.setenv("VLLM_OVERLAY_CACHE", str(tmp_path / "cache"))
    venv = venvs.cache_dir() / "venvs" / f"supply-{venvs.venv_key(supply_requirements())}"
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
