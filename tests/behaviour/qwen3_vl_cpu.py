"""The real Qwen3-VL model on the CPU, for encoder CUDA graph tests under the emulation.

Built the public way: vLLM's CPU platform (selected by conftest before any vllm.config
import), a real ``VllmConfig`` for a tiny model directory (conftest's
``write_tiny_qwen3_vl``: vision depth 2 with a deepstack layer), float32, a
single-process gloo distributed init, ``Qwen3VLForConditionalGeneration``, weights
filled (vLLM's dummy initialiser, wider range), ``process_weights_after_loading``::

    model = build_qwen3_vl(vllm_config)          # conftest fixture: qwen3_vl_model
    with fa_attention(model, emu):               # for capture / replay / graph-path eager
        mgr = cpu_manager(vllm_config, model); mgr.capture(); mgr.execute(...)
    model.encoder_eager_forward(mm_kwargs)        # outside: vLLM's own CPU attention

Harness (used by test_encoder_cudagraph_emulated.py)::

    mm = encoder_inputs("video", [[4, 8, 8], [2, 8, 12]])   # random pixels, grid tensor
    got = run_graph_path(mgr, model, emu, mm)               # mgr.execute under fa_attention
    assert_matches_eager(model, mm, got)                    # per item vs eager, < 1e-4

vLLM's CPU ViT attention (TORCH_SDPA) calls ``.tolist()`` on ``cu_seqlens`` and loops in
Python: not capture-safe. A GPU run uses flash attention, so ``fa_attention`` routes
every ``MMEncoderAttention`` to ``varlen_attention`` (tensor ops only, flash-attn
semantics), gives the tower FA-style metadata (``max_seqlen`` computed, no
``sequence_lengths``) and declares each captured ``max_seqlen`` host-resident (on a GPU
it is a CPU tensor that the FA wrapper reads with ``.item()``, baked at capture).
"""

from __future__ import annotations

import contextlib
import socket

import torch

WEIGHT_RANGE = 0.25  # uniform(-r, r): large enough that attention is far from uniform


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_distributed(vllm_config) -> None:
    """Single-process gloo world with TP = PP = 1 (once per process)."""
    from vllm.config import set_current_vllm_config
    from vllm.distributed import parallel_state

    if parallel_state.model_parallel_is_initialized():
        return
    with set_current_vllm_config(vllm_config):
        parallel_state.init_distributed_environment(
            world_size=1, rank=0, local_rank=0,
            distributed_init_method=f"tcp://127.0.0.1:{_free_port()}", backend="gloo",
        )
        parallel_state.initialize_model_parallel(1, 1)


def build_qwen3_vl(vllm_config, seed: int = 0):
    """Qwen3VLForConditionalGeneration with random float32 weights, ready to run."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.utils import process_weights_after_loading
    from vllm.model_executor.model_loader.weight_utils import initialize_dummy_weights
    from vllm.model_executor.models.qwen3_vl import Qwen3VLForConditionalGeneration
    from vllm.utils.torch_utils import set_default_torch_dtype

    model_config = vllm_config.model_config
    ensure_distributed(vllm_config)
    with set_current_vllm_config(vllm_config), set_default_torch_dtype(model_config.dtype):
        model = Qwen3VLForConditionalGeneration(vllm_config=vllm_config, prefix="model")
        initialize_dummy_weights(model, model_config, -WEIGHT_RANGE, WEIGHT_RANGE, seed)
        process_weights_after_loading(model, model_config, torch.device("cpu"))
    return model.eval()


def varlen_attention(q, k, v, cu_seqlens, max_seqlen: int, scale: float):
    """Flash-attn varlen semantics in tensor ops only (no host read, static shapes).

    q, k, v: (1, S, heads, head_dim). Rows attend only within their sequence of
    ``cu_seqlens`` (block-diagonal); rows past ``cu_seqlens[-1]`` (padding) and rows at
    position >= ``max_seqlen`` in their sequence are not computed (NaN: a kernel leaves
    them unwritten); padded keys are never read; a non-finite key or value poisons only
    the rows of its own sequence.
    """
    seq_len = q.shape[1]
    qh, kh, vh = (x[0].transpose(0, 1) for x in (q, k, v))  # (heads, S, d)
    if kh.shape[0] != qh.shape[0]:
        kh = kh.repeat_interleave(qh.shape[0] // kh.shape[0], dim=0)
        vh = vh.repeat_interleave(qh.shape[0] // vh.shape[0], dim=0)
    cu = cu_seqlens.to(torch.int64)
    pos = torch.arange(seq_len, device=q.device)
    seq = torch.searchsorted(cu[1:], pos, right=True)  # its sequence; len(cu)-1 = padding
    real = pos < cu[-1]
    start = cu.gather(0, seq.clamp(max=cu.numel() - 2))
    computed = real & (pos - start < max_seqlen)
    same = (seq[:, None] == seq[None, :]) & real[None, :]  # (S, S)
    bad = ~(torch.isfinite(kh).all(-1) & torch.isfinite(vh).all(-1))  # (heads, S)
    kh = torch.where(bad[..., None], 0.0, kh)
    vh = torch.where(bad[..., None], 0.0, vh)
    scores = (qh @ kh.transpose(1, 2)) * scale
    weights = torch.softmax(scores.masked_fill(~same, float("-inf")), dim=-1)
    out = torch.where(same, weights, 0.0) @ vh
    reads_bad = (same[None] & bad[:, None, :]).any(-1)  # (heads, S)
    out = torch.where(computed[None, :, None] & ~reads_bad[..., None], out, float("nan"))
    return out.transpose(0, 1).unsqueeze(0)


def _fa_forward(attn):
    """MMEncoderAttention._forward_fa with ``varlen_attention`` as the kernel."""

    def forward(query, key, value, cu_seqlens=None, max_seqlen=None, sequence_lengths=None):
        bsz, q_len = query.shape[:2]
        is_reshaped = query.dim() != 4
        query, key, value = attn.view_qkv_to_4d(query, key, value, bsz, q_len, key.shape[1])
        if cu_seqlens is None:  # one sequence per batch row, as the FA wrapper builds it
            cu_seqlens = torch.arange(0, (bsz + 1) * q_len, q_len, dtype=torch.int32)
        max_len = q_len if max_seqlen is None else int(max_seqlen.item())
        flat = [x.reshape(1, bsz * q_len, *x.shape[2:]) for x in (query, key, value)]
        out = varlen_attention(*flat, cu_seqlens, max_len, attn.scale)
        out = out.reshape(bsz, q_len, *out.shape[2:])
        return out.reshape(bsz, q_len, -1) if is_reshaped else out

    return forward


@contextlib.contextmanager
def fa_attention(model, emu=None, max_seqlen_override: int | None = None):
    """Route the vision tower to flash-attn semantics (see module doc); with ``emu``,
    declare each captured ``max_seqlen`` host-resident. ``max_seqlen_override`` bakes
    that value instead (a negative control)."""
    from vllm.model_executor.layers.attention.mm_encoder_attention import (
        MMEncoderAttention,
    )
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    visual = model.visual
    attns = [m for m in visual.modules() if isinstance(m, MMEncoderAttention)]
    saved_backend = visual.attn_backend
    saved_prepare = model.__dict__.get("prepare_encoder_cudagraph_capture_inputs")
    prepare = model.prepare_encoder_cudagraph_capture_inputs

    def prepare_capture(*args, **kwargs):
        inputs = prepare(*args, **kwargs)
        if max_seqlen_override is not None:
            inputs.buffers["max_seqlen"].fill_(max_seqlen_override)
        if emu is not None:
            emu.declare_host_resident(inputs.buffers["max_seqlen"])
        return inputs

    visual.attn_backend = AttentionBackendEnum.FLASH_ATTN
    model.prepare_encoder_cudagraph_capture_inputs = prepare_capture
    saved_forwards = [attn._forward_method for attn in attns]
    for attn in attns:
        attn._forward_method = _fa_forward(attn)
    try:
        yield model
    finally:
        visual.attn_backend = saved_backend
        if saved_prepare is None:
            del model.prepare_encoder_cudagraph_capture_inputs
        else:  # nested use
            model.prepare_encoder_cudagraph_capture_inputs = saved_prepare
        for attn, forward in zip(attns, saved_forwards):
            attn._forward_method = forward


# ---------------------------------------------------------------------------
# Harness: graph path vs the model's own eager path, per item
# ---------------------------------------------------------------------------

TOLERANCE = 1e-4
INPUT_KEYS = {
    "image": ("pixel_values", "image_grid_thw"),
    "video": ("pixel_values_videos", "video_grid_thw"),
}


def encoder_inputs(modality: str, grids: list[list[int]], seed: int = 0, flat: int = 1536):
    """mm_kwargs as the runner passes them: pixels (patches x C*T*P*P), grid tensor."""
    key, grid_key = INPUT_KEYS[modality]
    n = sum(t * h * w for t, h, w in grids)
    gen = torch.Generator().manual_seed(seed)
    return {key: torch.randn(n, flat, generator=gen), grid_key: torch.tensor(grids)}


def split_items(mm_kwargs) -> list[dict]:
    """One mm_kwargs per item (same keys)."""
    (key, grid_key), = [k for k in INPUT_KEYS.values() if k[0] in mm_kwargs]
    out, offset = [], 0
    for t, h, w in mm_kwargs[grid_key].tolist():
        n = t * h * w
        out.append({key: mm_kwargs[key][offset:offset + n], grid_key: [[t, h, w]]})
        offset += n
    return out


def per_item_eager(model, mm_kwargs) -> list[torch.Tensor]:
    """Each item alone through the model's eager path (vLLM's own CPU attention)."""
    with torch.inference_mode():
        return [model.encoder_eager_forward(item) for item in split_items(mm_kwargs)]


def run_graph_path(mgr, model, emu, mm_kwargs) -> list[torch.Tensor]:
    with torch.inference_mode(), fa_attention(model, emu):
        return mgr.execute(mm_kwargs)


def max_abs_diffs(got, want) -> list[float]:
    """Per item; inf where shapes differ or a row holds NaN."""
    diffs = []
    for g, w in zip(got, want):
        if g.shape != w.shape or not torch.isfinite(g).all():
            diffs.append(float("inf"))
        else:
            diffs.append((g - w).abs().max().item())
    return diffs + [float("inf")] * abs(len(got) - len(want))


def assert_matches_eager(model, mm_kwargs, got, tol: float = TOLERANCE) -> float:
    """Every returned row finite and within tol of the eager result; the worst diff."""
    diffs = max_abs_diffs(got, per_item_eager(model, mm_kwargs))
    assert diffs and max(diffs) < tol, f"graph path vs eager, per item: {diffs}"
    return max(diffs)


def captured_manager(vllm_config, model, emu, **fa_kwargs):
    """The real EncoderCudaGraphManager, every budget captured under the emulation."""
    from helpers import cpu_manager

    with fa_attention(model, emu, **fa_kwargs):  # the manager enters inference mode
        mgr = cpu_manager(vllm_config, model)
        mgr.capture()
    return mgr


def leave_cu_seqlens_out(monkeypatch, model) -> None:
    """Negative control: the model's replay buffers lose ``cu_seqlens``, so a replay reads
    the value the last capture or replay left in the graph's static buffer."""
    prepare = model.prepare_encoder_cudagraph_replay_buffers

    def without_cu_seqlens(*args, **kwargs):
        replay = prepare(*args, **kwargs)
        del replay.buffers["cu_seqlens"]
        return replay

    monkeypatch.setattr(model, "prepare_encoder_cudagraph_replay_buffers", without_cu_seqlens)
