"""CUDA graphs emulated on the CPU, with the semantics of a GPU capture and replay.

A real CUDA graph records kernels, not Python: what the captured code computed in
Python is baked into the graph, replay re-runs only the kernels on the same device
addresses, a host synchronisation during capture aborts it, and a capture runs no
kernel, so nothing it would have written holds a result until the first replay.
This module gives CPU tests those semantics so that the real model code and the real
``EncoderCudaGraphManager`` can be checked without a GPU.

Install (replaces ``torch.cuda.CUDAGraph``, ``torch.cuda.graph``,
``torch.cuda.graph_pool_handle``, ``torch.cuda.synchronize``, ``torch.cuda.Stream``,
``torch.cuda.current_stream`` and ``torch.cuda.stream``)::

    from cuda_graph_emulation import install
    emu = install(monkeypatch)          # pytest; or: with emulate_cuda_graphs() as emu:

    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):           # every ATen op is run once and recorded
        y = f(x)                        # y (and all written during capture) is NaN after
    x.copy_(new_x); g.replay()          # y now holds f(new_x); f's Python did not run

What capture records (a ``TorchDispatchMode``):
  * every ATen op with its tensors by identity (static addresses) and every
    non-tensor argument (sizes, split lengths, scalars) as a constant;
  * custom ops (``torch.ops.vllm.*`` and any non-ATen namespace) are expanded into
    the ATen ops their CPU kernel issues;
  * ops whose outputs all alias an input (views) launch no kernel: recorded, skipped
    at replay;
  * ops whose tensor inputs are all host-resident run on the host at capture time and
    are not recorded (on a GPU they are CPU ops; their result is baked); a host tensor
    that a recorded op reads is baked with its value at capture (a launch argument).

Host-resident tensors: on a GPU run some tensors live in host memory (e.g. Qwen3-VL's
``max_seqlen``, created without a device), so reading them is no synchronisation.
Declare them before capture: ``emu.declare_host_resident(t, ...)``.

Violations: ``.item()``, ``.tolist()``, ``.numpy()``, ``bool()``/``int()``/``float()``
of a device tensor, and ops with a data-dependent output shape (``nonzero``,
``masked_select``, ``unique``, ``repeat_interleave`` without ``output_size``) during
capture. Each is a ``Violation(kind, where, graph)`` in ``emu.violations`` (all graphs)
and ``graph.violations``; ``str(v)`` names the call site. Capture goes on (so a test
sees them all); a GPU would abort at the first.

Figures: ``graph.replays``, ``graph.num_kernels`` (ops one replay issues),
``graph.static_bytes()`` (every storage the recorded kernels read or write: static
buffers and the graph's pool), and ``count_aten_ops()`` (a context manager counting
kernel-launching ATen ops, for the eager path).

Not emulated: stream/event ordering (one stream), pool sharing (``graph_pool_handle``
returns a token); random ops draw from the CPU generator at each replay.
The real Qwen3-VL model for these tests: ``qwen3_vl_cpu.py``.
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

__all__ = [
    "Emulation",
    "EmulatedCUDAGraph",
    "Violation",
    "count_aten_ops",
    "emulate_cuda_graphs",
    "install",
]

_aten = torch.ops.aten
# Output shape depends on tensor values: the host must read them (a sync).
DATA_DEPENDENT_OPS = {
    _aten.nonzero.default,
    _aten.masked_select.default,
    _aten._unique2.default,
    _aten.unique_dim.default,
    _aten.unique_consecutive.default,
}
HOST_READS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__",
              "__index__", "__array__")
_HERE = str(Path(__file__).resolve())
_TORCH_DIR = str(Path(torch.__file__).resolve().parent)


@dataclass
class Violation:
    kind: str   # "item", "tolist", "numpy", "__bool__", ..., or "data-dependent shape"
    where: str  # "file:line in function" of the call site outside torch
    graph: int  # index of the graph in Emulation.graphs

    def __str__(self) -> str:
        return f"graph {self.graph}: {self.kind} during capture at {self.where}"


@dataclass
class RecordedOp:
    func: Any
    args: tuple
    kwargs: dict
    # Fresh (non-aliasing) outputs, flattened; None where the output aliases an input.
    outputs: list[torch.Tensor | None]
    is_view: bool
    written: list[torch.Tensor] = field(default_factory=list)


def _call_site() -> str:
    for frame in reversed(traceback.extract_stack()[:-1]):
        name = str(Path(frame.filename).resolve()) if frame.filename[:1] != "<" else ""
        if name and name != _HERE and not name.startswith(_TORCH_DIR):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "<unknown>"


def _tensors(tree) -> list[torch.Tensor]:
    return [x for x in tree_flatten(tree)[0] if isinstance(x, torch.Tensor)]


def _poison(t: torch.Tensor) -> None:
    if t.is_floating_point() or t.is_complex():
        t.fill_(float("nan"))
    elif t.dtype == torch.bool:
        t.fill_(True)
    else:
        t.fill_(torch.iinfo(t.dtype).min)


class EmulatedCUDAGraph:
    """Stands in for ``torch.cuda.CUDAGraph`` (capture_begin/end, replay, reset, pool)."""

    def __init__(self, emulation: Emulation, *args, **kwargs):
        self._emu = emulation
        self.index = len(emulation.graphs)
        emulation.graphs.append(self)
        self.ops: list[RecordedOp] = []
        self.violations: list[Violation] = []
        self.replays = 0
        self._mode: _CaptureMode | None = None
        self._inference = False

    # -- torch.cuda.CUDAGraph API --
    def capture_begin(self, pool=None, capture_error_mode: str = "global") -> None:
        if self._mode is not None or self.ops:
            raise RuntimeError("emulated CUDA graph: already captured (reset() first)")
        self._inference = torch.is_inference_mode_enabled()
        self._mode = _CaptureMode(self)
        self._mode.__enter__()
        self._emu._begin_host_read_checks(self)

    def capture_end(self) -> None:
        self._emu._end_host_read_checks()
        self._mode.__exit__(None, None, None)
        self._mode = None
        # A real capture runs no kernel: nothing it wrote holds a result yet.
        with torch.no_grad(), _maybe_inference(self._inference):
            for op in self.ops:
                for t in [*[o for o in op.outputs if o is not None], *op.written]:
                    _poison(t)

    def replay(self) -> None:
        if self._mode is not None:
            raise RuntimeError("emulated CUDA graph: replay() during capture")
        self.replays += 1
        # One launch: the kernels inside are not the caller's ops (hidden from its modes).
        with _disable_current_modes(), torch.no_grad(), _maybe_inference(self._inference):
            for op in self.ops:
                if op.is_view:
                    continue
                result = op.func(*op.args, **op.kwargs)
                for static, fresh in zip(op.outputs, _tensors(result)):
                    if static is not None:
                        static.copy_(fresh)

    def reset(self) -> None:
        self.ops.clear()
        self.violations.clear()

    def pool(self):
        return ("emulated-pool", self.index)

    def enable_debug_mode(self) -> None:
        pass

    # -- figures --
    @property
    def num_kernels(self) -> int:
        """ATen ops one replay issues (view ops launch no kernel)."""
        return sum(not op.is_view for op in self.ops)

    def static_bytes(self) -> int:
        """Bytes of the distinct storages the recorded kernels read or write."""
        storages: dict[int, int] = {}
        for op in self.ops:
            if op.is_view:
                continue
            for t in [*_tensors((op.args, op.kwargs)), *(o for o in op.outputs if o is not None)]:
                s = t.untyped_storage()
                storages[s.data_ptr()] = s.nbytes()
        return sum(storages.values())


def _maybe_inference(enabled: bool):
    return torch.inference_mode() if enabled else contextlib.nullcontext()


class _CaptureMode(TorchDispatchMode):
    def __init__(self, graph: EmulatedCUDAGraph):
        super().__init__()
        self.graph = graph
        self.host = graph._emu._host

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        emu = self.graph._emu
        inputs = _tensors((args, kwargs))
        if inputs and all(t in self.host for t in inputs):
            # A host op: runs now, not part of the graph; its result stays on the host.
            out = func(*args, **kwargs)
            for t in _tensors(out):
                self.host[t] = True
            return out
        if func.namespace not in ("aten", "prim"):
            # A custom op: the graph holds the kernels its implementation issues.
            with self:
                return func.redispatch(
                    torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *args, **kwargs)
        if func is _aten._local_scalar_dense.default:
            if not emu._in_host_read:
                emu._violation(self.graph, "_local_scalar_dense")
            return func(*args, **kwargs)
        if func in DATA_DEPENDENT_OPS or (
            func is _aten.repeat_interleave.Tensor and kwargs.get("output_size") is None
        ):
            emu._violation(self.graph, f"data-dependent shape ({func})")

        out = func(*args, **kwargs)
        schema = func._schema
        written = [  # in-place and out= arguments
            t for arg, value in zip(schema.arguments, [*args, *[kwargs.get(a.name) for a in
                                                                 schema.arguments[len(args):]]])
            if arg.alias_info is not None and arg.alias_info.is_write
            for t in _tensors(value)
        ]
        out_tensors = _tensors(out)
        if not out_tensors and not written:
            return out  # a scalar/bool result: baked in Python, nothing to replay
        # Aliasing by storage, not by schema: `to`, `reshape`, `contiguous` "may alias"
        # (a copy when they must), `_unsafe_view` aliases without saying so.
        input_storages = {t.untyped_storage().data_ptr() for t in inputs}
        outputs = [None if t.untyped_storage().data_ptr() in input_storages else t
                   for t in out_tensors]
        # Own containers, so later Python edits stay out; a host tensor read by a device
        # kernel is a launch argument, its value taken at capture.
        def bake(x):
            return x.clone() if isinstance(x, torch.Tensor) and x in self.host else x

        self.graph.ops.append(RecordedOp(
            func=func,
            args=tree_map(bake, args),
            kwargs=tree_map(bake, kwargs),
            outputs=outputs,
            is_view=not written and all(o is None for o in outputs),
            written=written,
        ))
        return out


class Emulation:
    """Emulated CUDA graphs: the graphs captured, violations, host-resident tensors."""

    def __init__(self):
        self.graphs: list[EmulatedCUDAGraph] = []
        self._host = WeakIdKeyDictionary()
        self._capturing: EmulatedCUDAGraph | None = None
        self._local = threading.local()
        self._saved: dict[str, Any] = {}

    @property
    def violations(self) -> list[Violation]:
        return [v for g in self.graphs for v in g.violations]

    def declare_host_resident(self, *tensors: torch.Tensor) -> None:
        """These tensors live in host memory on a GPU run: reading them is no sync."""
        for t in tensors:
            self._host[t] = True

    def is_host_resident(self, t: torch.Tensor) -> bool:
        return t in self._host

    # -- the replacements for torch.cuda --
    def CUDAGraph(self, *args, **kwargs) -> EmulatedCUDAGraph:  # noqa: N802
        return EmulatedCUDAGraph(self, *args, **kwargs)

    @contextlib.contextmanager
    def graph(self, cuda_graph: EmulatedCUDAGraph, pool=None, stream=None,
              capture_error_mode: str = "global"):
        cuda_graph.capture_begin(pool=pool, capture_error_mode=capture_error_mode)
        try:
            yield
        finally:
            cuda_graph.capture_end()

    def replacements(self) -> dict[str, Any]:
        return {
            "CUDAGraph": self.CUDAGraph,
            "graph": self.graph,
            "graph_pool_handle": lambda: ("emulated-pool", "shared"),
            "synchronize": lambda device=None: None,
            "Stream": _Stream,
            "current_stream": lambda device=None: _Stream(),
            "stream": lambda s: contextlib.nullcontext(s),
        }

    # -- host reads during capture --
    @property
    def _in_host_read(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    def _violation(self, graph: EmulatedCUDAGraph, kind: str) -> None:
        graph.violations.append(Violation(kind, _call_site(), graph.index))

    def _begin_host_read_checks(self, graph: EmulatedCUDAGraph) -> None:
        if self._capturing is not None:
            raise RuntimeError("emulated CUDA graph: nested capture")
        self._capturing = graph
        for name in HOST_READS:
            self._saved[name] = torch.Tensor.__dict__.get(name)
            setattr(torch.Tensor, name, self._checked_read(name, getattr(torch.Tensor, name)))

    def _end_host_read_checks(self) -> None:
        for name, own in self._saved.items():
            if own is None:
                delattr(torch.Tensor, name)  # inherited from torch._C.TensorBase
            else:
                setattr(torch.Tensor, name, own)
        self._saved.clear()
        self._capturing = None

    def _checked_read(self, name: str, original):
        emu = self

        def read(tensor, *args, **kwargs):
            graph = emu._capturing
            if graph is not None and not emu._in_host_read and tensor not in emu._host:
                emu._violation(graph, name)
            emu._local.depth = getattr(emu._local, "depth", 0) + 1
            try:
                return original(tensor, *args, **kwargs)
            finally:
                emu._local.depth -= 1

        read.__name__ = name
        return read


class _Stream:
    """Enough of ``torch.cuda.Stream`` for code that only orders work on one device."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, other) -> None:
        pass

    def synchronize(self) -> None:
        pass


def install(monkeypatch) -> Emulation:
    """Replace torch.cuda's graph API for the test (undone by pytest's monkeypatch)."""
    emu = Emulation()
    for name, value in emu.replacements().items():
        monkeypatch.setattr(torch.cuda, name, value)
    return emu


@contextlib.contextmanager
def emulate_cuda_graphs():
    """Context-manager form of ``install`` (restores torch.cuda on exit)."""
    emu = Emulation()
    saved = {name: getattr(torch.cuda, name) for name in emu.replacements()}
    try:
        for name, value in emu.replacements().items():
            setattr(torch.cuda, name, value)
        yield emu
    finally:
        for name, value in saved.items():
            setattr(torch.cuda, name, value)


class count_aten_ops(TorchDispatchMode):  # noqa: N801
    """``with count_aten_ops() as c: f()`` -> ``c.kernels``: kernel-launching ATen ops
    (view ops and scalar reads excluded; custom ops counted as the ATen ops they issue)."""

    def __init__(self):
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace not in ("aten", "prim"):
            with self:
                return func.redispatch(
                    torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *args, **kwargs)
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        written = any(a.alias_info is not None and a.alias_info.is_write
                      for a in func._schema.arguments)
        outs = _tensors(out)
        if outs and (written or any(t.untyped_storage().data_ptr() not in inputs
                                    for t in outs)):
            self.kernels += 1
        return out
