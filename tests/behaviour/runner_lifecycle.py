"""vLLM's own model runner (CPUModelRunner, a GPUModelRunner subclass) driven through the
encoder-graph lifecycle on the CPU, with the real tiny Qwen3-VL under the CUDA-graph
emulation (cuda_graph_emulation.py, qwen3_vl_cpu.py)::

    emu = install_device_stubs(monkeypatch)        # the emulation + the stubs below
    config = runner_config(model_dir, max_model_len=-1, compilation={...})
    model = build_qwen3_vl(config)                 # from the runner's own config
    runner = cpu_runner(config, model, monkeypatch, "FULL_AND_PIECEWISE")
    with capture_safe_vit(model, emu):             # the ViT as on a GPU with flash-attn
        start_up(runner, fitted_max_model_len=128) # profile -> auto-fit -> capture
        got, items = encode(runner, [("image", [[1, 8, 8]]), ("video", [[2, 8, 8]])])
    assert_items_match(got, eager_embeddings(model, items), tol)

What is real: ``CPUModelRunner.__init__`` and ``load_model``, and the GPUModelRunner
methods ``profile_cudagraph_memory``, ``update_max_model_len`` (through the GPU worker's
own ``Worker.update_max_model_len``), ``capture_model`` and ``_execute_mm_encoder``; the
manager, the model and its processor's field config. What is stubbed (device plumbing
not under test), by ``install_device_stubs``:

- ``torch.cuda.mem_get_info``: a constant (free, total); no device to ask.
- ``torch.accelerator.synchronize`` / ``empty_cache``: no-ops.
- ``gpu_model_runner.graph_capture``: a null context (it sets up CUDA streams).
- ``gpu_model_runner.lock_workspace``: a no-op (no workspace manager on the CPU).
- ``current_platform.graph_pool_handle``: the emulation's pool token.
- ``runner.cudagraph_dispatcher.get_capture_descs``: ``[]`` (no decoder graphs: the
  decoder's capture needs a real attention backend and is not under test).
- ``runner._check_and_update_cudagraph_mode``: a no-op. It resolves the mode against
  the decoder's attention backend when profiling allocates its minimal KV cache; the
  CPU backend supports no CUDA graphs and would set NONE (FlashAttention on a GPU keeps
  FULL_AND_PIECEWISE). It also fills the decoder dispatcher's keys (stubbed above).
- ``cpu_model_runner.get_model`` (weight loading): returns the prebuilt model (random
  weights in a wider range than vLLM's dummy loader, so attention is far from uniform).
- torch.cuda's graph API: the emulation (``cuda_graph_emulation.install``).

``CPUModelRunner.load_model`` does not set ``is_multimodal_pruning_enabled`` /
``requires_sequential_video_encoding`` (``GPUModelRunner.load_model`` does, after the
weights): ``cpu_runner`` computes them the way GPUModelRunner.load_model does.

``enforce_eager`` and the CPU platform force ``cudagraph_mode`` to NONE while a config
is built; ``cpu_runner`` sets the mode under test once the runner is built (see
``set_cudagraph_mode``), as a GPU platform would leave it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from qwen3_vl_cpu import encoder_inputs, fa_attention, max_abs_diffs

FREE_MEMORY = 64 << 30


def runner_config(model_dir, *, max_model_len: int = 4096,
                  max_num_batched_tokens: int | None = None,
                  compilation: dict[str, Any] | None = None, **model_kwargs):
    """A real VllmConfig (CPU platform, float32) for the tiny model directory.
    ``max_model_len=-1`` is the engine's auto-fit request: ModelConfig resolves it to the
    model's full length and the scheduler gets the resolved value (as EngineArgs does)."""
    from vllm.config import CompilationConfig, ModelConfig, SchedulerConfig, VllmConfig

    model_config = ModelConfig(model=str(model_dir), max_model_len=max_model_len,
                               dtype="float32", **model_kwargs)
    sched: dict[str, Any] = dict(max_model_len=model_config.max_model_len,
                                 is_encoder_decoder=False)
    if max_num_batched_tokens is not None:
        sched["max_num_batched_tokens"] = max_num_batched_tokens
    return VllmConfig(model_config=model_config,
                      scheduler_config=SchedulerConfig(**sched),
                      compilation_config=CompilationConfig(**(compilation or {})))


def set_cudagraph_mode(vllm_config, mode: str) -> None:
    """The decoder's cudagraph_mode under test. The CPU platform forces NONE whenever a
    VllmConfig is (re)built, and building Qwen3-VL rebuilds one that shares this
    compilation config (``with_hf_config`` for the language model), and the runner's
    CudagraphDispatcher rejects a piecewise mode without VLLM_COMPILE when it is built:
    set it after both, before the lifecycle starts."""
    from vllm.config import CUDAGraphMode

    vllm_config.compilation_config.cudagraph_mode = CUDAGraphMode[mode]


def install_device_stubs(monkeypatch):
    """The emulation and the device plumbing of the module docstring (not the
    dispatcher: per runner); returns the Emulation."""
    # Imported before the emulation replaces torch.cuda.CUDAGraph (used in annotations).
    import vllm.v1.worker.cpu_model_runner  # noqa: F401
    import vllm.v1.worker.gpu_model_runner as gmr
    from cuda_graph_emulation import install
    from vllm.platforms import current_platform

    emu = install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda device=None: (FREE_MEMORY, 2 * FREE_MEMORY))
    monkeypatch.setattr(torch.accelerator, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.accelerator, "empty_cache", lambda: None)
    monkeypatch.setattr(gmr, "graph_capture",
                        lambda device=None: contextlib.nullcontext())
    monkeypatch.setattr(gmr, "lock_workspace", lambda: None)
    # In the instance dict: the platform has no such attribute (its __getattr__ warns
    # and answers None), and undo must remove it again, not set None.
    assert gmr.current_platform is current_platform
    monkeypatch.setitem(vars(current_platform), "graph_pool_handle",
                        torch.cuda.graph_pool_handle)
    return emu


def cpu_runner(vllm_config, model, monkeypatch, cudagraph_mode: str):
    """vLLM's CPUModelRunner for ``vllm_config`` with ``model`` (built from the same
    config) loaded, then the decoder's ``cudagraph_mode`` set. Call
    ``install_device_stubs`` first; the per-runner stubs are installed here."""
    import vllm.v1.worker.cpu_model_runner as cmr
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.models.interfaces import supports_multimodal_pruning

    assert model.model_config is vllm_config.model_config  # as the engine builds it
    with set_current_vllm_config(vllm_config):
        runner = cmr.CPUModelRunner(vllm_config, torch.device("cpu"))
        monkeypatch.setattr(cmr, "get_model", lambda vllm_config: model)
        runner.load_model()
    mm_config = runner.model_config.multimodal_config
    runner.is_multimodal_pruning_enabled = (  # as GPUModelRunner.load_model sets it
        supports_multimodal_pruning(runner.get_model())
        and mm_config is not None
        and mm_config.is_multimodal_pruning_enabled()
    )
    runner.requires_sequential_video_encoding = hasattr(
        runner.get_model(), "requires_sequential_video_encoding")
    monkeypatch.setattr(runner.cudagraph_dispatcher, "get_capture_descs", lambda: [])
    # The decoder's CPU attention (no CUDA-graph support) would downgrade the mode when
    # profiling allocates its KV cache; FlashAttention on a GPU keeps it.
    monkeypatch.setattr(runner, "_check_and_update_cudagraph_mode",
                        lambda attention_backends, kv_cache_groups: None)
    # After the runner is built: its CudagraphDispatcher rejects a piecewise mode
    # without VLLM_COMPILE (the CPU platform's compilation mode) at construction.
    set_cudagraph_mode(vllm_config, cudagraph_mode)
    assert runner.compilation_config.cudagraph_mode.name == cudagraph_mode
    return runner


def update_max_model_len(runner, max_model_len: int) -> None:
    """What the engine's auto-fit does on each worker: the GPU worker's own
    ``update_max_model_len`` (sets model_config.max_model_len, then the runner's)."""
    from types import SimpleNamespace

    from vllm.v1.worker.gpu_worker import Worker

    Worker.update_max_model_len(
        SimpleNamespace(model_config=runner.model_config, model_runner=runner),
        max_model_len)


@contextlib.contextmanager
def capture_safe_vit(model, emu):
    """Every ViT attention layer reports FLASH_ATTN and runs flash-attn semantics
    (qwen3_vl_cpu.fa_attention): what a GPU run with a capture-safe backend has."""
    from vllm.model_executor.layers.attention.mm_encoder_attention import (
        MMEncoderAttention,
    )
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    attns = [m for m in model.modules() if isinstance(m, MMEncoderAttention)]
    saved = [a.attn_backend for a in attns]
    for a in attns:
        a.attn_backend = AttentionBackendEnum.FLASH_ATTN
    try:
        with fa_attention(model, emu):
            yield
    finally:
        for a, backend in zip(attns, saved):
            a.attn_backend = backend


def start_up(runner, fitted_max_model_len: int | None = None) -> None:
    """The engine's start-up order: determine_available_memory ->
    profile_cudagraph_memory; the engine's auto-fit -> update_max_model_len; then
    compile_or_warm_up_model -> capture_model."""
    runner.profile_cudagraph_memory()
    if fitted_max_model_len is not None:
        update_max_model_len(runner, fitted_max_model_len)
    runner.capture_model()


def mm_items(model_config, modality: str, grids, seed: int = 0):
    """One MultiModalKwargsItem per item, built from the model's own field config
    (what the processor hands the engine)."""
    from transformers import BatchFeature
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.inputs import MultiModalKwargsItems

    hf_inputs = BatchFeature(encoder_inputs(modality, grids, seed=seed))
    processor = MULTIMODAL_REGISTRY.create_processor(model_config)
    fields = processor._get_mm_fields_config(hf_inputs, {})
    return MultiModalKwargsItems.from_hf_inputs(hf_inputs, fields)[modality]


def schedule(runner, requests) -> tuple[Any, list[tuple[str, Any]]]:
    """Add one request per (modality, grids) to ``runner.requests`` with its
    mm_features; return the SchedulerOutput that schedules all their encoder inputs
    and the (modality, MultiModalKwargsItem) of every item in order."""
    from vllm.multimodal.inputs import MultiModalFeatureSpec, PlaceholderRange
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.worker.gpu_input_batch import CachedRequestState

    out = SchedulerOutput.make_empty()
    items_in_order = []
    merge = runner.model_config.hf_config.vision_config.spatial_merge_size
    for modality, grids in requests:
        req_id = f"req-{len(runner.requests)}"
        items = mm_items(runner.model_config, modality, grids, seed=len(runner.requests))
        features, offset = [], 1
        for i, (item, (t, h, w)) in enumerate(zip(items, grids)):
            length = t * h * w // merge**2
            features.append(MultiModalFeatureSpec(
                data=item, modality=modality, identifier=f"{req_id}-{i}",
                mm_position=PlaceholderRange(offset=offset, length=length)))
            offset += length + 2
            items_in_order.append((modality, item))
        runner.requests[req_id] = CachedRequestState(
            req_id=req_id, prompt_token_ids=[0] * offset, mm_features=features,
            sampling_params=None, generator=None, block_ids=([],),
            num_computed_tokens=0, output_token_ids=[])
        out.scheduled_encoder_inputs[req_id] = list(range(len(features)))
    return out, items_in_order


def encode(runner, requests) -> tuple[list[torch.Tensor], list[tuple[str, Any]]]:
    """``runner._execute_mm_encoder`` on one step that schedules ``requests`` (one
    request per (modality, grids)): its outputs, one per item, and the items."""
    scheduler_output, items = schedule(runner, requests)
    with torch.inference_mode():
        got = runner._execute_mm_encoder(scheduler_output)
    return list(got), items


def eager_embeddings(model, items) -> list[torch.Tensor]:
    """The model's own eager ``embed_multimodal`` on each item alone, batched as the
    engine batches it (vLLM's CPU attention unless a routing is active)."""
    from vllm.multimodal.utils import group_and_batch_mm_kwargs

    out = []
    with torch.inference_mode():
        for modality, item in items:
            (_, _, kwargs), = group_and_batch_mm_kwargs([(modality, item)], device="cpu")
            (emb,) = model.embed_multimodal(**kwargs)
            out.append(emb)
    return out


def assert_items_match(got, want, tol: float) -> float:
    """Item by item within ``tol``; the worst difference."""
    diffs = max_abs_diffs(got, want)
    assert diffs and max(diffs) < tol, f"_execute_mm_encoder vs eager, per item: {diffs}"
    return max(diffs)
