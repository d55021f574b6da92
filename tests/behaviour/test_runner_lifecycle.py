"""The encoder-graph lifecycle of vLLM's own model runner, in the engine's order, on the
CPU: ``profile_cudagraph_memory()`` -> ``update_max_model_len()`` (auto-fit) ->
``capture_model()`` -> ``_execute_mm_encoder()``, with vLLM's ``CPUModelRunner`` (a
``GPUModelRunner`` subclass), the real tiny Qwen3-VL (built from the runner's own config,
so ``model.model_config`` is the runner's, as in the engine) and the CUDA-graph emulation.
What ``_execute_mm_encoder`` returns is compared, item by item, with the model's own
eager ``embed_multimodal`` on each item alone (vLLM's CPU attention, TORCH_SDPA).

Stubbed device plumbing (runner_lifecycle.py says why for each):
``torch.cuda.mem_get_info``; ``torch.accelerator.synchronize`` / ``empty_cache``;
``gpu_model_runner.graph_capture``; ``gpu_model_runner.lock_workspace``;
``current_platform.graph_pool_handle``; ``runner.cudagraph_dispatcher.get_capture_descs``
-> ``[]`` (no decoder graphs); ``runner._check_and_update_cudagraph_mode`` (the decoder's
CPU attention backend would force NONE); ``cpu_model_runner.get_model`` (returns the
prebuilt model); torch.cuda's graph API (the emulation). ``is_multimodal_pruning_enabled``
is set as ``GPUModelRunner.load_model`` sets it (``CPUModelRunner.load_model`` does not).

Cases: decoder ``cudagraph_mode`` FULL_AND_PIECEWISE and NONE (set after the config and
the runner are built: the CPU platform forces NONE); EVS on (images); the ViT on
TORCH_SDPA (graphs stay off); a model lacking a protocol method; ``max_model_len``
auto-fit (what is captured must be built from the fitted length). Graph cases run the ViT
with flash-attn semantics and report FLASH_ATTN (runner_lifecycle.capture_safe_vit)
through start-up and steps, as a GPU run with a capture-safe backend does; the eager
reference is computed outside it.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from qwen3_vl_cpu import TOLERANCE, build_qwen3_vl, leave_cu_seqlens_out
from runner_lifecycle import (
    assert_items_match,
    capture_safe_vit,
    cpu_runner,
    eager_embeddings,
    encode,
    install_device_stubs,
    runner_config,
    start_up,
)

GRAPHS = {"cudagraph_mm_encoder": True}
# Auto budgets are capped at min(max_num_batched_tokens, max_model_len): 64, 128, 256.
MAX_TOKENS = 256
LIMITS = {"image": 4, "video": 1}  # one video per prompt: frames per video grow with length
STEP = [  # one engine step: two image requests and a video request, 5 items
    ("image", [[1, 8, 8], [1, 8, 12]]),
    ("video", [[2, 8, 8]]),
    ("image", [[1, 16, 8], [1, 4, 4]]),
]


@contextlib.contextmanager
def lifecycle(model_dir, mode: str, wrap=None, **config):
    """(runner, model, emu): stubs and emulation installed, runner built and loaded
    (with ``wrap(model)`` as the loaded model when given), nothing run yet; everything
    undone on exit."""
    config = {"max_num_batched_tokens": MAX_TOKENS, "compilation": GRAPHS,
              "limit_mm_per_prompt": LIMITS, **config}
    with pytest.MonkeyPatch.context() as mp:
        emu = install_device_stubs(mp)
        vllm_config = runner_config(model_dir, **config)
        model = build_qwen3_vl(vllm_config)
        runner = cpu_runner(vllm_config, wrap(model) if wrap else model, mp, mode)
        yield runner, model, emu


def step(runner, model, emu, requests, *, vit_flash: bool = True):
    """One engine step through the runner (the ViT as in the lifecycle), and the eager
    reference of each of its items (outside any routing)."""
    with capture_safe_vit(model, emu) if vit_flash else contextlib.nullcontext():
        got, items = encode(runner, requests)
    return got, eager_embeddings(model, items)


def hits(runner) -> tuple[int, int]:
    mgr = runner.encoder_cudagraph_manager
    return (mgr.graph_hits, mgr.graph_misses) if mgr is not None else (0, 0)


# ---------------------------------------------------------------------------
# Decoder cudagraph_mode FULL_AND_PIECEWISE and NONE: one runner per mode and module
# ---------------------------------------------------------------------------


class Started(tuple):
    """(mode, runner, model, emu); a short repr for hypothesis' reports."""

    def __repr__(self):
        return f"<runner started in {self[0]}>"


@pytest.fixture(scope="module", params=["FULL_AND_PIECEWISE", "NONE"])
def started(request, cpu_platform, qwen3_vl_session_dir):
    """A runner through profile_cudagraph_memory() and capture_model() in that mode."""
    with lifecycle(qwen3_vl_session_dir, request.param) as (runner, model, emu):
        with capture_safe_vit(model, emu):
            start_up(runner)
        yield Started((request.param, runner, model, emu))


def test_first_step_matches_eager(started):
    """The first encoder step after start-up: every item equals eager (NONE: pristine
    0.19.1 runs it eagerly; the series must not crash there)."""
    mode, runner, model, emu = started
    got, want = step(runner, model, emu, STEP)
    assert_items_match(got, want, TOLERANCE)
    assert emu.violations == [], [str(v) for v in emu.violations]
    if mode == "FULL_AND_PIECEWISE":
        mgr = runner.encoder_cudagraph_manager
        assert mgr is not None
        # Every budget captured for real (not only during profiling), and used.
        assert sorted(mgr.budget_graphs) == mgr.token_budgets == [64, 128, 256]
        assert all(m.graph.num_kernels > 100 for m in mgr.budget_graphs.values())
        assert sum(hits(runner)) >= 5 and hits(runner)[0] > 0


_grid = st.tuples(st.sampled_from([4, 8, 12, 16]), st.sampled_from([4, 8, 12, 16]))
_request = st.one_of(
    st.tuples(st.just("image"), st.lists(_grid.map(lambda g: [1, *g]), min_size=1,
                                         max_size=3)),
    st.tuples(st.just("video"), st.lists(
        st.tuples(st.integers(1, 5), _grid).map(lambda x: [x[0], *x[1]]),
        min_size=1, max_size=2)),
)


@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded run time
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(_request, min_size=1, max_size=3))
def test_random_steps_match_eager(started, requests):
    """Steps of images and videos of varied sizes and counts (some over a budget, a
    batch size or the frame limit): every item equals eager, in order."""
    mode, runner, model, emu = started
    before = hits(runner)
    got, want = step(runner, model, emu, [(m, [list(g) for g in grids])
                                          for m, grids in requests])
    assert_items_match(got, want, TOLERANCE)
    if mode == "FULL_AND_PIECEWISE":  # every item a hit or a miss
        counted = [a - b for a, b in zip(hits(runner), before)]
        assert sum(counted) == sum(len(g) for _, g in requests)


# ---------------------------------------------------------------------------
# Cases where the graphs stay off: the runner's eager path is the model's own
# ---------------------------------------------------------------------------


def _assert_graphs_off(runner, emu):
    assert runner.encoder_cudagraph_manager is None
    assert emu.graphs == []  # not even during profiling


def test_evs_images_run_eagerly(cpu_platform, qwen3_vl_session_dir):
    """EVS on (video_pruning_rate): no manager, images through the model's own path,
    position channels included."""
    with lifecycle(qwen3_vl_session_dir, "FULL_AND_PIECEWISE",
                   video_pruning_rate=0.5) as (runner, model, emu):
        assert runner.is_multimodal_pruning_enabled
        with capture_safe_vit(model, emu):
            start_up(runner)
        _assert_graphs_off(runner, emu)
        got, want = step(runner, model, emu, [STEP[0], STEP[2]])
        assert_items_match(got, want, TOLERANCE)
        plain = model.visual_dim + model.multiscale_dim
        assert {g.shape[-1] for g in got} == {plain + 5}  # EVS position channels


def test_torch_sdpa_vit_keeps_graphs_off(cpu_platform, qwen3_vl_session_dir):
    """The ViT as the CPU platform builds it (TORCH_SDPA, not capture-safe): no graph
    captured anywhere in the lifecycle, and the step runs eagerly and correctly."""
    with lifecycle(qwen3_vl_session_dir, "FULL_AND_PIECEWISE") as (runner, model, emu):
        start_up(runner)
        _assert_graphs_off(runner, emu)
        got, want = step(runner, model, emu, STEP, vit_flash=False)
        assert assert_items_match(got, want, 1e-5) < 1e-5  # the same attention


class WrittenFor0191(torch.nn.Module):
    """A model written for 0.19.1's encoder-graph protocol: declares
    ``supports_encoder_cudagraph`` and has its methods (the real Qwen3-VL behind it),
    but not ``missing`` (one the series added), and does not inherit the protocol
    class (which would supply a stub body)."""

    supports_encoder_cudagraph = True

    def __init__(self, model, missing: str):
        super().__init__()
        self.inner = model
        self.missing = missing

    def __getattr__(self, name):
        if name == self.__dict__.get("missing"):
            raise AttributeError(name)
        inner = super().__getattr__("inner")
        return inner if name == "inner" else getattr(inner, name)


def test_model_lacking_a_protocol_method(cpu_platform, qwen3_vl_session_dir, vllm_logs):
    """Graphs stay off with a warning naming the missing method; the step runs
    through the model's own eager path and equals eager."""
    missing = "get_max_frames_per_video"
    with lifecycle(qwen3_vl_session_dir, "FULL_AND_PIECEWISE",
                   wrap=lambda m: WrittenFor0191(m, missing)) as (runner, model, emu):
        assert isinstance(runner.get_model(), WrittenFor0191)
        assert not hasattr(runner.get_model(), missing)
        with capture_safe_vit(model, emu):
            start_up(runner)
        _assert_graphs_off(runner, emu)
        warned = [r.getMessage() for r in vllm_logs if "lacks" in r.getMessage()]
        assert warned and missing in warned[0] and "WrittenFor0191" in warned[0]
        got, want = step(runner, model, emu, STEP)
        assert_items_match(got, want, TOLERANCE)


# ---------------------------------------------------------------------------
# max_model_len auto-fit
# ---------------------------------------------------------------------------

FITTED = 128  # the engine's auto-fit result for --max-model-len -1 (full length 4096)


def _reference_manager(model_dir, max_model_len):
    """The manager a runner builds when the engine starts with this length: the real
    create_encoder_cudagraph_manager, for a model built from that config."""
    from runner_lifecycle import runner_config as config_for
    from vllm.v1.worker.encoder_cudagraph import create_encoder_cudagraph_manager

    vllm_config = config_for(model_dir, max_model_len=max_model_len,
                             max_num_batched_tokens=MAX_TOKENS, compilation=GRAPHS,
                             limit_mm_per_prompt=LIMITS)
    model = build_qwen3_vl(vllm_config)
    with capture_safe_vit(model, None):
        mgr = create_encoder_cudagraph_manager(
            vllm_config, torch.device("cpu"), torch.float32, model)
    return (mgr.token_budgets, mgr.max_batch_size, mgr.max_frames_per_batch)


def test_auto_fit_captures_for_the_fitted_length(cpu_platform, qwen3_vl_session_dir):
    """--max-model-len -1: profiling runs at the full length, the engine fits 128 and
    calls update_max_model_len, then capture_model. What is captured (budgets, batch
    size, frame limit) is what a start at 128 builds, and the step equals eager."""
    fitted = _reference_manager(qwen3_vl_session_dir, FITTED)
    full = _reference_manager(qwen3_vl_session_dir, -1)
    assert fitted != full  # the fit changes what must be captured (else no test)
    assert max(fitted[0]) <= FITTED

    with lifecycle(qwen3_vl_session_dir, "FULL_AND_PIECEWISE",
                   max_model_len=-1) as (runner, model, emu):
        assert runner.max_model_len == 4096
        with capture_safe_vit(model, emu):
            start_up(runner, fitted_max_model_len=FITTED)
        assert runner.max_model_len == model.model_config.max_model_len == FITTED
        mgr = runner.encoder_cudagraph_manager
        captured = (sorted(mgr.budget_graphs), mgr.max_batch_size,
                    mgr.max_frames_per_batch)
        assert captured == fitted, f"captured {captured}, fitted length gives {fitted}"
        assert {(m.max_batch_size, m.max_frames_per_batch)
                for m in mgr.budget_graphs.values()} == {fitted[1:]}
        got, want = step(runner, model, emu, [STEP[0], ("video", [[2, 8, 8]])])
        assert_items_match(got, want, TOLERANCE)


# ---------------------------------------------------------------------------
# Negative controls: the comparison catches a wrong output
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph_runner(cpu_platform, qwen3_vl_session_dir):
    with lifecycle(qwen3_vl_session_dir, "FULL_AND_PIECEWISE") as (runner, model, emu):
        with capture_safe_vit(model, emu):
            start_up(runner)
        yield runner, model, emu


WRONG = ["one value off by 1e-3", "two same-size items swapped",
         "replay with the capture's cu_seqlens"]


@pytest.mark.parametrize("wrong", WRONG)
def test_control_wrong_output_is_caught(graph_runner, monkeypatch, wrong):
    """The same step and comparison as above, with one thing wrong in what
    _execute_mm_encoder returns: the comparison fails."""
    runner, model, emu = graph_runner
    mgr = runner.encoder_cudagraph_manager
    execute = mgr.execute

    def wrong_execute(mm_kwargs):
        out = list(execute(mm_kwargs))
        if wrong == WRONG[0]:
            out[1] = out[1].clone()
            out[1][-1, -1] += 1e-3
        else:
            out[0], out[1] = out[1], out[0]
        return out

    if wrong == WRONG[2]:
        # A known cu_seqlens in the 128 graph: one video of 2 frames of 144 patches.
        step(runner, model, emu, [("video", [[2, 12, 12]])])
        leave_cu_seqlens_out(monkeypatch, model)
    else:
        monkeypatch.setattr(mgr, "execute", wrong_execute)
    before = hits(runner)
    got, want = step(runner, model, emu, [("image", [[1, 16, 12], [1, 16, 12], [1, 8, 8]])])
    assert hits(runner)[0] - before[0] == 3  # replayed, not run eagerly
    with pytest.raises(AssertionError, match="per item"):
        assert_items_match(got, want, TOLERANCE)
