"""Behaviour of patches 0001 (encoder CUDA graph modules importable) and
0002 (video in the ViT encoder CUDA graph, upstream #38061) on vLLM 0.19.1,
with the frame-limit auto rule of 0004 (upstream #40445).

Runs on CPU: the manager is built with a real VllmConfig for a tiny
Qwen3-VL directory. Capture and replay with the real tower are in
test_encoder_cudagraph_emulated.py (CUDA-graph emulation).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util

import pytest
import torch
from helpers import qwen3_vl_protocol_object

# ---------------------------------------------------------------------------
# Configuration keys
# ---------------------------------------------------------------------------


def test_compilation_config_accepts_new_keys():
    from vllm.config import CompilationConfig

    cc = CompilationConfig(
        cudagraph_mm_encoder=True,
        encoder_cudagraph_token_budgets=[256, 1024],
        encoder_cudagraph_max_vision_items_per_batch=6,
        encoder_cudagraph_max_frames_per_batch=40,
    )
    assert cc.encoder_cudagraph_max_vision_items_per_batch == 6
    assert cc.encoder_cudagraph_max_frames_per_batch == 40
    default = CompilationConfig(cudagraph_mm_encoder=True)
    assert default.encoder_cudagraph_max_vision_items_per_batch == 0
    # 0004 (upstream #40445): None = auto-infer from the model
    assert default.encoder_cudagraph_max_frames_per_batch is None
    # The frame limit is part of the config hash (it shapes the graphs).
    assert cc.compute_hash() != CompilationConfig(
        cudagraph_mm_encoder=True,
        encoder_cudagraph_token_budgets=[256, 1024],
        encoder_cudagraph_max_vision_items_per_batch=6,
        encoder_cudagraph_max_frames_per_batch=41,
    ).compute_hash()


@pytest.mark.parametrize(
    "key",
    [
        "encoder_cudagraph_max_vision_items_per_batch",
        "encoder_cudagraph_max_frames_per_batch",
    ],
)
def test_compilation_config_rejects_negative(key):
    from vllm.config import CompilationConfig

    with pytest.raises(ValueError, match=f"{key} must be non-negative"):
        CompilationConfig(cudagraph_mm_encoder=True, **{key: -2})


def test_cli_compilation_config_json(cpu_platform, tiny_qwen3_vl_dir):
    """The keys go through `--compilation-config` like a user writes them."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    args = parser.parse_args(
        [
            "--model",
            str(tiny_qwen3_vl_dir),
            "--compilation-config",
            '{"cudagraph_mm_encoder": true, '
            '"encoder_cudagraph_max_vision_items_per_batch": 8, '
            '"encoder_cudagraph_max_frames_per_batch": 64}',
        ]
    )
    cc = EngineArgs.from_cli_args(args).compilation_config
    assert cc.cudagraph_mm_encoder is True
    assert cc.encoder_cudagraph_max_vision_items_per_batch == 8
    assert cc.encoder_cudagraph_max_frames_per_batch == 64


# ---------------------------------------------------------------------------
# 0001: the manager imports the way the model runner imports it
# ---------------------------------------------------------------------------


def _encoder_cudagraph_imports(module_name):
    spec = importlib.util.find_spec(module_name)
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return [
        (node.module, [a.name for a in node.names])
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.level == 0
        and node.module
        and "encoder_cudagraph" in node.module
    ]


@pytest.mark.parametrize(
    "module_name",
    [
        "vllm.v1.worker.gpu_model_runner",
        "vllm.v1.worker.encoder_cudagraph",
        "vllm.model_executor.models.interfaces",
        "vllm.model_executor.models.qwen3_vl",
    ],
)
def test_encoder_cudagraph_imports_resolve(module_name):
    imports = _encoder_cudagraph_imports(module_name)
    assert imports
    for target, names in imports:
        module = importlib.import_module(target)
        for name in names:
            assert hasattr(module, name), (target, name)


def test_runner_import_ofcpu_manager():
    targets = {
        target
        for target, names in _encoder_cudagraph_imports(
            "vllm.v1.worker.gpu_model_runner"
        )
        if "EncoderCudaGraphManager" in names
    }
    assert targets == {"vllm.v1.worker.encoder_cudagraph"}
    mod = importlib.import_module("vllm.v1.worker.encoder_cudagraph")
    assert isinstance(mod.EncoderCudaGraphManager, type)


# ---------------------------------------------------------------------------
# Manager sizing and routing with a real VllmConfig (tiny Qwen3-VL, no hub)
# ---------------------------------------------------------------------------



def _pow2_budgets(lo, hi):
    out = []
    b = lo
    while b <= hi:
        out.append(b)
        b *= 2
    if out[-1] < hi:
        out.append(hi)
    return out


@pytest.mark.parametrize("max_num_batched_tokens", [2048, 3000])
def test_manager_auto_limits(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, max_num_batched_tokens,
    make_cg_manager
):
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        max_num_batched_tokens=max_num_batched_tokens,
        compilation={"cudagraph_mm_encoder": True},
    )
    assert vllm_config.scheduler_config.max_num_batched_tokens == (
        max_num_batched_tokens
    )
    model = make_encoder_cg_model(min_budget=64, max_frames_per_video=5)
    mgr = make_cg_manager(vllm_config, model)
    assert mgr.token_budgets == _pow2_budgets(64, max_num_batched_tokens)
    assert mgr.max_batch_size == max_num_batched_tokens // 64
    # 0004: auto frames = max_batch_size * model.get_max_frames_per_video()
    assert mgr.max_frames_per_batch == (max_num_batched_tokens // 64) * 5
    assert mgr.supports_modality("video")


def test_manager_user_limits(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, make_cg_manager
):
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        compilation={
            "cudagraph_mm_encoder": True,
            "encoder_cudagraph_token_budgets": [1024, 256],
            "encoder_cudagraph_max_vision_items_per_batch": 4,
            "encoder_cudagraph_max_frames_per_batch": 24,
        },
    )
    mgr = make_cg_manager(vllm_config, make_encoder_cg_model(min_budget=64))
    assert mgr.token_budgets == [256, 1024]
    assert mgr.max_batch_size == 4
    assert mgr.max_frames_per_batch == 24


def test_manager_auto_frames_with_user_items(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, make_cg_manager
):
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        compilation={
            "cudagraph_mm_encoder": True,
            "encoder_cudagraph_max_vision_items_per_batch": 4,
        },
    )
    max_tokens = vllm_config.scheduler_config.max_num_batched_tokens
    model = make_encoder_cg_model(min_budget=128, max_frames_per_video=7)
    mgr = make_cg_manager(vllm_config, model)
    assert mgr.max_batch_size == 4
    # 0004: auto frames = user item limit * model's max frames per video,
    # independent of the token budgets
    assert mgr.max_frames_per_batch == 4 * 7
    assert max_tokens // 128 != 4 * 7


def test_manager_image_only_model(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, make_cg_manager
):
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        compilation={
            "cudagraph_mm_encoder": True,
            "encoder_cudagraph_max_frames_per_batch": 24,
        },
    )
    mgr = make_cg_manager(vllm_config, make_encoder_cg_model(video=False))
    assert mgr.max_frames_per_batch == 0
    assert mgr.supports_modality("image")
    assert not mgr.supports_modality("video")


def test_manager_routes_modality_to_input_key(
    tiny_qwen3_vl_dir, make_vllm_config, make_encoder_cg_model, make_cg_manager
):
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir, compilation={"cudagraph_mm_encoder": True}
    )
    mgr = make_cg_manager(vllm_config, make_encoder_cg_model())
    image = {"pixel_values": torch.zeros(16, 12), "image_grid_thw": [[1, 4, 4]]}
    video = {
        "pixel_values_videos": torch.zeros(32, 12),
        "video_grid_thw": [[2, 4, 4]],
    }
    assert mgr._get_input_key(image) == "pixel_values"
    assert mgr._get_input_key(video) == "pixel_values_videos"


# ---------------------------------------------------------------------------
# The Qwen3-VL implementation of the protocol (real methods, stub tower)
# ---------------------------------------------------------------------------



def test_qwen3_vl_protocol_video(tiny_qwen3_vl_dir, make_vllm_config, make_cg_manager):
    from vllm.model_executor.models.interfaces import supports_encoder_cudagraph

    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir, compilation={"cudagraph_mm_encoder": True}
    )
    model = qwen3_vl_protocol_object(vllm_config)
    assert supports_encoder_cudagraph(model)
    config = model.get_encoder_cudagraph_config()
    assert config.modalities == ["image", "video"]
    assert config.input_key_by_modality == {
        "image": "pixel_values",
        "video": "pixel_values_videos",
    }

    grid = torch.tensor([[4, 4, 6], [2, 2, 2]])
    pv = torch.arange(4 * 24 + 2 * 4, dtype=torch.float32)[:, None]
    video = {"pixel_values_videos": pv, "video_grid_thw": grid, "timestamps": None}
    assert model.get_input_modality(video) == "video"
    assert model.get_encoder_cudagraph_num_items(video) == 2
    assert model.get_encoder_cudagraph_per_item_output_tokens(video) == [24, 2]
    assert model.get_encoder_cudagraph_per_item_input_sizes(video) == [96, 8]
    sub = model.select_encoder_cudagraph_items(video, [1])
    assert set(sub) == {"pixel_values_videos", "video_grid_thw"}
    assert sub["video_grid_thw"] == [[2, 2, 2]]
    torch.testing.assert_close(sub["pixel_values_videos"], pv[96:])
    empty = model.select_encoder_cudagraph_items(video, [])
    assert empty["pixel_values_videos"].shape[0] == 0

    image = {"pixel_values": torch.zeros(16, 1), "image_grid_thw": [[1, 4, 4]]}
    assert model.get_input_modality(image) == "image"
    with pytest.raises(ValueError):
        model.get_input_modality({**image, **video})

    mgr = make_cg_manager(vllm_config, model)
    assert mgr.supports_modality("video")
    assert mgr._get_input_key(video) == "pixel_values_videos"
    assert mgr._get_input_key(image) == "pixel_values"
    # Qwen3-VL min budget is 64 tokens; 0004: frames = items * frames/video
    assert mgr.max_batch_size == (
        vllm_config.scheduler_config.max_num_batched_tokens // 64
    )
    assert mgr.max_frames_per_batch == (
        mgr.max_batch_size * model.get_max_frames_per_video()
    )


def test_qwen3_vl_video_graphs_off_with_evs(tiny_qwen3_vl_dir, make_vllm_config):
    vllm_config = make_vllm_config(
        tiny_qwen3_vl_dir,
        compilation={"cudagraph_mm_encoder": True},
        video_pruning_rate=0.5,
    )
    # No encoder graphs for any modality under EVS (patch 0008, upstream
    # #38040): the runner passes its pruning flag and gets no manager.
    from vllm.v1.worker.encoder_cudagraph import create_encoder_cudagraph_manager

    model = qwen3_vl_protocol_object(vllm_config)
    assert model.is_multimodal_pruning_enabled
    mgr = create_encoder_cudagraph_manager(
        vllm_config,
        torch.device("cpu"),
        torch.float32,
        model,
        multimodal_pruning=model.is_multimodal_pruning_enabled,
    )
    assert mgr is None
