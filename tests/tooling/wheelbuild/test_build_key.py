"""The build key covers what shapes the wheel (wheelbuild/, common/), not the rest of the tooling."""

import shutil

import pytest

from vllm_overlay.wheelbuild import key
from tests.tooling.helpers.synthetic import build


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of vllm_overlay/ that the build key reads instead of the real one."""
    copy = tmp_path / "vllm_overlay"
    shutil.copytree(key.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(key, "PACKAGE", copy)
    return copy


def append(path, text="\n# an edit\n"):
    path.write_text(path.read_text() + text)


@pytest.mark.parametrize("module", ["testing/harness.py", "upstream/status.py",
                                    "publishing/publish.py", "commands/test.py", "cli.py"])
def test_editing_code_that_does_not_shape_the_wheel_keeps_make_wheel_a_noop(
        synth, package_copy, capsys, module):
    synth.seed_cache()
    synth.write_series({"Change": {"vllm/b.py": "B = 'changed'\n"}})
    wheel = build(synth)
    capsys.readouterr()
    append(package_copy / module)
    assert build(synth) == wheel
    assert "is up to date (nothing changed)" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["wheelbuild/overlay.py", "wheelbuild/zipraw.py", "common/series.py"])
def test_editing_code_that_shapes_the_wheel_rebuilds(synth, package_copy, capsys, module):
    synth.seed_cache()
    synth.write_series({"Change": {"vllm/b.py": "B = 'changed'\n"}})
    build(synth)
    capsys.readouterr()
    append(package_copy / module)
    build(synth)
    err = capsys.readouterr().err
    assert "up to date" not in err and "verified" in err


def test_every_wheel_shaping_module_is_hashed(package_copy):
    before = key.wheel_code_digest()
    for sub in key.WHEEL_SHAPING:
        for path in sorted((package_copy / sub).rglob("*.py")):
            original = path.read_text()
            append(path)
            assert key.wheel_code_digest() != before, path
            path.write_text(original)
    assert key.wheel_code_digest() == before
