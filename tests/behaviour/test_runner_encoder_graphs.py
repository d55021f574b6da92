"""Issue 24, defects 1 and 2 (patch 0009): the encoder CUDA graph manager the model
runner keeps, through the real ``GPUModelRunner`` methods in the engine's order.

vLLM's own ``CPUModelRunner`` (a ``GPUModelRunner`` subclass) with the real tiny
Qwen3-VL (``qwen3_vl_cpu.py``) under the CPU CUDA-graph emulation
(``cuda_graph_emulation.py``). The engine's order, as ``gpu_worker`` and
``EngineCore`` call them::

    runner.profile_cudagraph_memory()      # Worker.determine_available_memory
    Worker.update_max_model_len(n)         # only when --max-model-len -1 was fitted
    runner.capture_model()                 # Worker.compile_or_warm_up_model
    runner._execute_mm_encoder(sched_out)  # every step with encoder inputs

Stubbed, device plumbing only (none of it is under test): what conftest's
``device_stubs`` and ``make_cpu_runner`` stub (runner_lifecycle.py lists it:
``torch.cuda.mem_get_info``, ``torch.accelerator.synchronize`` / ``empty_cache``,
``gpu_model_runner.graph_capture`` and ``lock_workspace``,
``current_platform.graph_pool_handle``, the decoder's capture list
``cudagraph_dispatcher.get_capture_descs() -> []``: no decoder graphs, weight loading),
and here the profiling KV cache (``_init_minimal_kv_cache_for_profiling`` /
``_cleanup_profiling_kv_cache``). The ViT attention layers report FLASH_ATTN (the CPU
default, TORCH_SDPA, keeps graphs off) and run flash-attn semantics (``fa_attention``)
whenever a graph may be captured or replayed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from qwen3_vl_cpu import (
    build_qwen3_vl,
    encoder_inputs,
    fa_attention,
    max_abs_diffs,
    per_item_eager,
    split_items,
)

COMPILATION = {"cudagraph_mm_encoder": True, "encoder_cudagraph_max_vision_items_per_batch": 2}
IMAGES = [[1, 8, 8], [1, 8, 12]]


@pytest.fixture
def make_runner(make_cpu_runner, monkeypatch):
    """Factory: ``make_runner(vllm_config, model, mode)`` -> the real CPUModelRunner
    with ``model`` loaded and the decoder's cudagraph_mode ``mode`` (conftest's
    ``make_cpu_runner``); here the ViT attention layers report FLASH_ATTN for the
    runner's whole life, and the profiling KV cache is not made."""
    from vllm.model_executor.layers.attention.mm_encoder_attention import (
        MMEncoderAttention,
    )
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    def make(vllm_config, model, mode: str):
        runner = make_cpu_runner(vllm_config, model, mode)
        for m in model.modules():
            if isinstance(m, MMEncoderAttention):
                monkeypatch.setattr(m, "attn_backend", AttentionBackendEnum.FLASH_ATTN)
        monkeypatch.setattr(runner, "_init_minimal_kv_cache_for_profiling", lambda: None)
        monkeypatch.setattr(runner, "_cleanup_profiling_kv_cache", lambda: None)
        return runner

    return make


def scheduler_output(runner, model, modality: str, mm_kwargs):
    """A SchedulerOutput that schedules every item of ``mm_kwargs`` for the encoder
    of one request, with the request's features as the engine builds them."""
    from transformers import BatchFeature

    from vllm.model_executor.models.qwen2_vl import _create_qwen2vl_field_factory
    from vllm.multimodal.inputs import (
        MultiModalFeatureSpec,
        MultiModalKwargsItems,
        PlaceholderRange,
    )

    merge = model.visual.spatial_merge_size
    items = MultiModalKwargsItems.from_hf_inputs(
        BatchFeature(dict(mm_kwargs)), _create_qwen2vl_field_factory(merge)(mm_kwargs)
    )[modality]
    features, offset = [], 0
    for i, (item, one) in enumerate(zip(items, split_items(mm_kwargs))):
        t, h, w = next(iter(v for k, v in one.items() if k.endswith("grid_thw")))[0]
        length = t * h * w // merge**2
        features.append(MultiModalFeatureSpec(
            data=item, modality=modality, identifier=f"{modality}-{i}",
            mm_position=PlaceholderRange(offset=offset, length=length)))
        offset += length
    runner.requests["req-0"] = SimpleNamespace(mm_features=features)
    return SimpleNamespace(scheduled_encoder_inputs={"req-0": list(range(len(items)))})


def encode(runner, model, emu, modality, mm_kwargs):
    out = scheduler_output(runner, model, modality, mm_kwargs)
    with torch.inference_mode(), fa_attention(model, emu):
        return runner._execute_mm_encoder(out)


@pytest.fixture
def model_for(make_vllm_config, qwen3_vl_session_dir):
    """(vllm_config, model built with it): the model reads its own config (frames
    per video from max_model_len), as a model loaded by the engine does."""

    def make(max_model_len: int = 512, **kwargs):
        vllm_config = make_vllm_config(
            qwen3_vl_session_dir, max_model_len=max_model_len, dtype="float32",
            compilation=COMPILATION, **kwargs)
        return vllm_config, build_qwen3_vl(vllm_config)

    return make


# -- defect 1: decoder cudagraph_mode NONE -------------------------------------------


def test_mode_none_first_image_runs_eagerly(model_for, device_stubs, make_runner,
                                            monkeypatch):
    """cudagraph_mm_encoder on, decoder graphs off: capture_model captures nothing,
    so the runner must not dispatch to a manager (0.19.1: eager). Before the fix the
    profiling pass left a manager with zero graphs that claimed images, and the first
    image ended in ``assert output is not None``."""
    emu = device_stubs
    vllm_config, model = model_for()
    runner = make_runner(vllm_config, model, "NONE")
    with fa_attention(model, emu):
        profiled = runner.profile_cudagraph_memory()
        captured = runner.capture_model()
    images = encoder_inputs("image", IMAGES)
    got = encode(runner, model, emu, "image", images)
    assert max(max_abs_diffs(got, per_item_eager(model, images))) < 1e-4
    # As on 0.19.1: no encoder graphs, no manager, nothing counted in the estimate.
    assert (profiled, captured) == (0, 0)
    assert emu.graphs == []
    assert runner.encoder_cudagraph_manager is None


def test_profiling_keeps_no_manager(model_for, device_stubs, make_runner, monkeypatch):
    """Profiling captures with a manager of its own and keeps nothing; capture_model
    builds the runner's manager, which then replays."""
    emu = device_stubs
    vllm_config, model = model_for()
    runner = make_runner(vllm_config, model, "FULL_AND_PIECEWISE")
    with fa_attention(model, emu):
        runner.profile_cudagraph_memory()
    profiled = len(emu.graphs)
    assert profiled > 0
    assert runner.encoder_cudagraph_manager is None
    with fa_attention(model, emu):
        runner.capture_model()
    mgr = runner.encoder_cudagraph_manager
    assert mgr is not None and mgr.is_captured()
    assert len(emu.graphs) == 2 * profiled
    images = encoder_inputs("image", IMAGES)
    got = encode(runner, model, emu, "image", images)
    assert mgr.graph_hits == len(IMAGES)
    assert max(max_abs_diffs(got, per_item_eager(model, images))) < 1e-4


def test_uncaptured_manager_is_not_dispatched(model_for, device_stubs, make_runner,
                                              monkeypatch):
    """A manager without graphs (built, never captured) leaves the batch to the
    model's eager path instead of ending in ``assert output is not None``."""
    emu = device_stubs
    vllm_config, model = model_for()
    runner = make_runner(vllm_config, model, "FULL_AND_PIECEWISE")
    runner._init_encoder_cudagraph_manager()
    mgr = runner.encoder_cudagraph_manager
    assert mgr is not None and mgr.supports_modality("image") and not mgr.is_captured()
    images = encoder_inputs("image", IMAGES)
    got = encode(runner, model, emu, "image", images)
    assert (mgr.graph_hits, mgr.graph_misses) == (0, 0)
    assert max(max_abs_diffs(got, per_item_eager(model, images))) < 1e-4


# -- defect 2: max_model_len auto-fit between profiling and capture --------------------


def test_graphs_follow_auto_fitted_max_model_len(
    model_for, device_stubs, make_runner, monkeypatch, make_cg_manager
):
    """--max-model-len -1: profiled at the model's length, fitted to memory, then
    Worker.update_max_model_len (shared model config + runner) before capture_model.
    The captured budgets and frame limit are those of the fitted length."""
    from vllm.v1.worker.gpu_worker import Worker

    emu = device_stubs
    vllm_config, model = model_for(max_model_len=1024, max_num_batched_tokens=2048)
    runner = make_runner(vllm_config, model, "FULL_AND_PIECEWISE")
    with fa_attention(model, emu):
        runner.profile_cudagraph_memory()
    worker = SimpleNamespace(model_config=vllm_config.model_config, model_runner=runner)
    Worker.update_max_model_len(worker, 256)
    assert runner.max_model_len == 256
    with fa_attention(model, emu):
        runner.capture_model()
    mgr = runner.encoder_cudagraph_manager
    assert max(mgr.token_budgets) == 256
    assert sorted(mgr.budget_graphs) == mgr.token_budgets
    assert mgr.max_frames_per_batch == mgr.max_batch_size * model.get_max_frames_per_video()

    # A fresh manager built at the fitted length agrees (the reference).
    ref = make_cg_manager(vllm_config, model)
    assert (mgr.token_budgets, mgr.max_frames_per_batch) == (
        ref.token_budgets, ref.max_frames_per_batch)
    images = encoder_inputs("image", IMAGES)
    got = encode(runner, model, emu, "image", images)
    assert max(max_abs_diffs(got, per_item_eager(model, images))) < 1e-4


# -- defect 5 (0006): a model lacking a protocol method is named once ------------------


class _LacksInputModality:
    """The real Qwen3-VL model without get_input_modality (a model written against
    another version of SupportsEncoderCudaGraph)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        if name == "get_input_modality":
            raise AttributeError(name)
        return getattr(self._model, name)


def test_missing_protocol_method_named_once(model_for, device_stubs, make_runner,
                                            monkeypatch, vllm_logs):
    """Profiling and capture each ask for a manager: one warning, not two."""
    from vllm.logger import _print_warning_once

    emu = device_stubs
    vllm_config, model = model_for()
    runner = make_runner(vllm_config, model, "FULL_AND_PIECEWISE")
    runner.model = _LacksInputModality(model)
    _print_warning_once.cache_clear()
    runner.profile_cudagraph_memory()
    runner.capture_model()
    assert runner.encoder_cudagraph_manager is None and emu.graphs == []
    warned = [r for r in vllm_logs if "lacks get_input_modality" in r.getMessage()]
    assert len(warned) == 1
    assert "cudagraph_mm_encoder" in warned[0].getMessage()
