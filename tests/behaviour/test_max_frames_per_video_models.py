"""``get_max_frames_per_video`` of the models that reuse Qwen3-VL's implementation
(patch 0004 makes Qwen3-VL-MoE, Qwen3.5 and InternS1-Pro keep ``model_config`` on the
model for it): each model, built by its own ``__init__`` from the registry (on the meta
device, qwen3_vl_family.py), answers what Qwen3-VL answers for the same vision tower,
processor, length and video limit; asks its own registered processing info; follows an
auto-fitted ``max_model_len`` (the GPU worker's own ``update_max_model_len``); and the
manager's auto frame limit is ``max_batch_size`` times that answer.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from qwen3_vl_family import FAMILY, build_on_meta, write_family_dir
from runner_lifecycle import runner_config

LIMITS = {"image": 4, "video": 1}
FITTED = 1024  # an auto-fit of --max-model-len -1 (full length 4096)
INFO = {
    "Qwen3VLMoeForConditionalGeneration": "Qwen3VLMoeProcessingInfo",
    "Qwen3_5ForConditionalGeneration": "Qwen3_5ProcessingInfo",
    "InternS1ProForConditionalGeneration": "InternS1ProProcessingInfo",
}


def auto_fit(vllm_config, max_model_len: int) -> None:
    from vllm.v1.worker.gpu_worker import Worker

    Worker.update_max_model_len(
        SimpleNamespace(model_config=vllm_config.model_config, model_runner=None),
        max_model_len)


@pytest.fixture(scope="module")
def qwen3_vl_frames(cpu_platform, qwen3_vl_session_dir):
    """Qwen3-VL's own answers: at the full length, and after an auto-fit to FITTED."""
    config = runner_config(qwen3_vl_session_dir, max_model_len=-1,
                           limit_mm_per_prompt=LIMITS)
    model = build_on_meta(config)
    full = model.get_max_frames_per_video()
    auto_fit(config, FITTED)
    fitted = model.get_max_frames_per_video()
    assert full != fitted, (full, fitted)  # else the comparisons below prove little
    return full, fitted


@pytest.mark.parametrize("architecture", list(FAMILY))
def test_max_frames_per_video(architecture, qwen3_vl_session_dir, tmp_path,
                              qwen3_vl_frames, monkeypatch, make_cg_manager):
    from vllm.multimodal import MULTIMODAL_REGISTRY

    full, fitted = qwen3_vl_frames
    model_dir = write_family_dir(qwen3_vl_session_dir, tmp_path / architecture,
                                 architecture)
    config = runner_config(model_dir, max_model_len=-1, limit_mm_per_prompt=LIMITS)
    assert config.model_config.max_model_len == 4096
    model = build_on_meta(config)
    assert type(model).__name__ == architecture
    assert model.model_config is config.model_config  # set by the model's __init__

    infos = []
    get_info = MULTIMODAL_REGISTRY.get_processing_info

    def recording(model_config):
        info = get_info(model_config)
        infos.append(type(info).__name__)
        return info

    monkeypatch.setattr(MULTIMODAL_REGISTRY, "get_processing_info", recording)
    assert model.get_max_frames_per_video() == full
    assert infos == [INFO[architecture]]

    auto_fit(config, FITTED)
    assert model.get_max_frames_per_video() == fitted

    mgr = make_cg_manager(config, model)  # auto frame limit (no capture: meta weights)
    assert mgr.max_frames_per_batch == mgr.max_batch_size * fitted

    # Control: without the model_config its __init__ keeps (these classes skip
    # Qwen3-VL's __init__), the method cannot answer.
    monkeypatch.delattr(model, "model_config")
    with pytest.raises(AttributeError, match="model_config"):
        model.get_max_frames_per_video()
