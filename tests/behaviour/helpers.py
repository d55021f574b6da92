"""Helpers shared by the behaviour tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch


def cpu_manager(vllm_config, model):
    """The real EncoderCudaGraphManager on the CPU, built the way the model runner does."""
    from vllm.v1.worker.encoder_cudagraph import EncoderCudaGraphManager

    return EncoderCudaGraphManager(
        vllm_config=vllm_config,
        device=torch.device("cpu"),
        dtype=torch.float32,
        model=model,
    )


def qwen3_vl_protocol_object(vllm_config):
    """A Qwen3VLForConditionalGeneration with the attributes its __init__ sets for the
    encoder CUDA graph protocol; the vision tower is reduced to the two attributes the
    bookkeeping reads. Every protocol method is the real one."""
    from vllm.model_executor.models.qwen3_vl import Qwen3VLForConditionalGeneration

    hf = vllm_config.model_config.hf_config
    mm_config = vllm_config.model_config.multimodal_config
    obj = Qwen3VLForConditionalGeneration.__new__(Qwen3VLForConditionalGeneration)
    torch.nn.Module.__init__(obj)
    obj.visual = SimpleNamespace(
        spatial_merge_size=hf.vision_config.spatial_merge_size,
        out_hidden_size=hf.vision_config.out_hidden_size,
    )
    obj.is_multimodal_pruning_enabled = mm_config.is_multimodal_pruning_enabled()
    obj.model_config = vllm_config.model_config
    obj.multimodal_config = mm_config
    return obj


def vllm_config_for(
    model_dir: Path,
    *,
    max_model_len: int = 4096,
    max_num_batched_tokens: int | None = None,
    compilation: dict[str, Any] | None = None,
    **model_kwargs: Any,
):
    """A real VllmConfig for a model dir (the CPU platform must be current)."""
    from vllm.config import (
        CompilationConfig,
        ModelConfig,
        SchedulerConfig,
        VllmConfig,
    )

    model_config = ModelConfig(
        model=str(model_dir), max_model_len=max_model_len, **model_kwargs
    )
    sched_kwargs: dict[str, Any] = dict(
        max_model_len=max_model_len, is_encoder_decoder=False
    )
    if max_num_batched_tokens is not None:
        sched_kwargs["max_num_batched_tokens"] = max_num_batched_tokens
    return VllmConfig(
        model_config=model_config,
        scheduler_config=SchedulerConfig(**sched_kwargs),
        compilation_config=CompilationConfig(**(compilation or {})),
    )
