"""Encoder CUDA graph figures: the real tiny Qwen3-VL tower under the CPU graph emulation.

Printed, not asserted (make bench):
  1. ATen ops per encoder call: eager (vLLM's CPU attention; and with the flash-attn
     routing the graphs are captured with) vs the graph path (the manager's host-side
     ops + one replay, and the kernels that replay launches).
  2. Bytes of every captured graph's static buffers (input, metadata, output) with
     max_frames_per_batch auto (0004) vs the old max_batch_size * 2 rule, for two
     max_model_len values; plus all memory the emulated graph touches.
  3. The per-budget frame clamp: cu_seqlens length and static bytes of each graph
     with and without it.
  4. Wall time of tests/behaviour/test_encoder_cudagraph_emulated.py.

Usage: python3 benchmarks/bench_encoder_graphs.py [--smoke]  (builds the overlay wheel in a
scratch repo under work/, never into wheelhouse/, a no-op when the series is unchanged; makes
or reuses the overlay test venv, then runs itself there with --figures from a copy of
tests/behaviour).
--smoke (CI): the first batch, the first max_model_len and the auto rule only; the test file
is not timed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCH = "x86_64"
BUDGETS = [64, 128, 256]
MAX_ITEMS = 3
MAX_MODEL_LENS = (1024, 4096)  # the tiny config allows up to 4096
LIMITS = {"image": 4, "video": 1}  # one video per prompt: its frames follow max_model_len
CASES = {  # name: (modality, grids [t, h, w] in patches)
    "1 image, 64 tokens": ("image", [[1, 16, 16]]),
    "3 images, 96 tokens": ("image", [[1, 16, 12], [1, 8, 8], [1, 8, 16]]),
    "3 videos, 6 frames": ("video", [[2, 8, 8], [3, 8, 12], [1, 16, 8]]),
}


def drive(smoke: bool) -> int:
    """In the repo's Python: make the overlay venv, run the figures and time the tests."""
    sys.path.insert(0, str(ROOT))
    import benchlib
    from vllm_overlay.wheelbuild.overlay_mode import build_overlay_wheel
    from vllm_overlay.common import venvs
    from vllm_overlay.common.paths import cache_dir
    from vllm_overlay.testing import testenv
    from vllm_overlay.testing.harness import BEHAVIOUR, BEHAVIOUR_INI, clean_env

    # wheelhouse/ is what `make publish` uploads: the bench builds its own copy (the same
    # bytes: the build is reproducible, so the overlay venv keyed by its sha256 is shared)
    repo = benchlib.scratch_repo(ROOT / "work" / "bench-encoder-graphs-repo", keep_builds=True)
    wheel = build_overlay_wheel(ARCH, repo / "wheelhouse", repo / "patches", repo)
    base = testenv.ensure_base(ARCH)
    python = str(venvs.python_of(testenv.ensure_vllm_env(base, wheel)))
    work = ROOT / "work" / "bench-encoder-graphs"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(BEHAVIOUR, work, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "pytest.ini").write_text(BEHAVIOUR_INI)
    # vLLM's model inspection (a subprocess importing torch and vLLM, ~20 s) is cached in
    # VLLM_CACHE_ROOT/modelinfos, checked against the model file's hash: kept between runs
    env = clean_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                    VLLM_CACHE_ROOT=str(cache_dir() / "vllm-cache" / "bench-encoder-graphs"))
    rc = subprocess.run([python, str(Path(__file__).resolve()), "--figures"]
                        + (["--smoke"] if smoke else []), cwd=work, env=env).returncode
    if smoke:
        print("\ntest_encoder_cudagraph_emulated.py: not timed (--smoke)")
        shutil.rmtree(work, ignore_errors=True)
        return rc
    started = time.monotonic()
    test_rc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "-o", "asyncio_default_fixture_loop_scope=function",
                              "test_encoder_cudagraph_emulated.py"], cwd=work, env=env,
                             stdout=subprocess.DEVNULL).returncode
    print(f"\ntest_encoder_cudagraph_emulated.py: {time.monotonic() - started:.1f} s "
          f"wall on {os.cpu_count()} cores (pytest exit {test_rc})")
    shutil.rmtree(work, ignore_errors=True)
    return rc or test_rc


def figures(smoke: bool) -> None:
    """In the overlay venv, cwd = a copy of tests/behaviour."""
    sys.path.insert(0, os.getcwd())
    import tempfile

    import torch
    from conftest import write_tiny_qwen3_vl  # selects the CPU platform
    from cuda_graph_emulation import count_aten_ops, emulate_cuda_graphs
    from helpers import vllm_config_for
    from qwen3_vl_cpu import (build_qwen3_vl, captured_manager, encoder_inputs,
                              fa_attention, run_graph_path)

    model_dir = write_tiny_qwen3_vl(Path(tempfile.mkdtemp()) / "tiny-qwen3-vl")

    def config(max_model_len, frames=None):
        comp = {"cudagraph_mm_encoder": True, "encoder_cudagraph_token_budgets": BUDGETS,
                "encoder_cudagraph_max_vision_items_per_batch": MAX_ITEMS}
        if frames is not None:
            comp["encoder_cudagraph_max_frames_per_batch"] = frames
        return vllm_config_for(model_dir, max_model_len=max_model_len, dtype="float32",
                               limit_mm_per_prompt=LIMITS, compilation=comp)

    print(f"budgets {BUDGETS} output tokens, max_batch_size {MAX_ITEMS}, "
          f"limit_mm_per_prompt {LIMITS}; tiny Qwen3-VL tower (depth 2, deepstack 1, "
          "hidden 32), float32, CPU")
    print("\n1. ATen ops per encoder call (a replay is one graph launch)")
    print(f"  {'batch':22} {'eager, CPU attn':>16} {'eager, FA routing':>18} "
          f"{'graph path: host ops + 1 replay':>32} {'kernels in replay':>18}")
    model = build_qwen3_vl(config(MAX_MODEL_LENS[0]))
    with emulate_cuda_graphs() as emu:
        mgr = captured_manager(config(MAX_MODEL_LENS[0], frames=8), model, emu)
    for name, (modality, grids) in list(CASES.items())[:1 if smoke else None]:
        mm = encoder_inputs(modality, grids)
        with torch.inference_mode():
            with count_aten_ops() as eager_cpu:
                model.encoder_eager_forward(mm)
            with fa_attention(model, emu), count_aten_ops() as eager_fa:
                model.encoder_eager_forward(mm)
        before = {b: m.graph.replays for b, m in mgr.budget_graphs.items()}
        with count_aten_ops() as host:
            run_graph_path(mgr, model, emu, mm)
        used = [m.graph for b, m in mgr.budget_graphs.items() if m.graph.replays > before[b]]
        kernels = "+".join(str(g.num_kernels) for g in used)
        print(f"  {name:22} {eager_cpu.kernels:16d} {eager_fa.kernels:18d} "
              f"{host.kernels:>28d} + {len(used)} {kernels:>18}")

    print("\n2. Static buffers per captured graph (input + metadata + output), bytes")
    print(f"  {'max_model_len':>13} {'rule':24} {'frames':>6} "
          + " ".join(f"{'budget ' + str(b):>14}" for b in BUDGETS)
          + f" {'total':>10} {'allocated**':>12} {'all touched*':>13}")
    for max_model_len in MAX_MODEL_LENS[:1 if smoke else None]:
        model = build_qwen3_vl(config(max_model_len))
        rules = (("auto (0004)", None), ("max_batch_size * 2", MAX_ITEMS * 2))
        for rule, frames in rules[:1 if smoke else None]:
            with emulate_cuda_graphs() as emu:
                mgr = captured_manager(config(max_model_len, frames), model, emu)
            sizes = [meta.input_buffer.nbytes + meta.output_buffer.nbytes
                     + sum(t.nbytes for t in meta.metadata_buffers.values()
                           if t is not None)
                     for meta in (mgr.budget_graphs[b] for b in BUDGETS)]
            storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                        for meta in mgr.budget_graphs.values()
                        for t in (meta.input_buffer, meta.output_buffer,
                                  *meta.metadata_buffers.values()) if t is not None}
            touched = sum(m.graph.static_bytes() for m in mgr.budget_graphs.values())
            print(f"  {max_model_len:13d} {rule:24} {mgr.max_frames_per_batch:6d} "
                  + " ".join(f"{s:14,d}" for s in sizes)
                  + f" {sum(sizes):10,d} {sum(storages.values()):12,d} {touched:13,d}",
                  flush=True)
    print("  * every storage the emulated graphs read or write (graph pool: intermediates"
          "\n    too, including the reference attention's S x S scores that flash attention"
          "\n    does not allocate)"
          "\n  ** the distinct storages behind those buffers: 0009 gives every smaller budget"
          "\n    prefix views of the largest budget's buffers, so about the largest alone")

    print("\n3. Per-budget frame clamp (0004, as upstream 0.34): cu_seqlens length and"
          "\n   static bytes per graph, frames per graph min(max_frames_per_batch, budget)"
          "\n   ('after') vs every graph padded to max_frames_per_batch ('before')")
    print(f"  {'frames':>6} {'':7} "
          + " ".join(f"{'budget ' + str(b) + ' cu/bytes':>24}" for b in BUDGETS)
          + f" {'total bytes':>12}")
    from vllm.v1.worker.encoder_cudagraph import EncoderCudaGraphManager

    clamp = EncoderCudaGraphManager._frames_for_budget
    model = build_qwen3_vl(config(MAX_MODEL_LENS[0]))
    for frames in (24, 2048):  # 24: auto at 4096 with one video; 2048: a long context
        for label, frames_for_budget in (
                ("before", lambda self, budget: self.max_frames_per_batch),
                ("after", clamp)):
            EncoderCudaGraphManager._frames_for_budget = frames_for_budget
            try:
                with emulate_cuda_graphs() as emu:
                    mgr = captured_manager(config(MAX_MODEL_LENS[0], frames), model, emu)
            finally:
                EncoderCudaGraphManager._frames_for_budget = clamp
            cells, total = [], 0
            for meta in (mgr.budget_graphs[b] for b in BUDGETS):  # captured largest first
                size = (meta.input_buffer.nbytes + meta.output_buffer.nbytes
                        + sum(t.nbytes for t in meta.metadata_buffers.values()
                              if t is not None))
                total += size
                cells.append(f"{meta.metadata_buffers['cu_seqlens'].numel():>8} / "
                             f"{size:>12,d}")
            print(f"  {frames:6d} {label:7} " + " ".join(f"{c:>24}" for c in cells)
                  + f" {total:12,d}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true",
                        help="CI: the first batch and max_model_len only, the tests not timed")
    args = parser.parse_args()
    if args.figures:
        figures(args.smoke)
    else:
        sys.exit(drive(args.smoke))
