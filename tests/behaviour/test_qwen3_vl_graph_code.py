"""Qwen3-VL's own encoder CUDA graph code on random batches (hypothesis): the real
``prepare_encoder_cudagraph_capture_inputs``, ``prepare_encoder_cudagraph_replay_buffers``
and ``Qwen3_VisionTransformer.prepare_encoder_metadata`` of the real model (qwen3_vl_cpu),
for batches within the manager's packing limits (items <= max_batch_size, video frames
<= max_frames_per_batch, output tokens <= the budget).

The vision tower's backend is set to FLASH_ATTN, the GPU case (it decides how
``max_seqlen`` is computed); nothing here runs attention.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MERGE = 2  # spatial_merge_size of the tiny model
CPU = torch.device("cpu")
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def model(qwen3_vl_model, monkeypatch):
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    monkeypatch.setattr(qwen3_vl_model.visual, "attn_backend", AttentionBackendEnum.FLASH_ATTN)
    return qwen3_vl_model


@st.composite
def limits_and_batch(draw, modality: str):
    """(token_budget, max_batch_size, max_frames_per_batch, grids) with the grids a
    batch the manager could hand to that budget's graph."""
    max_batch = draw(st.integers(1, 4))
    max_frames = draw(st.integers(max_batch if modality == "video" else 0, 12))
    budget = draw(st.integers(max_batch, 160))  # >= max_batch (patch 0008's check)
    grids, tokens, frames = [], 0, 0
    for _ in range(draw(st.integers(1, max_batch))):
        t = draw(st.integers(1, 4)) if modality == "video" else 1
        h, w = (MERGE * draw(st.integers(1, 4)) for _ in range(2))
        item_tokens = t * (h // MERGE) * (w // MERGE)
        fits_frames = modality != "video" or frames + t <= max_frames
        if tokens + item_tokens <= budget and fits_frames:
            grids.append([t, h, w])
            tokens += item_tokens
            frames += t
    if not grids:  # the smallest item always fits a budget >= 1 (and 1 frame)
        grids = [[1, MERGE, MERGE]]
    return budget, max_batch, max_frames, grids


def per_frame_cu_seqlens(grids, num_seqs: int) -> list[int]:
    """Cumulative per-frame patch counts, padded with empty sequences."""
    cu = [0]
    for t, h, w in grids:
        cu += [cu[-1] + h * w * (i + 1) for i in range(t)]
    return cu + [cu[-1]] * (num_seqs + 1 - len(cu))


def batch_kwargs(modality: str, grids):
    key, grid_key = (
        ("pixel_values", "image_grid_thw") if modality == "image"
        else ("pixel_values_videos", "video_grid_thw")
    )
    n = sum(t * h * w for t, h, w in grids)
    return {key: torch.zeros(n, 1536), grid_key: torch.tensor(grids)}


@SETTINGS
@given(case=limits_and_batch("video"))
def test_capture_inputs_cover_budget_and_frames(model, case):
    budget, max_batch, max_frames, _ = case
    capture = model.prepare_encoder_cudagraph_capture_inputs(
        budget, max_batch, max_frames, CPU, torch.float32
    )
    grid = capture.mm_kwargs["image_grid_thw"]
    pixels = capture.mm_kwargs["pixel_values"]
    per_item = math.ceil(budget / max_batch)
    # max_batch items of ceil(budget / max_batch) tokens: at least the budget.
    assert grid == [[1, MERGE, per_item * MERGE]] * max_batch
    assert sum(t * (h // MERGE) * (w // MERGE) for t, h, w in grid) >= budget
    assert pixels.shape[0] == max_batch * per_item * MERGE**2
    buffers = capture.buffers
    num_seqs = max(max_batch, max_frames)
    assert buffers["cu_seqlens"].shape == (num_seqs + 1,)
    assert buffers["cu_seqlens"].tolist() == per_frame_cu_seqlens(grid, num_seqs)
    # Baked at capture: covers one item holding the whole budget.
    assert int(buffers["max_seqlen"]) == budget * MERGE**2
    for key in ("pos_embeds", "rotary_pos_emb_cos", "rotary_pos_emb_sin"):
        assert buffers[key].shape[0] == pixels.shape[0], key


@SETTINGS
@given(modality=st.sampled_from(["image", "video"]), data=st.data())
def test_replay_buffers_fit_the_captured_ones(model, modality, data):
    budget, max_batch, max_frames, grids = data.draw(limits_and_batch(modality))
    capture = model.prepare_encoder_cudagraph_capture_inputs(
        budget, max_batch, max_frames, CPU, torch.float32
    )
    batch = batch_kwargs(modality, grids)
    replay = model.prepare_encoder_cudagraph_replay_buffers(batch, max_batch, max_frames)
    buffers = replay.buffers
    num_seqs = max(max_batch, max_frames)
    # Same length as captured (so the manager's copy fits), values per frame.
    assert buffers["cu_seqlens"].tolist() == per_frame_cu_seqlens(grids, num_seqs)
    assert buffers["cu_seqlens"].shape == capture.buffers["cu_seqlens"].shape
    frame_lens = [h * w for t, h, w in grids for _ in range(t)]
    assert int(buffers["max_seqlen"]) == max(frame_lens)
    assert int(buffers["max_seqlen"]) <= int(capture.buffers["max_seqlen"])
    # Positions: the tower's own, for the unpadded batch, within the captured rows.
    patches = sum(t * h * w for t, h, w in grids)
    assert patches <= capture.mm_kwargs["pixel_values"].shape[0]
    visual = model.visual
    torch.testing.assert_close(buffers["pos_embeds"], visual.fast_pos_embed_interpolate(grids))
    cos, sin = visual.rot_pos_emb(grids)
    torch.testing.assert_close(buffers["rotary_pos_emb_cos"], cos)
    torch.testing.assert_close(buffers["rotary_pos_emb_sin"], sin)
    for key in ("pos_embeds", "rotary_pos_emb_cos", "rotary_pos_emb_sin"):
        assert buffers[key].shape[0] == patches, key
        assert buffers[key].shape[1:] == capture.buffers[key].shape[1:], key


@SETTINGS
@given(data=st.data())
def test_prepare_encoder_metadata(model, data):
    _, _, _, grids = data.draw(limits_and_batch("video"))
    pad = data.draw(st.one_of(st.none(), st.integers(0, 16)))
    meta = model.visual.prepare_encoder_metadata(grids, max_batch_size=pad)
    frames = sum(t for t, _, _ in grids)
    num_seqs = frames if pad is None else max(frames, pad)
    assert meta["cu_seqlens"].tolist() == per_frame_cu_seqlens(grids, num_seqs)
    assert meta["cu_seqlens"].dtype == torch.int32
    lens = np.diff(np.array(meta["cu_seqlens"].tolist()))
    assert int(meta["max_seqlen"]) == int(lens.max())
    override = data.draw(st.integers(1, 10_000))
    baked = model.visual.prepare_encoder_metadata(
        grids, max_batch_size=pad, max_seqlen_override=override
    )
    assert int(baked["max_seqlen"]) == override
    assert baked["max_seqlen"].device.type == "cpu"  # host-resident on a GPU run
