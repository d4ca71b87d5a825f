"""A Horovod-style DistributedOptimizer and parameter/state broadcasts.

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = ringreduce.torch.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    ringreduce.torch.broadcast_parameters(model.state_dict(), root=0)
    ringreduce.torch.broadcast_optimizer_state(opt, root=0)
    for x, y in data:
        opt.zero_grad()
        loss_fn(model(x), y).backward()   # buckets are reduced while backward runs
        opt.step()                        # waits for the reductions, then steps

Gradients are averaged over ranks. With backward_passes_per_step=k they are
reduced after every k-th backward pass; as in plain PyTorch the k passes'
gradients are summed locally (scale the loss by 1/k for a mean).
"""
from __future__ import annotations

import contextlib
import pickle
import warnings
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from ringreduce.comm import Communicator

from .hooks import resolve_comm

__all__ = ["DistributedOptimizer", "broadcast_parameters", "broadcast_optimizer_state",
           "Compression", "NoneCompressor", "FP16Compressor", "BF16Compressor"]


# -- compression ---------------------------------------------------------------------
class NoneCompressor:
    """Sends tensors as they are."""

    @staticmethod
    def compress(tensor: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        return tensor, None

    @staticmethod
    def decompress(tensor: torch.Tensor, ctx: Any) -> torch.Tensor:
        return tensor


class _CastCompressor:
    wire: torch.dtype

    @classmethod
    def compress(cls, tensor: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        if tensor.is_floating_point() and tensor.dtype != cls.wire:
            return tensor.to(cls.wire), tensor.dtype
        return tensor, None

    @staticmethod
    def decompress(tensor: torch.Tensor, ctx: Any) -> torch.Tensor:
        return tensor if ctx is None else tensor.to(ctx)


class FP16Compressor(_CastCompressor):
    """Sends floating-point gradients as float16 (half the bytes)."""
    wire = torch.float16


class BF16Compressor(_CastCompressor):
    """Sends floating-point gradients as bfloat16 (half the bytes)."""
    wire = torch.bfloat16


class Compression:
    """Names for the built-in compressors, as in Horovod."""
    none = NoneCompressor
    fp16 = FP16Compressor
    bf16 = BF16Compressor


def _compressor(compression: Any):
    if compression is None or compression == "none":
        return NoneCompressor
    if isinstance(compression, str):
        table = {"fp16": FP16Compressor, "bf16": BF16Compressor}
        if compression not in table:
            raise ValueError(f"compression must be None, 'fp16', 'bf16' or an object with "
                             f"compress/decompress, got {compression!r}")
        return table[compression]
    if not (hasattr(compression, "compress") and hasattr(compression, "decompress")):
        raise TypeError(f"compression object {compression!r} lacks compress()/decompress()")
    return compression


# -- buckets -------------------------------------------------------------------------
class _Bucket:
    """Parameters whose gradients travel together in one flat buffer."""

    def __init__(self, params: List[torch.Tensor]) -> None:
        self.params = params
        self.offsets: List[int] = []
        off = 0
        for p in params:
            self.offsets.append(off)
            off += p.numel()
        self.numel = off  # elements
        self.flat = torch.empty(off, dtype=params[0].dtype, device=params[0].device)
        self.ready = 0
        self.pending: Optional[Tuple[Any, torch.Tensor, Any]] = None  # (work, wire, ctx)


class _DistributedOptimizer:
    """Mixed in front of the wrapped optimizer's class; see DistributedOptimizer()."""

    # Everything of ours lives in one attribute so nothing clashes with the
    # optimizer's own fields.
    _rr: "_State"

    def step(self, closure=None):
        st = self._rr
        if not st.skip:
            if st.synchronized and not st.dirty:
                warnings.warn("optimizer.step() after synchronize() reduces the gradients "
                              "again; wrap step() in `with optimizer.skip_synchronize():`",
                              stacklevel=2)
            self.synchronize()
        st.synchronized = False
        return super().step(closure)  # type: ignore[misc]

    def synchronize(self) -> None:
        """Finish reducing every gradient: start the buckets that are not yet
        in flight (a parameter without a gradient contributes zeros, so every
        rank runs the same collectives), wait for all, and write the averages
        into .grad."""
        st = self._rr
        with torch.no_grad():
            for i in range(st.next_bucket, len(st.buckets)):
                st.launch(st.buckets[i])
            st.next_bucket = len(st.buckets)
            for b in st.buckets:
                st.finish(b)
        st.reset_counts()
        st.synchronized = True
        st.dirty = False

    @contextlib.contextmanager
    def skip_synchronize(self) -> Iterator[None]:
        """step() inside this context does not reduce; call synchronize() first."""
        st = self._rr
        st.skip = True
        try:
            yield
        finally:
            st.skip = False

    def zero_grad(self, set_to_none: bool = True) -> None:
        if any(b.pending is not None for b in self._rr.buckets):
            raise RuntimeError("zero_grad() while gradient reductions are in flight: call "
                               "step() or synchronize() after backward() first")
        return super().zero_grad(set_to_none)  # type: ignore[misc]


class _State:
    def __init__(self, params: List[torch.Tensor], comm: Communicator, bucket_bytes: int,
                 compression: Any, backward_passes_per_step: int) -> None:
        self.comm = comm
        self.compression = compression
        self.bpps = backward_passes_per_step
        self.counts: Dict[int, int] = {}  # id(param) -> backward passes seen
        self.where: Dict[int, _Bucket] = {}
        self.buckets: List[_Bucket] = []
        self.next_bucket = 0
        self.skip = False
        self.synchronized = False
        self.dirty = False
        self.handles: list = []
        # Reverse registration order approximates the order backward produces
        # gradients, so the first buckets fill first (as in DDP).
        open_: Dict[Tuple[torch.device, torch.dtype], List[torch.Tensor]] = {}
        sizes: Dict[Tuple[torch.device, torch.dtype], int] = {}
        for p in reversed(params):
            key = (p.device, p.dtype)
            group = open_.setdefault(key, [])
            group.append(p)
            sizes[key] = sizes.get(key, 0) + p.numel() * p.element_size()
            if sizes[key] >= bucket_bytes:
                self._close(group)
                open_[key], sizes[key] = [], 0
        for group in open_.values():
            if group:
                self._close(group)
        for p in params:
            self.counts[id(p)] = 0
            self.handles.append(p.register_post_accumulate_grad_hook(self.on_grad))

    def _close(self, group: List[torch.Tensor]) -> None:
        b = _Bucket(list(group))
        self.buckets.append(b)
        for p in group:
            self.where[id(p)] = b

    def reset_counts(self) -> None:
        for k in self.counts:
            self.counts[k] = 0
        for b in self.buckets:
            b.ready = 0
        self.next_bucket = 0

    def on_grad(self, p: torch.Tensor) -> None:
        self.dirty = True
        c = self.counts[id(p)] + 1
        if c > self.bpps:
            raise RuntimeError(f"a gradient was computed {c} times before step(); "
                               f"backward_passes_per_step is {self.bpps}. Call step() or "
                               "synchronize() after every "
                               f"{self.bpps} backward pass(es), or raise backward_passes_per_step")
        self.counts[id(p)] = c
        if c < self.bpps:
            return
        b = self.where[id(p)]
        b.ready += 1
        # Buckets start strictly in order so every rank submits the same
        # sequence of collectives even when their gradients arrive in a
        # different order (or never, for unused parameters).
        while (self.next_bucket < len(self.buckets)
               and self.buckets[self.next_bucket].ready == len(self.buckets[self.next_bucket].params)):
            with torch.no_grad():
                self.launch(self.buckets[self.next_bucket])
            self.next_bucket += 1

    def launch(self, b: _Bucket) -> None:
        if b.pending is not None:
            return
        for p, off in zip(b.params, b.offsets):
            view = b.flat[off: off + p.numel()]
            if p.grad is None:
                view.zero_()
            else:
                view.copy_(p.grad.reshape(-1))
        # Divide before the sum so a half-precision wire cannot overflow.
        b.flat.div_(self.comm.size)
        wire, ctx = self.compression.compress(b.flat)
        work = self.comm.allreduce(wire, "sum", async_op=True)
        b.pending = (work, wire, ctx)

    def finish(self, b: _Bucket) -> None:
        if b.pending is None:
            return
        work, wire, ctx = b.pending
        b.pending = None
        work.wait()  # CUDA: the current stream waits; the host does not
        out = self.compression.decompress(wire, ctx)
        for p, off in zip(b.params, b.offsets):
            g = out[off: off + p.numel()].view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)


def DistributedOptimizer(optimizer: torch.optim.Optimizer,
                         named_parameters: Optional[Iterable[Tuple[str, torch.Tensor]]] = None,
                         bucket_mb: float = 25, compression: Any = None,
                         backward_passes_per_step: int = 1,
                         comm: Optional[Communicator] = None) -> torch.optim.Optimizer:
    """Wrap `optimizer` so that gradients are averaged over ranks.

    Returns an object of a subclass of the optimizer's class, sharing its
    param_groups and state (so LR schedulers, state_dict() and
    load_state_dict() work as usual), with synchronize() and
    skip_synchronize() added.

    named_parameters: the (name, parameter) pairs to reduce (default: every
    parameter of the optimizer); names are only used to check for duplicates.
    bucket_mb: fusion bucket size in MiB (2**20 bytes). compression: None,
    "fp16", "bf16" or an object with compress(t) -> (t, ctx) and
    decompress(t, ctx) -> t. backward_passes_per_step: how many backward
    passes accumulate locally before one reduction. comm: a
    ringreduce.Communicator (default: the default communicator)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if isinstance(optimizer, _DistributedOptimizer):
        raise ValueError("optimizer is already a DistributedOptimizer")
    if not isinstance(backward_passes_per_step, int) or backward_passes_per_step < 1:
        raise ValueError(f"backward_passes_per_step must be an int >= 1, "
                         f"got {backward_passes_per_step!r}")
    if not bucket_mb > 0:
        raise ValueError(f"bucket_mb must be > 0 MiB, got {bucket_mb!r}")
    comp = _compressor(compression)
    opt_params = [p for g in optimizer.param_groups for p in g["params"]]
    if named_parameters is not None:
        named = list(named_parameters)
        names = [n for n, _ in named]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"named_parameters has duplicate names: {dups}")
        known = {id(p) for p in opt_params}
        missing = [n for n, p in named if id(p) not in known]
        if missing:
            raise ValueError(f"named_parameters lists parameters the optimizer does not "
                             f"update: {missing}")
        params = [p for _, p in named]
    else:
        params = opt_params
    seen: set = set()
    uniq = []
    for p in params:
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            uniq.append(p)

    cls = type(optimizer.__class__.__name__, (_DistributedOptimizer, optimizer.__class__), {})
    wrapped = cls.__new__(cls)
    # Share the optimizer's fields (state, param_groups, defaults, hooks)
    # rather than re-running its constructor, which may need arguments we
    # do not know.
    wrapped.__dict__.update(optimizer.__dict__)
    wrapped._rr = _State(uniq, resolve_comm(comm), int(bucket_mb * (1 << 20)), comp,
                         backward_passes_per_step)
    return wrapped


# -- broadcasts --------------------------------------------------------------------
def _as_tensor_list(params: Any) -> List[torch.Tensor]:
    if isinstance(params, dict):
        items = list(params.values())
    else:
        items = [x[1] if isinstance(x, tuple) else x for x in params]
    bad = [type(t).__name__ for t in items if not isinstance(t, torch.Tensor)]
    if bad:
        raise TypeError(f"broadcast_parameters needs tensors, got {bad[:3]}")
    return items


def _broadcast_tensors(tensors: Sequence[torch.Tensor], root: int, comm: Communicator) -> None:
    """Broadcast tensors in place, coalesced into one buffer per (device, dtype)."""
    groups: Dict[Tuple[torch.device, torch.dtype], List[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    with torch.no_grad():
        for (_, dtype), ts in groups.items():
            send = [t.to(torch.uint8) if dtype == torch.bool else t for t in ts]
            flat = torch.cat([t.reshape(-1) for t in send]) if send else None
            if flat is None or flat.numel() == 0:
                continue
            comm.broadcast(flat, root)
            off = 0
            for t in ts:
                n = t.numel()
                t.copy_(flat[off: off + n].view(t.shape).to(dtype))
                off += n


def broadcast_parameters(params: Union[Dict[str, torch.Tensor], Iterable[Any]], root: int = 0,
                         comm: Optional[Communicator] = None) -> None:
    """Copy root's tensors into every rank's, in place.

    params: a state_dict, an iterable of (name, tensor) pairs (such as
    model.named_parameters()) or of tensors; every rank must pass the same
    structure."""
    _broadcast_tensors(_as_tensor_list(params), root, resolve_comm(comm))


class _TensorSlot:
    """Stands in for a tensor in the pickled state structure."""

    def __init__(self, index: int, t: torch.Tensor) -> None:
        self.index = index
        self.shape = tuple(t.shape)
        self.dtype = t.dtype
        self.on_cuda = t.is_cuda


def _extract(obj: Any, tensors: List[torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return _TensorSlot(len(tensors) - 1, obj)
    if isinstance(obj, dict):
        return type(obj)((k, _extract(v, tensors)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_extract(v, tensors) for v in obj)
    return obj


def _fill(obj: Any, tensors: List[torch.Tensor]) -> Any:
    if isinstance(obj, _TensorSlot):
        return tensors[obj.index]
    if isinstance(obj, dict):
        return type(obj)((k, _fill(v, tensors)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_fill(v, tensors) for v in obj)
    return obj


def _broadcast_bytes(data: bytes, root: int, comm: Communicator, device: torch.device) -> bytes:
    n = torch.tensor([len(data)], dtype=torch.int64, device=device)
    comm.broadcast(n, root)
    buf = torch.zeros(int(n.item()), dtype=torch.uint8, device=device)
    if comm.rank == root:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    comm.broadcast(buf, root)
    return bytes(buf.cpu().numpy().tobytes())


def broadcast_optimizer_state(optimizer: torch.optim.Optimizer, root: int = 0,
                              comm: Optional[Communicator] = None) -> None:
    """Make every rank's optimizer state (and hyper-parameters) equal root's.

    Works when some ranks have no state yet: root's state_dict structure
    travels as pickled bytes, then its tensors are broadcast; each rank then
    loads the result with load_state_dict(). Collective over all ranks."""
    c = resolve_comm(comm)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    # Host tensors travel over the device of the parameters: a CUDA-only
    # communicator (torchrun without MPI) cannot move host memory.
    device = params[0].device if params else torch.device("cpu")
    root_tensors: List[torch.Tensor] = []
    structure = _extract(optimizer.state_dict(), root_tensors) if c.rank == root else None
    payload = pickle.dumps(structure) if c.rank == root else b""
    structure = pickle.loads(_broadcast_bytes(payload, root, c, device))
    slots: List[_TensorSlot] = []

    def collect(o: Any) -> None:
        if isinstance(o, _TensorSlot):
            slots.append(o)
        elif isinstance(o, dict):
            for v in o.values():
                collect(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                collect(v)

    collect(structure)
    slots.sort(key=lambda s: s.index)
    moved = []
    for s in slots:
        if c.rank == root:
            moved.append(root_tensors[s.index].detach().to(device).contiguous().clone())
        else:
            moved.append(torch.empty(s.shape, dtype=s.dtype, device=device))
    _broadcast_tensors(moved, root, c)
    final = [t if (s.on_cuda == (t.device.type == "cuda")) else
             t.to("cuda" if s.on_cuda else "cpu") for s, t in zip(slots, moved)]
    optimizer.load_state_dict(_fill(structure, final))
