"""Behaviour of patch 0004 (upstream #40445): model-aware
``encoder_cudagraph_max_frames_per_batch``.

The manager decides max_frames_per_batch, in this order:
video limit per prompt 0 (or no video in the model's encoder graph) -> 0;
user value when set (0 included); else
max_batch_size * model.get_max_frames_per_video().

Runs on CPU with real VllmConfigs for a tiny offline Qwen3-VL directory.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from helpers import qwen3_vl_protocol_object



def _frame_logs(records):
    return [
        r.getMessage()
        for r in records
        if r.levelno == logging.INFO
        and r.getMessage().startswith("Encoder CUDA graph max_frames_per_batch=")
    ]


# ---------------------------------------------------------------------------
# Config field
# ---------------------------------------------------------------------------


def test_config_field_default_none_and_zero_kept():
    from vllm.config import CompilationConfig

    assert CompilationConfig().encoder_cudagraph_max_frames_per_batch is None
    for value in (0, 3, 1000):
        cc = CompilationConfig(encoder_cudagraph_max_frames_per_batch=value)
        assert cc.encoder_cudagraph_max_frames_per_batch == value


@pytest.mark.parametrize("value", [-1, -7])
def test_config_negative_rejected(value):
    from vllm.config import CompilationConfig

    with pytest.raises(ValueError, match="encoder_cudagraph_max_frames_per_batch"):
        CompilationConfig(
            cudagraph_mm_encoder=True, encoder_cudagraph_max_frames_per_batch=value
        )
    # Checked only with the feature on, as upstream 0.20 does.
    assert (
        CompilationConfig(
            encoder_cudagraph_max_frames_per_batch=value
        ).encoder_cudagraph_max_frames_per_batch
        == value
    )


def test_config_field_annotation():
    from vllm.config import CompilationConfig

    ann = CompilationConfig.__annotations__["encoder_cudagraph_max_frames_per_batch"]
    assert "None" in str(ann) and "int" in str(ann)


# ---------------------------------------------------------------------------
# Manager decision, every branch, real VllmConfig + small protocol model
# ---------------------------------------------------------------------------


def test_auto_is_items_times_frames_per_video(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, vllm_logs, make_cg_manager
):
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        max_num_batched_tokens=2048,
        compilation={"cudagraph_mm_encoder": True},
    )
    model = make_encoder_cg_model(min_budget=64, max_frames_per_video=11)
    mgr = make_cg_manager(vllm_config, model)
    assert mgr.max_batch_size == 2048 // 64
    assert mgr.max_frames_per_batch == (2048 // 64) * 11
    assert ("get_max_frames_per_video", ()) in model.calls
    assert mgr.supports_modality("video")
    logs = _frame_logs(vllm_logs)
    assert any(f"max_frames_per_batch={32 * 11} (auto" in m for m in logs), logs


def test_auto_with_user_items(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, make_cg_manager
):
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        compilation={
            "cudagraph_mm_encoder": True,
            "encoder_cudagraph_max_vision_items_per_batch": 3,
        },
    )
    mgr = make_cg_manager(vllm_config, make_encoder_cg_model(max_frames_per_video=9))
    assert (mgr.max_batch_size, mgr.max_frames_per_batch) == (3, 27)


@pytest.mark.parametrize("user_frames", [5, 500])
def test_user_value_used(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, vllm_logs, user_frames,
    make_cg_manager
):
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        compilation={
            "cudagraph_mm_encoder": True,
            "encoder_cudagraph_max_frames_per_batch": user_frames,
        },
    )
    model = make_encoder_cg_model(max_frames_per_video=11)
    mgr = make_cg_manager(vllm_config, model)
    assert mgr.max_frames_per_batch == user_frames
    assert ("get_max_frames_per_video", ()) not in model.calls
    logs = _frame_logs(vllm_logs)
    assert any(f"max_frames_per_batch={user_frames} (user" in m for m in logs), logs


def test_user_zero_respected_while_video_enabled(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, make_cg_manager
):
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        compilation={
            "cudagraph_mm_encoder": True,
            "encoder_cudagraph_max_frames_per_batch": 0,
        },
    )
    assert vllm_config.model_config.multimodal_config.get_limit_per_prompt("video")
    mgr = make_cg_manager(vllm_config, make_encoder_cg_model(max_frames_per_video=11))
    assert mgr.max_frames_per_batch == 0
    assert not mgr.supports_modality("video")
    assert mgr.supports_modality("image")


@pytest.mark.parametrize("user_frames", [None, 0, 64])
def test_video_limit_zero_is_image_only(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, vllm_logs, user_frames,
    make_cg_manager
):
    compilation = {"cudagraph_mm_encoder": True}
    if user_frames is not None:
        compilation["encoder_cudagraph_max_frames_per_batch"] = user_frames
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        compilation=compilation,
        limit_mm_per_prompt={"video": 0},
    )
    mm_config = vllm_config.model_config.multimodal_config
    assert mm_config.get_limit_per_prompt("video") == 0
    assert mm_config.get_limit_per_prompt("image") > 0
    model = make_encoder_cg_model(max_frames_per_video=11)
    mgr = make_cg_manager(vllm_config, model)
    assert mgr.max_frames_per_batch == 0
    assert ("get_max_frames_per_video", ()) not in model.calls
    assert mgr.supports_modality("image")
    assert not mgr.supports_modality("video")
    logs = _frame_logs(vllm_logs)
    assert any("max_frames_per_batch=0 (video disabled" in m for m in logs), logs


def test_model_without_video_is_image_only(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, make_cg_manager
):
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        compilation={
            "cudagraph_mm_encoder": True,
            "encoder_cudagraph_max_frames_per_batch": 64,
        },
    )
    model = make_encoder_cg_model(video=False, max_frames_per_video=11)
    mgr = make_cg_manager(vllm_config, model)
    assert mgr.max_frames_per_batch == 0
    assert not mgr.supports_modality("video")


def test_capture_uses_decided_frames(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, monkeypatch,
    make_cg_manager
):
    """The decided value is what the graphs are captured with."""
    import contextlib

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: SimpleNamespace())
    monkeypatch.setattr(torch.cuda, "graph", lambda g, pool=None: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: ("cpu-pool",))
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        compilation={
            "cudagraph_mm_encoder": True,
            "encoder_cudagraph_token_budgets": [64, 128],
            "encoder_cudagraph_max_vision_items_per_batch": 2,
        },
    )
    model = make_encoder_cg_model(max_frames_per_video=6)
    mgr = make_cg_manager(vllm_config, model)
    mgr.capture()
    assert [c for c in model.calls if c[0] == "capture"] == [
        ("capture", (128, 2, 12)),
        ("capture", (64, 2, 12)),
    ]
    for meta in mgr.budget_graphs.values():
        assert meta.max_frames_per_batch == 12
        assert meta.metadata_buffers["cu_seqlens"].numel() == 12 + 1


# ---------------------------------------------------------------------------
# Qwen3-VL: get_max_frames_per_video from its processing info
# ---------------------------------------------------------------------------



def _expected_frames(model_config):
    """The processor's own answer (built through create_processor, not
    through get_processing_info)."""
    from vllm.multimodal import MULTIMODAL_REGISTRY

    processor = MULTIMODAL_REGISTRY.create_processor(model_config)
    return processor.info.get_num_frames_with_most_features(
        seq_len=model_config.max_model_len,
        mm_counts={
            "video": model_config.multimodal_config.get_limit_per_prompt("video")
        },
    )


def test_qwen3_vl_frames_per_video_follow_max_model_len(
    tiny_qwen3_vl_dir, make_vllm_config, vllm_logs, make_cg_manager
):
    from vllm.model_executor.models.interfaces import supports_encoder_cudagraph

    results = {}
    for max_model_len in (1024, 4096):
        vllm_config = make_vllm_config(
            tiny_qwen3_vl_dir,
            max_model_len=max_model_len,
            max_num_batched_tokens=2048,
            compilation={"cudagraph_mm_encoder": True},
            limit_mm_per_prompt={"video": 1},
        )
        model = qwen3_vl_protocol_object(vllm_config)
        assert supports_encoder_cudagraph(model)
        frames = model.get_max_frames_per_video()
        assert frames == _expected_frames(vllm_config.model_config)
        mgr = make_cg_manager(vllm_config, model)
        # auto budgets stop at min(max_num_batched_tokens, max_model_len)
        assert mgr.max_batch_size == min(2048, max_model_len) // 64
        assert mgr.max_frames_per_batch == mgr.max_batch_size * frames
        results[max_model_len] = (frames, mgr.max_frames_per_batch)
    # a longer context admits more frames per video
    assert results[1024][0] < results[4096][0]
    assert results[1024][1] != results[4096][1]
    print("tiny Qwen3-VL auto max_frames_per_batch:", results)


def test_qwen3_vl_frames_per_video_follow_video_limit(
    tiny_qwen3_vl_dir, make_vllm_config
):
    frames = {}
    for videos in (1, 2):
        vllm_config = make_vllm_config(
            tiny_qwen3_vl_dir,
            max_model_len=4096,
            limit_mm_per_prompt={"video": videos},
        )
        model = qwen3_vl_protocol_object(vllm_config)
        frames[videos] = model.get_max_frames_per_video()
        assert frames[videos] == _expected_frames(vllm_config.model_config)
    assert frames[2] < frames[1]


# ---------------------------------------------------------------------------
# MultiModalRegistry.get_processing_info: public, not cached
# ---------------------------------------------------------------------------


def test_get_processing_info_per_model_config(tiny_qwen3_vl_dir, make_vllm_config):
    from vllm.multimodal import MULTIMODAL_REGISTRY

    config_a = make_vllm_config(
        tiny_qwen3_vl_dir, max_model_len=1024, limit_mm_per_prompt={"video": 1}
    ).model_config
    config_b = make_vllm_config(
        tiny_qwen3_vl_dir, max_model_len=4096, limit_mm_per_prompt={"video": 2}
    ).model_config

    info_a = MULTIMODAL_REGISTRY.get_processing_info(config_a)
    info_b = MULTIMODAL_REGISTRY.get_processing_info(config_b)
    assert info_a is not info_b
    assert type(info_a).__name__ == "Qwen3VLProcessingInfo"
    assert info_a.ctx.model_config is config_a
    assert info_b.ctx.model_config is config_b
    # Each info answers for its own config.
    frames_a = info_a.get_num_frames_with_most_features(
        seq_len=config_a.max_model_len, mm_counts={"video": 1}
    )
    frames_b = info_b.get_num_frames_with_most_features(
        seq_len=config_b.max_model_len, mm_counts={"video": 2}
    )
    assert frames_a == _expected_frames(config_a)
    assert frames_b == _expected_frames(config_b)
    assert frames_a != frames_b

    # Not cached: asking again (after the other config) builds a new info
    # still bound to the config it was asked for.
    again_a = MULTIMODAL_REGISTRY.get_processing_info(config_a)
    assert again_a is not info_a
    assert again_a.ctx.model_config is config_a
    assert not hasattr(
        type(MULTIMODAL_REGISTRY).get_processing_info, "cache_info"
    )


# ---------------------------------------------------------------------------
# The frames method not implemented (issue 24, 0006): a model that inherits
# SupportsEncoderCudaGraph gets the protocol's stub (its body is `...`, so it
# answers None); one whose method answers None is the same case. Both are
# treated as a missing method: one warning naming it, no encoder graphs
# (auto frames would be max_batch_size * None).
# ---------------------------------------------------------------------------


def _inherits_protocol_without_frames(small_cls):
    """A model class that subclasses the protocol and implements every method
    of the small model except get_max_frames_per_video."""
    from vllm.model_executor.models.interfaces import SupportsEncoderCudaGraph

    # The small model's own methods come before the protocol's stubs in the
    # MRO; get_max_frames_per_video resolves to the protocol's.
    body = {
        name: value
        for name, value in vars(small_cls).items()
        if name != "get_max_frames_per_video" and not name.startswith("__")
    }
    body["__init__"] = lambda self, **kwargs: small_cls.__init__(self, **kwargs)
    cls = type("InheritsProtocolStub", (SupportsEncoderCudaGraph, small_cls), body)
    assert cls.get_max_frames_per_video is (
        vars(SupportsEncoderCudaGraph)["get_max_frames_per_video"]
    )
    return cls


@pytest.mark.parametrize("case", ["inherited-stub", "answers-none"])
def test_frames_method_stub_or_none_is_a_missing_method(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, vllm_logs, case
):
    from vllm.logger import _print_warning_once
    from vllm.v1.worker.encoder_cudagraph import create_encoder_cudagraph_manager

    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        max_num_batched_tokens=2048,
        compilation={"cudagraph_mm_encoder": True},
    )
    small = make_encoder_cg_model()
    if case == "inherited-stub":
        model = _inherits_protocol_without_frames(type(small))()
        assert model.get_max_frames_per_video() is None  # the protocol's `...`
    else:
        model = small
        model.get_max_frames_per_video = lambda: None
    _print_warning_once.cache_clear()
    for _ in range(2):  # the runner asks for a manager at profile and capture
        mgr = create_encoder_cudagraph_manager(
            vllm_config, torch.device("cpu"), torch.float32, model
        )
        assert mgr is None
    warned = [
        r.getMessage()
        for r in vllm_logs
        if r.levelno == logging.WARNING and "get_max_frames_per_video" in r.getMessage()
    ]
    assert len(warned) == 1, warned
    assert "cudagraph_mm_encoder" in warned[0]
    assert type(model).__name__ in warned[0]


def test_frames_method_stub_unused_without_video(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model
):
    """With video off (limit 0) the frames method is never asked: a model
    whose frames method answers None keeps its image graphs."""
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        compilation={"cudagraph_mm_encoder": True},
        limit_mm_per_prompt={"video": 0},
    )
    model = make_encoder_cg_model()
    model.get_max_frames_per_video = lambda: None
    from vllm.v1.worker.encoder_cudagraph import create_encoder_cudagraph_manager

    mgr = create_encoder_cudagraph_manager(
        vllm_config, torch.device("cpu"), torch.float32, model
    )
    assert mgr is not None and mgr.max_frames_per_batch == 0
    assert mgr.supports_modality("image") and not mgr.supports_modality("video")
