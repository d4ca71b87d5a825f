"""The rooted, all-to-all and point-to-point calls of the "ringreduce"
torch.distributed backend: reduce, gather, scatter, alltoall (list and
single-tensor forms), send and recv. A mixin of RingReduceProcessGroup,
which provides _comm, _place, _launch and _copy_back."""
from __future__ import annotations

from typing import Any, List, Optional

import torch

from ._ops import dist_errors, premultiplied, reduce_op


def _rows_to_elems(t: torch.Tensor, splits: List[int], n: int, what: str) -> List[int]:
    """c10d split sizes (rows of dim 0) as element counts; empty: equal parts."""
    if t.dim() == 0:
        raise ValueError(f"all_to_all_single: the {what} tensor must have at least one dimension")
    row = t.numel() // t.shape[0] if t.shape[0] else 0
    if not splits:
        if t.shape[0] % n:
            raise ValueError(f"all_to_all_single: the {what} tensor's {t.shape[0]} rows do not "
                             f"split equally over {n} ranks; pass split sizes")
        return [t.numel() // n] * n
    if len(splits) != n or sum(splits) != t.shape[0]:
        raise ValueError(f"all_to_all_single: {what} split sizes {list(splits)} must be {n} "
                         f"values adding up to the {t.shape[0]} rows of the {what} tensor")
    return [int(s) * row for s in splits]


class RootedOps:
    """reduce, gather, scatter, alltoall, send and recv."""

    @dist_errors
    def reduce(self, tensors: List[torch.Tensor], opts: Any = None) -> Any:
        op, factor = reduce_op(opts)
        root = opts.rootRank if opts is not None else 0
        works, pairs = [], []
        for t in tensors:
            x = self._place(t) if factor is None else premultiplied(self._place(t), factor)
            works.append(self._comm.reduce(x, root, op, async_op=True))
            if self.rank() == root:
                pairs.append((t, x))

        def finish():
            self._copy_back(pairs)
            return list(tensors)
        return self._launch(tensors[0].device, works, finish)

    @dist_errors
    def gather(self, output_tensors: List[List[torch.Tensor]], input_tensors: List[torch.Tensor],
               opts: Any = None) -> Any:
        root = opts.rootRank if opts is not None else 0
        n = self.size()
        if len(input_tensors) != 1:
            raise ValueError(f"gather takes one input tensor per rank, got {len(input_tensors)}")
        inp = input_tensors[0]
        outs = output_tensors[0] if self.rank() == root else None
        if outs is not None and (len(outs) != n or any(o.numel() != inp.numel() for o in outs)):
            raise ValueError(f"gather on the root needs {n} output tensors of {inp.numel()} "
                             "elements each (the input's size)")
        x = self._place(inp).reshape(-1)
        flat = (torch.empty(n * inp.numel(), dtype=inp.dtype, device=x.device)
                if outs is not None else None)
        work = self._comm.gather(x, root, out=flat, sizes=[inp.numel()] * n, async_op=True)

        def finish():
            if outs is not None:
                with torch.no_grad():
                    for o, part in zip(outs, flat.split(inp.numel())):
                        o.copy_(part.view(o.shape))
            return output_tensors
        return self._launch(inp.device, [work], finish)

    @dist_errors
    def scatter(self, output_tensors: List[torch.Tensor], input_tensors: List[List[torch.Tensor]],
                opts: Any = None) -> Any:
        root = opts.rootRank if opts is not None else 0
        n = self.size()
        if len(output_tensors) != 1:
            raise ValueError(f"scatter takes one output tensor per rank, got {len(output_tensors)}")
        out = output_tensors[0]
        if self.rank() == root:
            ins = input_tensors[0]
            if len(ins) != n or any(i.numel() != out.numel() for i in ins):
                raise ValueError(f"scatter on the root needs {n} input tensors of {out.numel()} "
                                 "elements each (the output's size)")
            x = self._place(torch.cat([i.reshape(-1) for i in ins]))
        else:
            x = None
        o = self._place(out)
        if x is None:  # off the root only the dtype and device count
            x = torch.empty(0, dtype=out.dtype, device=o.device)
        work = self._comm.scatter(x, root, out=o.view(-1), sizes=[out.numel()] * n,
                                  async_op=True)

        def finish():
            self._copy_back([(out, o)])
            return list(output_tensors)
        return self._launch(out.device, [work], finish)

    @dist_errors
    def all_to_all_single(self, output: torch.Tensor, inp: torch.Tensor,
                          output_split_sizes: List[int], input_split_sizes: List[int],
                          opts: Any = None) -> Any:
        n = self.size()
        splits = _rows_to_elems(inp, list(input_split_sizes or []), n, "input")
        recv = _rows_to_elems(output, list(output_split_sizes or []), n, "output")
        o = self._place(output)
        work = self._comm.all_to_all(self._place(inp).reshape(-1), out=o.view(-1), splits=splits,
                                     recv_splits=recv, async_op=True)

        def finish():
            self._copy_back([(output, o)])
            return [output]
        return self._launch(output.device, [work], finish)

    alltoall_base = all_to_all_single  # the name torch < 2.6 calls

    @dist_errors
    def alltoall(self, output_tensors: List[torch.Tensor], input_tensors: List[torch.Tensor],
                 opts: Any = None) -> Any:
        n = self.size()
        if len(output_tensors) != n or len(input_tensors) != n:
            raise ValueError(f"all_to_all needs {n} input and {n} output tensors, got "
                             f"{len(input_tensors)} and {len(output_tensors)}")
        x = self._place(torch.cat([i.reshape(-1) for i in input_tensors]))
        recv = [o.numel() for o in output_tensors]
        flat = torch.empty(sum(recv), dtype=x.dtype, device=x.device)
        work = self._comm.all_to_all(x, out=flat, splits=[i.numel() for i in input_tensors],
                                     recv_splits=recv, async_op=True)

        def finish():
            with torch.no_grad():
                for o, part in zip(output_tensors, flat.split(recv)):
                    o.copy_(part.view(o.shape))
            return list(output_tensors)
        return self._launch(output_tensors[0].device, [work], finish)

    @staticmethod
    def _one(tensors: List[torch.Tensor], what: str) -> torch.Tensor:
        if len(tensors) != 1:
            raise ValueError(f"{what} takes one tensor, got {len(tensors)}")
        return tensors[0]

    # Tags: messages between two ranks pair in posting order, and a tag is
    # part of each message's fingerprint, so a send and a recv whose tags
    # differ raise (CollectiveMismatch) instead of pairing wrongly.
    @dist_errors
    def send(self, tensors: List[torch.Tensor], dstRank: int, tag: int = 0) -> Any:  # noqa: N803
        t = self._one(tensors, "send")
        x = self._place(t)
        work = self._comm.send(x, dstRank, tag=tag, async_op=True)
        return self._launch(t.device, [work], lambda: list(tensors))

    @dist_errors
    def recv(self, tensors: List[torch.Tensor], srcRank: int, tag: int = 0) -> Any:  # noqa: N803
        return self._recv(tensors, srcRank, tag)

    @dist_errors
    def recv_anysource(self, tensors: List[torch.Tensor], tag: int = 0) -> Any:
        if tensors and tensors[0].device.type != "cpu":
            raise ValueError("the ringreduce backend receives from any source (src=None) into "
                             "CPU tensors only; name the source rank for a CUDA tensor")
        return self._recv(tensors, None, tag)

    def _recv(self, tensors: List[torch.Tensor], src: Optional[int], tag: int) -> Any:
        t = self._one(tensors, "recv")
        x = self._place(t)
        work = self._comm.recv(x, src, tag=tag, async_op=True)

        def finish():
            self._copy_back([(t, x)])
            return list(tensors)
        return self._launch(t.device, [work], finish, source=lambda: work.source)
