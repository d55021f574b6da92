"""Every compilation config that loads on pristine vLLM 0.19.1 loads on our wheel with
the same meaning (patches 0002/0004: negative limits checked only with
cudagraph_mm_encoder on; 0005: the 0.19.1 key as an alias, equal values compared
after conversion).

The same table is loaded by ``compat_configs.py`` in both wheels' venvs (the pristine
one's python comes from ``VLLM_OVERLAY_PRISTINE_PYTHON``, set by ``make test``), through
``CompilationConfig(**config)``, ``--compilation-config <json>``, ``-cc.<key>=``, a YAML
``--config`` file, ``dataclasses.replace``, ``vllm.config.utils.replace``, ``deepcopy``
and ``pickle``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

OLD = "encoder_cudagraph_max_images_per_batch"
NEW = "encoder_cudagraph_max_vision_items_per_batch"
ON = {"cudagraph_mm_encoder": True}

# (config, loads on pristine 0.19.1): the expectation is checked too, so a harness that
# reports everything as loading (or failing) fails here.
TABLE = [
    ({}, True),
    (ON, True),
    ({OLD: -1}, True),                      # defect 5: loads on 0.19.1, graphs off
    ({OLD: -1, "cudagraph_mm_encoder": False}, True),
    ({OLD: -5, "encoder_cudagraph_token_budgets": [0, -3]}, True),
    ({OLD: 4, **ON}, True),
    ({OLD: "4", **ON}, True),               # pydantic converts "4" -> 4
    ({OLD: 0, **ON}, True),
    ({OLD: 2, "encoder_cudagraph_token_budgets": [256, 128], **ON}, True),
    ({"encoder_cudagraph_token_budgets": [64]}, True),
    ({OLD: -1, **ON}, False),               # rejected on both
    ({OLD: "x"}, False),                    # not an int
    ({"encoder_cudagraph_no_such_key": 1}, False),
]


def _load(python: str) -> list[dict]:
    script = Path(__file__).with_name("compat_configs.py")
    proc = subprocess.run(
        [python, str(script)],
        input=json.dumps([config for config, _ in TABLE]),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results():
    pristine = os.environ.get("VLLM_OVERLAY_PRISTINE_PYTHON")
    if not pristine:
        pytest.skip("VLLM_OVERLAY_PRISTINE_PYTHON not set (make test sets it)")
    return _load(pristine), _load(sys.executable)


@pytest.mark.parametrize("index", range(len(TABLE)), ids=[json.dumps(c) for c, _ in TABLE])
def test_same_meaning_as_pristine(results, index):
    pristine, ours = results[0][index], results[1][index]
    config, loads = TABLE[index]
    for way in ("kwargs", "cli"):
        assert ("error" not in pristine[way]) is loads, (way, pristine[way])
        if loads:
            assert ours[way] == pristine[way], (way, config)
    # The other ways 0.19.1 code builds or copies a config (issue 24, defect 6:
    # replace() with the old key raised): the same meaning, or the same error type.
    for way in ("dotted", "yaml", "replace", "utils_replace", "deepcopy", "pickle"):
        assert ours[way] == pristine[way], (way, config, pristine[way])
    if loads:
        assert "error" not in pristine["replace"], pristine["replace"]


def test_old_and_new_key_equal_after_conversion():
    """Ours only (0.19.1 has no new key): equal once converted -> accepted."""
    from vllm.config import CompilationConfig

    for old, new in [(4, "4"), ("4", 4), (4, 4.0)]:
        config = CompilationConfig(**{OLD: old, NEW: new})
        assert config.encoder_cudagraph_max_vision_items_per_batch == 4
    with pytest.raises(ValueError, match=OLD):
        CompilationConfig(**{OLD: "4", NEW: "5"})
