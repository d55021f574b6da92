"""Unit tests of the CPU CUDA-graph emulation (cuda_graph_emulation.py): it must show
what a GPU capture shows, or the encoder graph tests built on it prove nothing."""

from __future__ import annotations

import math

import pytest
import torch
from cuda_graph_emulation import count_aten_ops, emulate_cuda_graphs, install
from torch.library import Library

_LIB = Library("emulation_test", "FRAGMENT")
_LIB.define("scale_shift(Tensor x, float a) -> Tensor")
_LIB.impl("scale_shift", lambda x, a: x * a + 1.0, "CPU")


def _capture(fn, *args):
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn(*args)
    return g, out


@pytest.fixture
def emu(monkeypatch):
    return install(monkeypatch)


def test_replay_reruns_kernels_on_static_buffers_not_python(emu):
    calls = []

    def f(x):
        calls.append(1)
        return torch.relu(x @ x.T) + 1

    x = torch.randn(4, 3)
    g, out = _capture(f, x)
    assert calls == [1]
    new = torch.randn(4, 3)
    x.copy_(new)
    g.replay()
    assert calls == [1]  # replay ran no Python of f
    torch.testing.assert_close(out, torch.relu(new @ new.T) + 1)
    assert emu.violations == []


def test_python_branch_on_data_replays_captured_branch(emu):
    """The branch is decided by Python at capture (baked), as in a real graph; the
    data read that decided it is reported."""

    def f(x):
        if x.sum() > 0:
            return x * 2
        return x - 1

    x = torch.ones(3)
    g, out = _capture(f, x)
    x.copy_(-torch.ones(3))
    g.replay()
    torch.testing.assert_close(out, -2 * torch.ones(3))  # x * 2, not x - 1
    assert [v.kind for v in emu.violations] == ["__bool__"]
    assert "test_cuda_graph_emulation.py" in emu.violations[0].where


def test_host_resident_branch_is_baked_without_violation(emu):
    flag = torch.tensor(1)
    emu.declare_host_resident(flag)

    def f(x):
        return x * 2 if flag.item() else x - 1

    x = torch.ones(3)
    g, out = _capture(f, x)
    flag.fill_(0)
    g.replay()
    torch.testing.assert_close(out, 2 * torch.ones(3))
    assert emu.violations == []


@pytest.mark.parametrize("read", ["tolist", "item", "numpy", "int", "float"])
def test_host_reads_in_capture_are_reported(emu, read):
    x = torch.arange(3)

    def f(x):
        if read == "tolist":
            lens = (x + 1).tolist()
        elif read == "item":
            lens = [int((x + 1)[0].item())]
        elif read == "numpy":
            pytest.importorskip("numpy")
            lens = list((x + 1).numpy())
        elif read == "int":
            lens = [int((x + 1)[0])]
        else:
            lens = [math.floor(float((x + 1)[0]))]
        return torch.zeros(len(lens)) + x.sum()

    _capture(f, x)
    assert len(emu.violations) == 1, [str(v) for v in emu.violations]
    v = emu.violations[0]
    assert v.kind in {"tolist", "item", "numpy", "__int__", "__float__"}
    assert "in f" in v.where and "test_cuda_graph_emulation.py" in v.where
    assert str(v).startswith("graph 0: ")
    # after capture the same reads are fine (no capture running)
    assert x.tolist() == [0, 1, 2]
    assert len(emu.violations) == 1


def test_data_dependent_shape_is_reported(emu):
    x = torch.tensor([0.0, 1.0, 2.0])
    _capture(lambda x: torch.nonzero(x), x)
    assert [v.kind for v in emu.violations] == [
        "data-dependent shape (aten.nonzero.default)"
    ]


def test_outputs_written_in_capture_are_poisoned(emu):
    x = torch.randn(5)
    out_buffer = torch.zeros(5)
    ints = torch.zeros(5, dtype=torch.int64)

    def f(x):
        y = torch.exp(x)
        out_buffer.copy_(y)
        ints.copy_(torch.argsort(x))
        return y

    g, y = _capture(f, x)
    assert torch.isnan(y).all() and torch.isnan(out_buffer).all()
    assert (ints == torch.iinfo(torch.int64).min).all()
    assert not torch.isnan(x).any()  # only read, not written: untouched
    g.replay()
    torch.testing.assert_close(out_buffer, torch.exp(x))
    torch.testing.assert_close(ints, torch.argsort(x))


def test_non_tensor_arguments_are_constants(emu):
    lens = [2, 3]
    x = torch.arange(5.0)
    g, parts = _capture(lambda x: [p.sum(0, keepdim=True) for p in torch.split(x, lens)], x)
    lens[:] = [4, 1]  # a later Python change does not reach the graph
    x.copy_(torch.arange(5.0) * 10)
    g.replay()
    assert [p.item() for p in parts] == [10.0, 90.0]


def test_custom_op_is_expanded_into_aten_ops(emu):
    x = torch.randn(4)
    g, out = _capture(lambda x: torch.ops.emulation_test.scale_shift(x, 3.0), x)
    assert {op.func.namespace for op in g.ops} == {"aten"}
    assert g.num_kernels == 2  # mul, add
    x.copy_(torch.ones(4))
    g.replay()
    torch.testing.assert_close(out, torch.full((4,), 4.0))


def test_host_ops_are_not_recorded(emu):
    host = torch.tensor(7)
    emu.declare_host_resident(host)
    x = torch.zeros(2)
    g, out = _capture(lambda x: x + (host * 2).item(), x)
    assert emu.violations == []
    assert [str(op.func) for op in g.ops] == ["aten.add.Tensor"]
    x.fill_(1)
    g.replay()
    torch.testing.assert_close(out, torch.full((2,), 15.0))


def test_replay_keeps_inference_mode_of_capture(emu):
    x = torch.randn(3)
    with torch.inference_mode():
        g, out = _capture(lambda x: x.sin(), x)
    g.replay()  # outside inference mode: still writes the inference tensors
    torch.testing.assert_close(out, x.sin())


def test_kernel_counts_and_static_bytes(emu):
    x = torch.randn(8, 8)
    with count_aten_ops() as counted:
        (x.T @ x).relu().view(-1)
    g, _ = _capture(lambda x: (x.T @ x).relu().view(-1), x)
    assert g.num_kernels == counted.kernels == 2  # mm, relu; T and view are views
    assert g.static_bytes() == 3 * 8 * 8 * 4  # x, mm output, relu output


def test_context_manager_restores_torch_cuda():
    original = torch.cuda.CUDAGraph
    with emulate_cuda_graphs() as emu:
        g, out = _capture(lambda x: x + 1, torch.zeros(1))
        g.replay()
        assert out.item() == 1.0 and emu.graphs == [g]
    assert torch.cuda.CUDAGraph is original
    assert "tolist" not in torch.Tensor.__dict__


def test_host_tensor_read_by_a_kernel_is_baked(emu):
    scale = torch.tensor(3.0)
    emu.declare_host_resident(scale)
    x = torch.ones(2)
    g, out = _capture(lambda x: x * scale, x)
    scale.fill_(5.0)  # e.g. the manager copying a replay value into it
    g.replay()
    torch.testing.assert_close(out, torch.full((2,), 3.0))


def test_may_alias_ops_that_copy_are_replayed(emu):
    """`reshape`/`to` say "may alias" but copy here: replay must recompute them."""
    x = torch.randn(4, 3)
    g, out = _capture(lambda x: x.t().reshape(-1).to(torch.float64) * 2, x)
    new = torch.randn(4, 3)
    x.copy_(new)
    g.replay()
    torch.testing.assert_close(out, new.t().reshape(-1).to(torch.float64) * 2)
