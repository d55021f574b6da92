"""Defects 1, 2 and 7 of issue 16 and 0006's frame check, on the real Qwen3-VL vision
tower and the real EncoderCudaGraphManager under the CPU CUDA-graph emulation
(cuda_graph_emulation.py, qwen3_vl_cpu.py).

``runner_encode`` is what ``GPUModelRunner._execute_mm_encoder`` does with one batch of
one modality: the manager when it supports the modality, else (or when it declines
the batch) the model's ``embed_multimodal``.
"""

from __future__ import annotations

import pytest
import torch
from cuda_graph_emulation import install
from qwen3_vl_cpu import (
    TOLERANCE,
    captured_manager,
    encoder_inputs,
    fa_attention,
    max_abs_diffs,
    per_item_eager,
)

COMPILATION = {
    "cudagraph_mm_encoder": True,
    "encoder_cudagraph_token_budgets": [64, 256],
    "encoder_cudagraph_max_vision_items_per_batch": 2,
    "encoder_cudagraph_max_frames_per_batch": 8,
}
IMAGES = [[1, 8, 8], [1, 8, 12]]
VIDEOS = [[2, 8, 8], [3, 8, 12]]


def runner_encode(mgr, model, emu, modality: str, mm_kwargs) -> list[torch.Tensor]:
    out = None
    with torch.inference_mode():
        if mgr is not None and mgr.supports_modality(modality):
            with fa_attention(model, emu):
                out = mgr.execute(mm_kwargs)
        if out is None:
            out = model.embed_multimodal(**mm_kwargs)
    return list(out)


def snapshot(mgr) -> dict:
    return {
        budget: [meta.input_buffer.clone()]
        + [b.clone() for b in meta.metadata_buffers.values() if b is not None]
        for budget, meta in mgr.budget_graphs.items()
    }


def assert_same_buffers(before: dict, mgr) -> None:
    after = snapshot(mgr)
    for budget, tensors in before.items():
        for old, new in zip(tensors, after[budget]):
            torch.testing.assert_close(new, old, rtol=0, atol=0, equal_nan=True)


@pytest.fixture
def config(make_vllm_config, qwen3_vl_session_dir):
    def make(**kwargs):
        return make_vllm_config(
            qwen3_vl_session_dir, dtype="float32", compilation=COMPILATION, **kwargs
        )

    return make


# -- defect 1: EVS (video pruning) ------------------------------------------------------


def test_evs_no_graph_for_any_modality(qwen3_vl_model, config, monkeypatch, vllm_logs):
    """With EVS every modality takes the model's own path (its embeddings carry the
    position channels EVS appends); the runner gets no manager."""
    from vllm.model_executor.models.interfaces import supports_multimodal_pruning
    from vllm.v1.worker.encoder_cudagraph import create_encoder_cudagraph_manager

    emu = install(monkeypatch)
    model = qwen3_vl_model
    vllm_config = config(video_pruning_rate=0.5)
    mm_config = vllm_config.model_config.multimodal_config
    # The model as built with this config; the runner's flag, computed its way.
    monkeypatch.setattr(model, "is_multimodal_pruning_enabled", True)
    pruning = supports_multimodal_pruning(model) and mm_config.is_multimodal_pruning_enabled()
    assert pruning

    mgr = create_encoder_cudagraph_manager(
        vllm_config, torch.device("cpu"), torch.float32, model, multimodal_pruning=pruning
    )
    assert mgr is None
    assert emu.graphs == []
    warned = [r for r in vllm_logs if "video_pruning_rate" in r.getMessage()]
    assert len(warned) <= 1  # warning_once: once per process

    images = encoder_inputs("image", IMAGES)
    with torch.inference_mode():
        want = list(model.embed_multimodal(**images))
    eager_hidden = per_item_eager(model, images)[0].shape[-1]
    assert want[0].shape[-1] == eager_hidden + 5  # EVS position channels
    got = runner_encode(mgr, model, emu, "image", images)
    assert max_abs_diffs(got, want) == [0.0, 0.0]


def test_evs_graph_path_would_be_wrong(qwen3_vl_model, config, monkeypatch):
    """Negative control for the test above: the graphs, if built under EVS, return
    image embeddings without the position channels."""
    emu = install(monkeypatch)
    model = qwen3_vl_model
    vllm_config = config(video_pruning_rate=0.5)
    monkeypatch.setattr(model, "is_multimodal_pruning_enabled", True)
    mgr = captured_manager(vllm_config, model, emu)
    images = encoder_inputs("image", IMAGES)
    with torch.inference_mode():
        want = list(model.embed_multimodal(**images))
    got = runner_encode(mgr, model, emu, "image", images)
    assert mgr.graph_hits == len(IMAGES)
    assert max(max_abs_diffs(got, want)) == float("inf")


# -- defect 2: precomputed embeddings ---------------------------------------------------


@pytest.mark.parametrize("modality, grids", [("image", IMAGES), ("video", VIDEOS)])
def test_precomputed_embeddings_run_eagerly(
    qwen3_vl_model, config, monkeypatch, modality, grids
):
    emu = install(monkeypatch)
    model = qwen3_vl_model
    mgr = captured_manager(config(), model, emu)
    assert mgr.supports_modality(modality)
    before = snapshot(mgr)
    hidden = per_item_eager(model, encoder_inputs("image", [[1, 8, 8]]))[0].shape[-1]
    tokens = [t * h * w // 4 for t, h, w in grids]
    embeds = torch.randn(sum(tokens), hidden)
    mm_kwargs = {
        f"{modality}_embeds": embeds,
        f"{modality}_grid_thw": torch.tensor(grids),
    }
    got = runner_encode(mgr, model, emu, modality, mm_kwargs)
    assert max_abs_diffs(got, list(embeds.split(tokens))) == [0.0, 0.0]
    assert (mgr.graph_hits, mgr.graph_misses) == (0, 0)
    assert all(g.replays == 0 for g in emu.graphs)
    assert_same_buffers(before, mgr)


# -- defect 7: a capture-unsafe ViT attention backend ------------------------------------


def _vit_backends(model) -> set:
    from vllm.model_executor.layers.attention.mm_encoder_attention import (
        MMEncoderAttention,
    )

    return {m.attn_backend for m in model.modules() if isinstance(m, MMEncoderAttention)}


def test_torch_sdpa_keeps_graphs_off(qwen3_vl_model, config, monkeypatch, vllm_logs):
    from vllm.logger import _print_warning_once
    from vllm.v1.attention.backends.registry import AttentionBackendEnum
    from vllm.v1.worker.encoder_cudagraph import create_encoder_cudagraph_manager

    emu = install(monkeypatch)
    model = qwen3_vl_model
    # The CPU platform's default ViT backend: what mm_encoder_attn_backend=TORCH_SDPA
    # (or a platform default) gives on a GPU.
    assert _vit_backends(model) == {AttentionBackendEnum.TORCH_SDPA}
    _print_warning_once.cache_clear()
    for _ in range(2):
        mgr = create_encoder_cudagraph_manager(
            config(), torch.device("cpu"), torch.float32, model
        )
        assert mgr is None
    assert emu.graphs == [] and emu.violations == []
    warned = [r for r in vllm_logs if "TORCH_SDPA" in r.getMessage()]
    assert len(warned) == 1
    assert "mm_encoder_attn_backend" in warned[0].getMessage()
    assert "cudagraph_mm_encoder" in warned[0].getMessage()
    # The batch still runs, eagerly, through the model's own path.
    images = encoder_inputs("image", IMAGES)
    got = runner_encode(mgr, model, emu, "image", images)
    assert max(max_abs_diffs(got, per_item_eager(model, images))) < 1e-5


def test_torch_sdpa_capture_is_a_host_sync(
    qwen3_vl_model, config, monkeypatch, make_cg_manager
):
    """Why: capturing with TORCH_SDPA reads cu_seqlens on the host (the detector sees
    it); with a flash-style backend the capture is clean."""
    emu = install(monkeypatch)
    model = qwen3_vl_model
    mgr = make_cg_manager(config(), model)  # past the start-up decision
    with torch.inference_mode():
        mgr.capture()
    kinds = {v.kind for v in emu.violations}
    assert "tolist" in kinds, [str(v) for v in emu.violations]
    assert any("vit_attn_wrappers" in v.where for v in emu.violations)

    clean = install(monkeypatch)
    captured_manager(config(), model, clean)
    assert clean.graphs and clean.violations == []


def test_capture_safe_backend_gets_graphs(qwen3_vl_model, config, monkeypatch):
    from vllm.model_executor.layers.attention.mm_encoder_attention import (
        MMEncoderAttention,
    )
    from vllm.v1.attention.backends.registry import AttentionBackendEnum
    from vllm.v1.worker.encoder_cudagraph import create_encoder_cudagraph_manager

    for m in qwen3_vl_model.modules():
        if isinstance(m, MMEncoderAttention):
            monkeypatch.setattr(m, "attn_backend", AttentionBackendEnum.FLASH_ATTN)
    mgr = create_encoder_cudagraph_manager(
        config(), torch.device("cpu"), torch.float32, qwen3_vl_model
    )
    assert mgr is not None


# -- 0006: a video with more frames than the graphs hold ---------------------------------


def test_over_long_video_runs_eagerly(qwen3_vl_model, make_vllm_config,
                                      qwen3_vl_session_dir, monkeypatch):
    emu = install(monkeypatch)
    model = qwen3_vl_model
    vllm_config = make_vllm_config(
        qwen3_vl_session_dir,
        dtype="float32",
        compilation={**COMPILATION, "encoder_cudagraph_max_frames_per_batch": 2},
    )
    mgr = captured_manager(vllm_config, model, emu)
    videos = encoder_inputs("video", [[3, 8, 8], [2, 8, 8], [2, 8, 12]])
    got = runner_encode(mgr, model, emu, "video", videos)
    diffs = max_abs_diffs(got, per_item_eager(model, videos))
    assert diffs[0] < 1e-5  # the over-long one ran eagerly
    assert max(diffs) < TOLERANCE
    # 3 frames > 2: eager; the two 2-frame videos replay one by one.
    assert (mgr.graph_hits, mgr.graph_misses) == (2, 1)



# -- issue 24, defect 4 (0008): an explicit item limit with auto budgets -----------------


@pytest.mark.parametrize("items", [128, 100, 50])
def test_item_limit_auto_would_pick_loads(
    make_vllm_config, qwen3_vl_session_dir, monkeypatch, items, make_cg_manager
):
    """Qwen3-VL at 8192 tokens: auto picks 128 items (8192 // 64) over budgets from 64.
    Giving that limit explicitly (with auto budgets) loads; the auto budgets are raised
    to at least the limit (upstream 0.22+), so every captured item has a token."""
    from helpers import qwen3_vl_protocol_object

    # The tiny model declares 4096 positions; no forward runs here.
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")

    def config(**compilation):
        return make_vllm_config(
            qwen3_vl_session_dir, max_model_len=8192, max_num_batched_tokens=8192,
            compilation={"cudagraph_mm_encoder": True, **compilation},
        )

    auto = config()
    picked = make_cg_manager(auto, qwen3_vl_protocol_object(auto))
    assert picked.max_batch_size == 128
    assert picked.token_budgets == [64, 128, 256, 512, 1024, 2048, 4096, 8192]
    vllm_config = config(encoder_cudagraph_max_vision_items_per_batch=items)
    mgr = make_cg_manager(vllm_config, qwen3_vl_protocol_object(vllm_config))
    assert mgr.max_batch_size == items
    assert mgr.token_budgets == sorted({max(b, items) for b in picked.token_budgets})


def test_item_limit_above_user_budget_names_the_user_keys(
    make_vllm_config, qwen3_vl_session_dir, make_cg_manager
):
    from helpers import qwen3_vl_protocol_object

    vllm_config = make_vllm_config(
        qwen3_vl_session_dir, max_model_len=4096, max_num_batched_tokens=4096,
        compilation={"cudagraph_mm_encoder": True,
                     "encoder_cudagraph_token_budgets": [32, 1024],
                     "encoder_cudagraph_max_vision_items_per_batch": 64},
    )
    with pytest.raises(ValueError) as exc_info:
        make_cg_manager(vllm_config, qwen3_vl_protocol_object(vllm_config))
    message = str(exc_info.value)
    assert "encoder_cudagraph_max_vision_items_per_batch (64)" in message
    assert "encoder_cudagraph_token_budgets" in message and "(32)" in message


def test_item_limit_above_auto_budgets_names_only_the_item_key(
    make_vllm_config, qwen3_vl_session_dir, make_cg_manager
):
    from helpers import qwen3_vl_protocol_object

    vllm_config = make_vllm_config(
        qwen3_vl_session_dir, max_model_len=512, max_num_batched_tokens=2048,
        compilation={"cudagraph_mm_encoder": True,
                     "encoder_cudagraph_max_vision_items_per_batch": 600},
    )
    with pytest.raises(ValueError) as exc_info:
        make_cg_manager(vllm_config, qwen3_vl_protocol_object(vllm_config))
    message = str(exc_info.value)
    assert "encoder_cudagraph_max_vision_items_per_batch (600)" in message
    assert "(512)" in message
    assert "encoder_cudagraph_token_budgets" not in message


# -- issue 24, carry from 0.34 (0004): frames per graph clamped per budget ---------------


def test_frames_per_graph_clamped_to_budget(qwen3_vl_model, make_vllm_config,
                                            qwen3_vl_session_dir, monkeypatch):
    """Each budget's graph holds min(max_frames_per_batch, token_budget) frames (a frame
    yields at least one token): the 64-token graph has 64 sequences, not 100. Videos of
    one token per frame fill each graph to its clamp and match the eager path."""
    emu = install(monkeypatch)
    model = qwen3_vl_model
    vllm_config = make_vllm_config(
        qwen3_vl_session_dir, dtype="float32",
        compilation={**COMPILATION, "encoder_cudagraph_max_frames_per_batch": 100},
    )
    mgr = captured_manager(vllm_config, model, emu)
    assert mgr.max_frames_per_batch == 100
    sequences = {b: m.metadata_buffers["cu_seqlens"].numel() - 1
                 for b, m in mgr.budget_graphs.items()}
    assert sequences == {64: 64, 256: 100}
    assert {b: m.max_frames_per_batch for b, m in mgr.budget_graphs.items()} == sequences
    # 2x2 patches per frame = 1 token per frame.
    for grids, budget in [([[30, 2, 2], [34, 2, 2]], 64), ([[100, 2, 2]], 256)]:
        replays = {b: m.graph.replays for b, m in mgr.budget_graphs.items()}
        videos = encoder_inputs("video", grids)
        got = runner_encode(mgr, model, emu, "video", videos)
        assert max(max_abs_diffs(got, per_item_eager(model, videos))) < TOLERANCE
        assert mgr.budget_graphs[budget].graph.replays == replays[budget] + 1
    assert (mgr.graph_hits, mgr.graph_misses) == (3, 0)
    assert emu.violations == []
