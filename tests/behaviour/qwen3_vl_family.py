"""Tiny offline model directories for the models that reuse Qwen3-VL's vision tower,
processor and encoder-graph methods (Qwen3-VL-MoE, Qwen3.5, InternS1-Pro), and their
models built on the meta device (no weights: for methods that read only the config)::

    model_dir = write_family_dir(qwen3_vl_dir, dest, "Qwen3_5ForConditionalGeneration")
    model = build_on_meta(vllm_config)   # the registry's class for the architecture

Each directory is conftest's tiny Qwen3-VL one (tokenizer, Qwen3VLProcessor, vision
config) with the architecture, the model types and the text fields that model's
language model needs. InternS1-Pro ships its config as remote code; vLLM's
InternS1ProProcessingInfo takes any config with Qwen3-VL's vision fields, so its
directory uses Qwen3-VL-MoE's config class with the FoPE rope keys its language model
asserts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

_MOE_TEXT = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                 decoder_sparse_step=1, norm_topk_prob=True, mlp_only_layers=[])
_MROPE = {"rope_type": "default", "rope_theta": 500000.0, "mrope_section": [2, 3, 3],
          "mrope_interleaved": True}

# architecture: (model_type, text model_type, extra text_config fields)
FAMILY = {
    "Qwen3VLMoeForConditionalGeneration": ("qwen3_vl_moe", "qwen3_vl_moe_text", _MOE_TEXT),
    "Qwen3_5ForConditionalGeneration": ("qwen3_5", "qwen3_5_text", dict(
        layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4,
        linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
        linear_num_value_heads=4, partial_rotary_factor=1.0)),
    "InternS1ProForConditionalGeneration": ("qwen3_vl_moe", "qwen3_vl_moe_text", dict(
        _MOE_TEXT, rope_parameters=dict(_MROPE, fope_init_factor=0.1, fope_sep_head=True))),
}


def write_family_dir(qwen3_vl_dir: Path, dest: Path, architecture: str) -> Path:
    shutil.copytree(qwen3_vl_dir, dest, dirs_exist_ok=True)
    config = json.loads((dest / "config.json").read_text())
    model_type, text_type, text_fields = FAMILY[architecture]
    config["architectures"] = [architecture]
    config["model_type"] = model_type
    config["text_config"].update(model_type=text_type, **text_fields)
    if model_type == "qwen3_5":
        config["vision_config"]["model_type"] = "qwen3_5"
    (dest / "config.json").write_text(json.dumps(config, indent=1))
    return dest


def build_on_meta(vllm_config):
    """The registry's model class for the config's architecture, built on the meta
    device (parameters without storage)."""
    import torch
    from qwen3_vl_cpu import ensure_distributed
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.models import ModelRegistry

    model_config = vllm_config.model_config
    cls, _ = ModelRegistry.resolve_model_cls(model_config.architectures, model_config)
    ensure_distributed(vllm_config)
    _ensure_expert_group(model_config)
    with set_current_vllm_config(vllm_config), torch.device("meta"):
        return cls(vllm_config=vllm_config, prefix="model")


def _ensure_expert_group(model_config) -> None:
    """The process's one-rank world may have been set up for a dense model, which gets
    no expert-parallel group; MoE layers ask for one: add the one-rank group
    initialize_model_parallel makes for an MoE model."""
    from vllm.distributed import parallel_state

    if model_config.is_moe and parallel_state._EP is None:
        parallel_state._EP = parallel_state.init_model_parallel_group(
            [[0]], parallel_state.get_world_group().local_rank, "gloo", group_name="ep")
