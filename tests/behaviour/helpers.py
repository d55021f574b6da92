"""Helpers shared by the behaviour tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from types import SimpleNamespace

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
