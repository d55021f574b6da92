"""The encoder CUDA graph path (patches 0002, 0004, 0006) with the real Qwen3-VL vision
tower and the real EncoderCudaGraphManager, on the CPU under the CUDA-graph emulation
(cuda_graph_emulation.py: replay re-runs only the recorded kernels on the captured
buffers; Python values are baked at capture).

Every budget is captured; each batch's replay is compared per item with the model's own
eager path (vLLM's untouched CPU attention). Graph capture and graph-path eager
fallbacks use flash-attn semantics (qwen3_vl_cpu.fa_attention), as a GPU run does.
The negative controls show the harness fails when the graph path is wrong.
"""

from __future__ import annotations

import random

import pytest
import torch
from helpers import vllm_config_for
from cuda_graph_emulation import emulate_cuda_graphs
from qwen3_vl_cpu import (
    assert_matches_eager,
    captured_manager,
    encoder_inputs,
    leave_cu_seqlens_out,
    run_graph_path,
)

BUDGETS = [64, 128, 256]  # output tokens; x4 patches (spatial merge 2)
MAX_ITEMS = 3
MAX_FRAMES = 8


def graph_config(model_dir, budgets=BUDGETS, **compilation):
    return vllm_config_for(model_dir, dtype="float32", compilation={
        "cudagraph_mm_encoder": True,
        "encoder_cudagraph_token_budgets": list(budgets),
        "encoder_cudagraph_max_vision_items_per_batch": MAX_ITEMS,
        "encoder_cudagraph_max_frames_per_batch": MAX_FRAMES,
        **compilation,
    })


# id: (modality, grids [t, h, w] in patches, graph hits, misses, replays per budget)
CASES = {
    "image fills a budget exactly": ("image", [[1, 16, 16]], 1, 0, {64: 1}),
    "images of different sizes": (
        "image", [[1, 16, 12], [1, 8, 8], [1, 8, 16]], 3, 0, {128: 1}),
    "more images than max_batch_size": (
        "image", [[1, 8, 8], [1, 8, 12], [1, 8, 8], [1, 12, 8], [1, 8, 8]], 5, 0, {64: 2}),
    "a video": ("video", [[4, 8, 8]], 1, 0, {64: 1}),
    "several videos": ("video", [[2, 8, 8], [3, 8, 12], [1, 16, 8]], 3, 0, {256: 1}),
    "a video padded to a larger budget": ("video", [[2, 12, 12]], 1, 0, {128: 1}),
    "a video longer than max_frames_per_batch": (
        "video", [[10, 4, 4], [2, 8, 8]], 1, 1, {64: 1}),
    "a batch split on the frame limit": ("video", [[5, 4, 4], [5, 4, 4]], 2, 0, {64: 2}),
    "an image bigger than the largest budget": ("image", [[1, 48, 24]], 0, 1, {}),
    # 320 tokens > 256, 5 frames within the frame limit: a miss on tokens
    "a video bigger than the largest budget": ("video", [[5, 16, 16]], 0, 1, {}),
}
DIFFS: dict[str, float] = {}


@pytest.fixture(scope="module")
def graphs(qwen3_vl_session_dir, qwen3_vl_model):
    """(manager, emulation): every budget captured once for this module."""
    with emulate_cuda_graphs() as emu:
        mgr = captured_manager(graph_config(qwen3_vl_session_dir), qwen3_vl_model, emu)
    yield mgr, emu
    print("\nreplay vs eager, max abs diff per case:")
    for case, diff in DIFFS.items():
        print(f"  {case:45} {diff:.2e}")


def _replays(mgr) -> dict[int, int]:
    return {b: m.graph.replays for b, m in mgr.budget_graphs.items()}


def _run_case(mgr, emu, model, modality, grids, seed=0):
    before = (mgr.graph_hits, mgr.graph_misses, _replays(mgr))
    mm = encoder_inputs(modality, grids, seed=seed)
    got = run_graph_path(mgr, model, emu, mm)
    replays = {b: n - before[2][b] for b, n in _replays(mgr).items() if n > before[2][b]}
    return mm, got, (mgr.graph_hits - before[0], mgr.graph_misses - before[1], replays)


def test_every_budget_captured_without_violations(graphs):
    mgr, emu = graphs
    assert sorted(mgr.budget_graphs) == BUDGETS
    assert mgr.max_batch_size == MAX_ITEMS and mgr.max_frames_per_batch == MAX_FRAMES
    assert emu.violations == [], [str(v) for v in emu.violations]
    for budget, meta in mgr.budget_graphs.items():
        assert meta.graph.num_kernels > 100, budget  # the whole tower, not a stub
        # cu_seqlens holds a sequence per frame (0002), not per item
        assert meta.metadata_buffers["cu_seqlens"].numel() == MAX_FRAMES + 1


@pytest.mark.parametrize("case", list(CASES))
def test_replay_matches_eager(graphs, qwen3_vl_model, case):
    mgr, emu = graphs
    modality, grids, hits, misses, replays = CASES[case]
    mm, got, counted = _run_case(mgr, emu, qwen3_vl_model, modality, grids)
    DIFFS[case] = assert_matches_eager(qwen3_vl_model, mm, got)
    assert counted == (hits, misses, replays)
    assert emu.violations == []


def test_image_after_videos(graphs, qwen3_vl_model):
    """Buffers left by a video batch (more sequences) do not leak into an image."""
    mgr, emu = graphs
    _run_case(mgr, emu, qwen3_vl_model, "video", [[3, 8, 8], [4, 4, 8]], seed=1)
    mm, got, counted = _run_case(mgr, emu, qwen3_vl_model, "image", [[1, 8, 12]], seed=2)
    DIFFS["an image after videos"] = assert_matches_eager(qwen3_vl_model, mm, got)
    assert counted == (1, 0, {64: 1})


@pytest.mark.parametrize("seed", range(4))
def test_random_batches_match_eager(graphs, qwen3_vl_model, seed):
    """Seeded random batches (sizes, counts, frames; some over a limit): every item
    matches eager, every item is a hit or a miss."""
    mgr, emu = graphs
    rng = random.Random(seed)
    modality = rng.choice(["image", "video"])
    grids = [[rng.randint(1, 6) if modality == "video" else 1,
              rng.choice([4, 8, 12, 16]), rng.choice([4, 8, 12, 16])]
             for _ in range(rng.randint(1, 5))]
    hits, misses = mgr.graph_hits, mgr.graph_misses
    mm, got, _ = _run_case(mgr, emu, qwen3_vl_model, modality, grids, seed=seed)
    assert_matches_eager(qwen3_vl_model, mm, got)
    assert (mgr.graph_hits - hits) + (mgr.graph_misses - misses) == len(grids), grids
    assert emu.violations == []


# batches in order: (modality, grids, replays per budget); largest, smallest, middle, ...
INTERLEAVED = [
    ("video", [[2, 8, 8], [3, 8, 12], [1, 16, 8]], {256: 1}),
    ("image", [[1, 8, 12]], {64: 1}),
    ("image", [[1, 16, 12], [1, 8, 8], [1, 8, 16]], {128: 1}),
    ("video", [[4, 8, 8]], {64: 1}),
    # 4 items of 64 tokens, 3 items per batch: 256 then 64 within one call
    ("image", [[1, 16, 16]] * 4, {256: 1, 64: 1}),
]


def test_budgets_share_static_buffers_interleaved(graphs, qwen3_vl_model):
    """0009: every budget's static input/output/metadata buffers are prefix views of
    the largest's (one storage); replays of different budgets, interleaved (and two
    budgets within one call), still match eager item by item."""
    mgr, emu = graphs
    largest = mgr.budget_graphs[max(BUDGETS)]
    for budget, meta in mgr.budget_graphs.items():
        assert meta.input_buffer.data_ptr() == largest.input_buffer.data_ptr(), budget
        assert meta.output_buffer.data_ptr() == largest.output_buffer.data_ptr(), budget
        for key, buf in meta.metadata_buffers.items():
            if buf is not None and buf.ndim > 0:
                assert buf.data_ptr() == largest.metadata_buffers[key].data_ptr(), (
                    budget, key)
    for seed, (modality, grids, replays) in enumerate(INTERLEAVED):
        mm, got, counted = _run_case(mgr, emu, qwen3_vl_model, modality, grids,
                                     seed=10 + seed)
        DIFFS[f"interleaved {seed}: {modality} {replays}"] = assert_matches_eager(
            qwen3_vl_model, mm, got)
        assert counted == (len(grids), 0, replays), (seed, counted)
    assert emu.violations == []


# ---------------------------------------------------------------------------
# Negative controls: the same harness must fail on a wrong graph path
# ---------------------------------------------------------------------------

CONTROL_BUDGETS = [64, 128]
CONTROL_CASE = ("image", [[1, 16, 12], [1, 8, 8], [1, 8, 16]])  # 96 tokens -> 128


def test_control_cu_seqlens_left_out_of_replay_buffers(graphs, qwen3_vl_model,
                                                       monkeypatch):
    mgr, emu = graphs
    model = qwen3_vl_model
    # A known stale cu_seqlens in the 128 graph: one video of 2 frames of 144 patches.
    _run_case(mgr, emu, model, "video", [[2, 12, 12]])
    leave_cu_seqlens_out(monkeypatch, model)
    mm, got, _ = _run_case(mgr, emu, model, *CONTROL_CASE)
    with pytest.raises(AssertionError, match="graph path vs eager"):
        assert_matches_eager(model, mm, got)


def test_control_max_seqlen_baked_too_small(qwen3_vl_session_dir, qwen3_vl_model):
    model = qwen3_vl_model
    with emulate_cuda_graphs() as emu:
        mgr = captured_manager(graph_config(qwen3_vl_session_dir, CONTROL_BUDGETS),
                               model, emu, max_seqlen_override=16)
    mm, got, _ = _run_case(mgr, emu, model, *CONTROL_CASE)
    assert emu.violations == []
    assert any(torch.isnan(g).any() for g in got)  # rows past max_seqlen: not computed
    with pytest.raises(AssertionError, match="graph path vs eager"):
        assert_matches_eager(model, mm, got)


def test_control_cpu_attention_captured_as_is(
    qwen3_vl_session_dir, qwen3_vl_model, make_cg_manager
):
    """vLLM's CPU ViT attention reads cu_seqlens on the host: reported, and its
    Python split of the sequences is baked, so other batches come out wrong."""
    model = qwen3_vl_model
    config = graph_config(qwen3_vl_session_dir, CONTROL_BUDGETS)
    with emulate_cuda_graphs() as emu:
        mgr = make_cg_manager(config, model)
        mgr.capture()
    kinds = {(v.kind, v.where.split(":")[0].rsplit("/", 1)[-1]) for v in emu.violations}
    assert ("tolist", "vit_attn_wrappers.py") in kinds, kinds
    mm = encoder_inputs(*CONTROL_CASE)
    with torch.inference_mode():
        got = mgr.execute(mm)
    with pytest.raises(AssertionError, match="graph path vs eager"):
        assert_matches_eager(model, mm, got)
