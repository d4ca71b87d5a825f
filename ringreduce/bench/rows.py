"""One result row, the bandwidth formulas, and the JSON file of a run."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

SCHEMA = 2  # 2: rows say "graph", "algo" and "algo_why"; "skipped_rows", "sizes", "environment"


def algbw(nbytes: int, seconds: float) -> float:
    """GB/s (1e9 bytes per second) of user data: bytes / time."""
    return nbytes / seconds / 1e9 if seconds > 0 else 0.0


def busbw(algbw_gbps: float, nranks: int) -> float:
    """Bus bandwidth of a ring all-reduce: algbw * 2(N-1)/N (nccl-tests' definition)."""
    return algbw_gbps * 2.0 * (nranks - 1) / nranks if nranks > 0 else 0.0


def geomean(xs: List[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


@dataclass
class Row:
    backend: str
    bytes: int
    count: int
    dtype: str
    op: str
    inplace: bool
    time_us: float
    algbw: float
    busbw: float
    wrong: Optional[int]     # summed over ranks; None: not checked
    iters: int = 0           # timed iterations (graph: replays)
    graph: bool = False      # timed as CUDA graph replays
    algo: Optional[str] = None      # the algorithm that ran (ringreduce rows)
    algo_why: Optional[str] = None  # and why the selector chose it

    @property
    def label(self) -> str:
        """The backend as tables and plots name it."""
        return self.backend + (" (graph)" if self.graph else "")

    def as_dict(self) -> Dict[str, Any]:
        return {"backend": self.backend, "graph": self.graph, "bytes": self.bytes,
                "count": self.count, "dtype": self.dtype, "op": self.op,
                "inplace": self.inplace, "time_us": self.time_us, "algbw": self.algbw,
                "busbw": self.busbw, "wrong": self.wrong, "iters": self.iters,
                "algo": self.algo, "algo_why": self.algo_why}


def rows_from_json(doc: Dict[str, Any]) -> List[Row]:
    """Rows of a results file, schema 1 (no graph/algo fields) or 2."""
    return [Row(backend=r["backend"], bytes=int(r["bytes"]), count=int(r["count"]),
                dtype=r["dtype"], op=r["op"], inplace=bool(r["inplace"]),
                time_us=float(r["time_us"]), algbw=float(r["algbw"]), busbw=float(r["busbw"]),
                wrong=r["wrong"], iters=int(r.get("iters", 0)), graph=bool(r.get("graph", False)),
                algo=r.get("algo"), algo_why=r.get("algo_why")) for r in doc["results"]]


def write_json(path: str, machine: Dict[str, Any], command: str, world_size: int,
               rows: Sequence[Row], extra: Optional[Dict[str, Any]] = None) -> None:
    doc: Dict[str, Any] = {"schema": SCHEMA, "machine": machine, "command": command,
                           "world_size": world_size, "results": [r.as_dict() for r in rows]}
    for k, v in (extra or {}).items():
        doc.setdefault(k, v)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def load_json(path: str) -> Dict[str, Any]:
    with open(path) as f:
        return json.load(f)
