"""Send and receive, as Communicator methods (a mixin, so comm.py stays one
file's worth): named peers, tags, and receives from any source."""
from __future__ import annotations

from typing import Any, Optional

from . import _C
from ._buffers import as_buffer
from ._checks import check_inplace, check_root, check_tag, mark_written

_COLL = _C.Coll


class PointToPoint:
    """Needs the Communicator's size, _refusing and _submit."""

    def send(self, x: Any, dst: int, *, tag: int = 0, async_op: bool = False) -> Any:
        """Send x to rank dst (which calls recv). Returns None, or a Work.

        Messages between two ranks pair in the order they were posted; `tag`
        is checked, not used to reorder: a recv whose tag differs raises
        CollectiveMismatch on both ranks."""
        with self._refusing(_COLL.send, dst if isinstance(dst, int) else -1, tag):
            check_root(dst, self.size, "dst")
            check_tag(tag)
            b = as_buffer(x)
        return self._submit(_COLL.send, b, None, b.count, peer=dst, async_op=async_op, tag=tag)

    def recv(self, x: Any, src: Optional[int] = None, *, tag: int = 0,
             async_op: bool = False) -> Any:
        """Receive into x, in place, what rank src sends. Returns x, or a Work.

        src=None receives from any rank: the first message that arrives and
        that no receive posted earlier (from any source or from its sender) is
        waiting for. Work.source then says who sent it. Host memory only."""
        peer = _C.ANY_SOURCE if src is None else src
        with self._refusing(_COLL.recv, peer if isinstance(peer, int) else -1, tag):
            if src is not None:
                check_root(src, self.size, "src")
            check_tag(tag)
            b = as_buffer(x)
            check_inplace(b, "x")
            if src is None and b.device >= 0:
                raise ValueError("recv from any source (src=None) takes host memory; name the "
                                 "source rank for a device buffer")
        mark_written(b)
        return self._submit(_COLL.recv, b, b, b.count, peer=peer, async_op=async_op,
                            result=b.obj, tag=tag)
