"""Behaviour of patch 0006 (overlay, upstream issue #43403): a video that
needs more frames than the encoder CUDA graphs were captured for runs
eagerly, counts as a miss and is logged once, instead of failing at
replay with "The size of tensor a (3) must match the size of tensor b (9)".

Real EncoderCudaGraphManager, real VllmConfig (tiny Qwen3-VL dir), a small
protocol model on CPU; the CUDA graph is replaced by an object that
re-runs the same forward on the captured buffers. Kept here: the log, the
untouched buffers, zero frame capacity, the auto rule. Over-long videos
beside fitting ones and batches split on the frame limit run with the real
tower under the CUDA-graph emulation (test_encoder_cudagraph_emulated.py).
"""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch
from helpers import qwen3_vl_protocol_object

FALLBACK_TEXT = "frames but encoder CUDA graphs were captured for"


class _CpuGraph:
    def __init__(self):
        self.replay_fn = None
        self.replays = 0

    def replay(self):
        self.replays += 1
        self.replay_fn()


def _fallback_logs(records):
    return [r for r in records if FALLBACK_TEXT in r.getMessage()]


@pytest.fixture
def make_manager(tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model,
                 monkeypatch, make_cg_manager):
    """Factory: real manager, captured on CPU, for the given settings."""
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _CpuGraph)
    monkeypatch.setattr(torch.cuda, "graph", lambda g, pool=None: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: ("cpu-pool",))

    def make(max_frames=None, items=2, budgets=(16, 64), **model_kwargs):
        compilation = {
            "cudagraph_mm_encoder": True,
            "encoder_cudagraph_token_budgets": list(budgets),
            "encoder_cudagraph_max_vision_items_per_batch": items,
        }
        if max_frames is not None:
            compilation["encoder_cudagraph_max_frames_per_batch"] = max_frames
        extra = model_kwargs.pop("config_kwargs", {})
        vllm_config = make_vllm_config(
            tiny_qwen3_vl_dir, compilation=compilation, **extra
        )
        model = make_encoder_cg_model(min_budget=4, **model_kwargs)
        mgr = make_cg_manager(vllm_config, model)
        mgr.capture()
        for meta in mgr.budget_graphs.values():
            meta.graph.replay_fn = lambda meta=meta: meta.output_buffer.copy_(
                model.encode(meta.input_buffer)
            )
        return mgr, model

    return make


def _video(grid, flat=12):
    n = sum(t * h * w for t, h, w in grid)
    return {"pixel_values_videos": torch.randn(n, flat), "video_grid_thw": grid}


def _expected(model, mm_kwargs):
    key = "pixel_values_videos" if "pixel_values_videos" in mm_kwargs else (
        "pixel_values"
    )
    grid_key = "video_grid_thw" if key == "pixel_values_videos" else "image_grid_thw"
    out, off = [], 0
    for t, h, w in mm_kwargs[grid_key]:
        n = t * h * w
        out.append(model.encode(mm_kwargs[key][off : off + n]))
        off += n
    return out


def _check(result, expected):
    assert len(result) == len(expected)
    for got, want in zip(result, expected):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want)


def _eager_grids(model):
    return [c[1][0] for c in model.calls if c[0] == "eager"]


def _replays(mgr):
    return sum(m.graph.replays for m in mgr.budget_graphs.values())


def test_issue_43403_reproducer_runs_eagerly(make_manager, vllm_logs):
    """max_frames_per_batch=2 and a longer video: eager + miss, no replay,
    graph buffers untouched (decided before any copy)."""
    torch.manual_seed(0)
    mgr, model = make_manager(max_frames=2)
    assert mgr.max_frames_per_batch == 2
    cu_before = {b: m.metadata_buffers["cu_seqlens"].clone()
                 for b, m in mgr.budget_graphs.items()}
    in_before = {b: m.input_buffer.clone() for b, m in mgr.budget_graphs.items()}
    replays_before = _replays(mgr)

    video = _video([[9, 2, 2]])  # 9 frames, 9 tokens: fits a token budget
    with torch.inference_mode():
        result = mgr.execute(video)
    _check(result, _expected(model, video))
    assert mgr.get_cumulative_stats()["graph_misses"] == 1
    assert mgr.get_cumulative_stats()["graph_hits"] == 0
    assert _eager_grids(model) == [[[9, 2, 2]]]
    assert _replays(mgr) == replays_before
    for b, meta in mgr.budget_graphs.items():
        assert torch.equal(meta.metadata_buffers["cu_seqlens"], cu_before[b])
        assert torch.equal(meta.input_buffer, in_before[b])

    logs = _fallback_logs(vllm_logs)
    assert len(logs) == 1
    assert logs[0].levelno == logging.INFO
    msg = logs[0].getMessage()
    assert "needs 9 frames" in msg
    assert "captured for 2 frames per batch" in msg
    assert "running it eagerly" in msg
    assert "encoder_cudagraph_max_frames_per_batch" in msg


def test_log_once_misses_per_item(make_manager, vllm_logs):
    torch.manual_seed(0)
    mgr, model = make_manager(max_frames=4)
    with torch.inference_mode():
        for grid in ([[5, 2, 2]], [[7, 2, 2], [6, 2, 2]], [[5, 2, 2]]):
            video = _video(grid)
            _check(mgr.execute(video), _expected(model, video))
    stats = mgr.get_cumulative_stats()
    assert stats["graph_misses"] == 4  # per item, like other misses
    assert stats["graph_hits"] == 0
    assert stats["hit_rate"] == 0.0
    assert len(_fallback_logs(vllm_logs)) == 1


@pytest.mark.parametrize(
    "settings",
    [
        {"max_frames": 0},
        {"config_kwargs": {"limit_mm_per_prompt": {"video": 0}}},
    ],
    ids=["user-zero", "video-limit-zero"],
)
def test_video_at_execute_with_zero_frames(make_manager, vllm_logs, settings):
    torch.manual_seed(0)
    mgr, model = make_manager(**settings)
    assert mgr.max_frames_per_batch == 0
    assert not mgr.supports_modality("video")
    video = _video([[1, 4, 4], [2, 2, 2]])
    with torch.inference_mode():
        result = mgr.execute(video)
    _check(result, _expected(model, video))
    assert mgr.graph_misses == 2
    assert mgr.graph_hits == 0
    logs = _fallback_logs(vllm_logs)
    assert len(logs) == 1
    assert "captured for 0 frames per batch" in logs[0].getMessage()
    # images keep replaying
    image = {"pixel_values": torch.randn(16, 12), "image_grid_thw": [[1, 4, 4]]}
    with torch.inference_mode():
        _check(mgr.execute(image), _expected(model, image))
    assert mgr.graph_hits == 1


def test_auto_frames_route_long_video(make_manager):
    """With the 0004 auto value (items x frames per video) a video longer
    than the model's per-video maximum times items is routed eagerly."""
    torch.manual_seed(0)
    mgr, model = make_manager(items=2, max_frames_per_video=3)
    assert mgr.max_frames_per_batch == 6
    video = _video([[6, 2, 2], [7, 2, 2]])
    with torch.inference_mode():
        _check(mgr.execute(video), _expected(model, video))
    assert (mgr.graph_hits, mgr.graph_misses) == (1, 1)
    assert _eager_grids(model) == [[[7, 2, 2]]]


def test_qwen3_vl_per_item_frames(tiny_qwen3_vl_dir, make_vllm_config):
    """Qwen3-VL reports one frame per temporal patch (1 per image)."""
    from vllm.model_executor.models.interfaces import supports_encoder_cudagraph
    vllm_config = make_vllm_config(tiny_qwen3_vl_dir)
    obj = qwen3_vl_protocol_object(vllm_config)
    assert supports_encoder_cudagraph(obj)
    video = {
        "pixel_values_videos": torch.zeros(4 * 24 + 2 * 4, 1),
        "video_grid_thw": torch.tensor([[4, 4, 6], [2, 2, 2]]),
    }
    assert obj.get_encoder_cudagraph_per_item_frames(video) == [4, 2]
    image = {"pixel_values": torch.zeros(32, 1), "image_grid_thw": [[1, 4, 4]] * 2}
    assert obj.get_encoder_cudagraph_per_item_frames(image) == [1, 1]
