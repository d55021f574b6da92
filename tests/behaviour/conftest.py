"""Shared fixtures for behaviour tests against the installed (or dev-site) vLLM.

No GPU and no hub: vLLM's CPU platform is selected before anything imports
``vllm.config`` (so ``DeviceConfig`` / ``EngineArgs`` work), and a tiny
Qwen3-VL model directory is written into ``tmp_path`` with ``transformers``.

Fixtures:
  cpu_platform            the CpuPlatform object selected as vLLM's platform
  tiny_qwen3_vl_dir       path of a tiny offline Qwen3-VL model directory
  make_vllm_config        factory: real VllmConfig for a model dir
                          (helpers.vllm_config_for, the same as a plain function)
  make_cg_manager         factory: the real EncoderCudaGraphManager on the CPU for
                          (vllm_config, model) (helpers.cpu_manager)
  device_stubs            the CUDA-graph emulation and the device plumbing stubs of
                          the model runner (runner_lifecycle.install_device_stubs)
  make_cpu_runner         factory: vLLM's CPUModelRunner for (vllm_config, model,
                          decoder cudagraph_mode), model loaded (runner_lifecycle.cpu_runner)
  qwen3_vl_session_dir    a tiny Qwen3-VL dir shared by the session
  qwen3_vl_model          the real Qwen3-VL model on it (qwen3_vl_cpu.py)
  make_encoder_cg_model   factory: small model implementing
                          SupportsEncoderCudaGraph (image + video)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def use_cpu_platform():
    """Make vLLM's CPU platform the current platform.

    ``vllm.platforms.current_platform`` is resolved lazily and bound by
    ``from vllm.platforms import current_platform`` at import time, so this
    must run before ``vllm.config`` & co. are imported.
    """
    import vllm.platforms as platforms
    from vllm.platforms.cpu import CpuPlatform

    if not isinstance(platforms._current_platform, CpuPlatform):
        platforms._current_platform = CpuPlatform()
    return platforms._current_platform


_CPU_PLATFORM = use_cpu_platform()

from helpers import cpu_manager, vllm_config_for  # noqa: E402 (after the platform)


@pytest.fixture(scope="session")
def cpu_platform():
    import vllm.platforms as platforms

    assert platforms.current_platform is _CPU_PLATFORM
    assert platforms.current_platform.device_type == "cpu"
    return _CPU_PLATFORM


# ---------------------------------------------------------------------------
# Tiny Qwen3-VL model directory (config, tokenizer, processor); no weights.
# ---------------------------------------------------------------------------

QWEN3_VL_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

TINY_TEXT_HIDDEN = 64
TINY_VISION_HIDDEN = 32


def _write_tiny_tokenizer(path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words += [str(d) for d in range(10)] + ["<unk>"]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=QWEN3_VL_SPECIAL_TOKENS,
    )
    fast.add_special_tokens({"additional_special_tokens": QWEN3_VL_SPECIAL_TOKENS})
    fast.save_pretrained(path)
    return fast


def write_tiny_qwen3_vl(path: Path) -> Path:
    """Write a tiny Qwen3-VL model directory (no weights) into ``path``."""
    from transformers import Qwen3VLConfig, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl_fast import (
        Qwen2VLImageProcessorFast,
    )
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import (
        Qwen3VLVideoProcessor,
    )

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _write_tiny_tokenizer(path)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN3_VL_SPECIAL_TOKENS}

    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=TINY_TEXT_HIDDEN,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=4096,
            rope_scaling={
                "rope_type": "default",
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
        ),
        vision_config=dict(
            depth=2,
            hidden_size=TINY_VISION_HIDDEN,
            intermediate_size=64,
            num_heads=2,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=TINY_TEXT_HIDDEN,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    config.save_pretrained(path)

    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessorFast(patch_size=16, merge_size=2),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2),
    )
    processor.save_pretrained(path)
    return path


@pytest.fixture
def vllm_logs():
    """Records of the 'vllm' logger (it does not propagate to the root logger)."""
    records: list[logging.LogRecord] = []

    class _Handler(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = _Handler(level=logging.DEBUG)
    logger = logging.getLogger("vllm")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def tiny_qwen3_vl_dir(tmp_path) -> Path:
    return write_tiny_qwen3_vl(tmp_path / "tiny-qwen3-vl")


@pytest.fixture
def make_vllm_config(cpu_platform):
    """Factory: ``make_vllm_config(model_dir, max_model_len=..., compilation=...,
    max_num_batched_tokens=..., **model_kwargs)`` -> real VllmConfig."""
    return vllm_config_for


@pytest.fixture(scope="session")
def make_cg_manager(cpu_platform):
    """Factory: ``make_cg_manager(vllm_config, model)`` -> the real
    EncoderCudaGraphManager on the CPU, built the way the model runner does."""
    return cpu_manager


@pytest.fixture
def device_stubs(cpu_platform, monkeypatch):
    """The CUDA-graph emulation and the model runner's device plumbing, stubbed for
    the test (runner_lifecycle.py says what and why); the Emulation."""
    from runner_lifecycle import install_device_stubs

    return install_device_stubs(monkeypatch)


@pytest.fixture
def make_cpu_runner(device_stubs, monkeypatch):
    """Factory: ``make_cpu_runner(vllm_config, model, mode)`` -> vLLM's CPUModelRunner
    for ``vllm_config`` with ``model`` (built from the same config) loaded and the
    decoder's cudagraph_mode ``mode``; the per-runner stubs undone after the test."""
    from runner_lifecycle import cpu_runner

    def make(vllm_config, model, mode: str):
        return cpu_runner(vllm_config, model, monkeypatch, mode)

    return make


# ---------------------------------------------------------------------------
# The real Qwen3-VL model on the CPU (qwen3_vl_cpu.py), one per test session
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def qwen3_vl_session_dir(tmp_path_factory) -> Path:
    return write_tiny_qwen3_vl(tmp_path_factory.mktemp("qwen3-vl") / "tiny-qwen3-vl")


@pytest.fixture(scope="session")
def qwen3_vl_model(cpu_platform, qwen3_vl_session_dir):
    """Qwen3VLForConditionalGeneration (random float32 weights) for
    ``qwen3_vl_session_dir``; max_model_len 4096. Graph state lives in the
    managers, so tests share it."""
    from qwen3_vl_cpu import build_qwen3_vl

    return build_qwen3_vl(
        vllm_config_for(qwen3_vl_session_dir, dtype="float32")
    )


# ---------------------------------------------------------------------------
# Small model object implementing SupportsEncoderCudaGraph (image + video)
# ---------------------------------------------------------------------------

ENCODER_CG_KEYS = {
    "image": ("pixel_values", "image_grid_thw"),
    "video": ("pixel_values_videos", "video_grid_thw"),
}


def _make_encoder_cg_model_class():
    import torch

    from vllm.v1.worker.encoder_cudagraph_defs import (
        EncoderCudaGraphCaptureInputs,
        EncoderCudaGraphConfig,
        EncoderCudaGraphReplayBuffers,
    )

    class SmallEncoderCudaGraphModel(torch.nn.Module):
        """Qwen-style patch encoder: grid_thw per item, spatial merge m,
        every frame (t of grid_thw) its own attention sequence.

        ``cu_seqlens`` is built per frame and padded to
        max(max_batch_size, max_frames_per_batch) sequences, like Qwen3-VL.
        ``calls`` records (method, args) of capture/replay preparation.
        """

        supports_encoder_cudagraph = True

        def __init__(
            self,
            *,
            video: bool = True,
            min_budget: int = 64,
            merge: int = 2,
            flat: int = 12,
            hidden: int = 8,
            max_frames_per_video: int = 8,
        ):
            super().__init__()
            self.proj = torch.nn.Linear(flat, hidden)
            self.merge = merge
            self.flat = flat
            self.hidden = hidden
            self.min_budget = min_budget
            self.max_frames_per_video = max_frames_per_video
            self.modalities = ["image", "video"] if video else ["image"]
            self.calls: list[tuple[str, tuple]] = []

        # -- protocol --
        def get_encoder_cudagraph_config(self):
            return EncoderCudaGraphConfig(
                modalities=list(self.modalities),
                input_key_by_modality={m: k[0] for m, k in ENCODER_CG_KEYS.items()},
                buffer_keys=["cu_seqlens"],
                out_hidden_size=self.hidden,
            )

        def get_encoder_cudagraph_budget_range(self, vllm_config):
            return (
                self.min_budget,
                vllm_config.scheduler_config.max_num_batched_tokens,
            )

        def get_max_frames_per_video(self):
            # patch 0004 (upstream #40445)
            self.calls.append(("get_max_frames_per_video", ()))
            return self.max_frames_per_video

        def get_encoder_cudagraph_per_item_frames(self, mm_kwargs):
            # patch 0006 (overlay): frames (attention sequences) per item
            return [t for t, _, _ in self._inputs(mm_kwargs)[2]]

        def get_input_modality(self, mm_kwargs):
            found = [m for m, (k, _) in ENCODER_CG_KEYS.items() if k in mm_kwargs]
            if len(found) != 1:
                raise ValueError(f"ambiguous encoder inputs: {sorted(mm_kwargs)}")
            return found[0]

        def _inputs(self, mm_kwargs):
            modality = self.get_input_modality(mm_kwargs)
            key, grid_key = ENCODER_CG_KEYS[modality]
            return modality, mm_kwargs[key], [list(g) for g in mm_kwargs[grid_key]]

        def get_encoder_cudagraph_num_items(self, mm_kwargs):
            return len(self._inputs(mm_kwargs)[2])

        def get_encoder_cudagraph_per_item_output_tokens(self, mm_kwargs):
            m = self.merge
            return [t * (h // m) * (w // m) for t, h, w in self._inputs(mm_kwargs)[2]]

        def get_encoder_cudagraph_per_item_input_sizes(self, mm_kwargs):
            return [t * h * w for t, h, w in self._inputs(mm_kwargs)[2]]

        def select_encoder_cudagraph_items(self, mm_kwargs, indices):
            modality, pv, grid = self._inputs(mm_kwargs)
            key, grid_key = ENCODER_CG_KEYS[modality]
            cum = [0]
            for t, h, w in grid:
                cum.append(cum[-1] + t * h * w)
            if not indices:
                return {key: pv[:0], grid_key: []}
            return {
                key: torch.cat([pv[cum[i] : cum[i + 1]] for i in indices]),
                grid_key: [grid[i] for i in indices],
            }

        def cu_seqlens(self, grid, num_seqs):
            cu = [0]
            for t, h, w in grid:
                for _ in range(t):
                    cu.append(cu[-1] + h * w)
            if len(cu) - 1 > num_seqs:
                raise RuntimeError(
                    f"{len(cu) - 1} frame sequences > {num_seqs} captured"
                )
            cu += [cu[-1]] * (num_seqs + 1 - len(cu))
            return torch.tensor(cu, dtype=torch.int32)

        def prepare_encoder_cudagraph_capture_inputs(
            self, token_budget, max_batch_size, max_frames_per_batch, device, dtype
        ):
            self.calls.append(
                ("capture", (token_budget, max_batch_size, max_frames_per_batch))
            )
            m = self.merge
            per_item = -(-token_budget // max_batch_size)
            grid = [[1, m, per_item * m] for _ in range(max_batch_size)]
            n = sum(t * h * w for t, h, w in grid)
            num_seqs = max(max_batch_size, max_frames_per_batch)
            return EncoderCudaGraphCaptureInputs(
                mm_kwargs={
                    "pixel_values": torch.zeros(
                        n, self.flat, device=device, dtype=dtype
                    ),
                    "image_grid_thw": grid,
                },
                buffers={"cu_seqlens": self.cu_seqlens(grid, num_seqs).to(device)},
            )

        def prepare_encoder_cudagraph_replay_buffers(
            self, mm_kwargs, max_batch_size, max_frames_per_batch
        ):
            self.calls.append(("replay", (max_batch_size, max_frames_per_batch)))
            grid = self._inputs(mm_kwargs)[2]
            num_seqs = max(max_batch_size, max_frames_per_batch)
            return EncoderCudaGraphReplayBuffers(
                buffers={"cu_seqlens": self.cu_seqlens(grid, num_seqs)}
            )

        def encoder_cudagraph_forward(self, mm_kwargs, buffers):
            return self.encode(self._inputs(mm_kwargs)[1])

        def encoder_eager_forward(self, mm_kwargs):
            self.calls.append(("eager", (self._inputs(mm_kwargs)[2],)))
            return self.encode(self._inputs(mm_kwargs)[1])

        def encode(self, pixel_values):
            m2 = self.merge**2
            out = self.proj(pixel_values)
            n = out.shape[0] // m2
            return out[: n * m2].view(n, m2, self.hidden).mean(dim=1)

    return SmallEncoderCudaGraphModel


@pytest.fixture
def make_encoder_cg_model():
    """Factory: ``make_encoder_cg_model(video=True, min_budget=64, ...)``."""
    cls = _make_encoder_cg_model_class()

    def make(**kwargs):
        return cls(**kwargs)

    return make
