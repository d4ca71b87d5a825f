"""Training proofs for the "ringreduce" torch.distributed backend on CPU ranks,
each run twice in one launch: first on a gloo default group, then (after
destroy_process_group) on a "ringreduce" one, with the same seeds and data.

    mpirun -np N python tests/workers/torch_training.py mpirun PROOF[,PROOF...]
    torchrun --nproc-per-node N tests/workers/torch_training.py torchrun PROOF[,...]

Both groups rendezvous over one TCPStore (each under its own prefix): under
torchrun the agent's at MASTER_PORT, under mpirun one rank 0 serves at
MASTER_ADDR/MASTER_PORT, which must be set. Proofs (the proof_* functions):
fsdp_fp32, fsdp_bf16 (bf16 params, fp32 reduce), fsdp_bf16_reduce (bf16
params and reduce), hsdp (4 ranks, 2x2 mesh), dcp, ddp_unused, ddp_static.

Every rank writes, per proof and backend, one line RESULT {"proof",
"backend", "rank", "ok", "error"/"where" on failure, "losses" (per step, this
rank's batch), "sha" (sha256 of the full fp32 parameters), "init_sha",
"calls" (calls into ringreduce communicators during the proof),
"mesh_backends" (FSDP), "loaded_equal"/"continue_equal" (DCP),
"vs_fsdp_fp32" (largest |difference| from this backend's fsdp_fp32 run when
that ran first), and on the ringreduce run "loss_diff", "max_diff" (largest
|ringreduce - gloo| over the full parameters) and "same_keys"} to
$TORCH_TRAINING_OUT/rank<r>.txt when that folder is set, else to stdout.
"""
from __future__ import annotations

import collections
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import traceback

import torch
import torch.distributed as dist
import torch.nn as nn

import ringreduce.torch as rt  # noqa: F401 - registers the "ringreduce" backend

TIMEOUT = datetime.timedelta(seconds=60)
# Calls into ringreduce's communicators during the current proof: proves that
# the collectives of FSDP, DTensor and DDP really ran on ringreduce.
COUNTS: collections.Counter = collections.Counter()


def _count_calls() -> None:
    from ringreduce.comm import Communicator
    for name in ("allreduce", "reduce_scatter", "allgather", "broadcast"):
        def counted(self, *a, __orig=getattr(Communicator, name), __name=name, **kw):
            COUNTS[__name] += 1
            return __orig(self, *a, **kw)
        setattr(Communicator, name, counted)
STEPS = 4
VOCAB, D_MODEL, SEQ, BATCH = 32, 16, 8, 4


# -- models and data ------------------------------------------------------------
class TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D_MODEL)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(D_MODEL, nhead=2, dim_feedforward=32, dropout=0.0,
                                       batch_first=True) for _ in range(2))
        self.head = nn.Linear(D_MODEL, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(h)


def make_model() -> TinyTransformer:
    torch.manual_seed(0)  # same initial parameters on every rank
    return TinyTransformer()


def batch(rank: int, step: int) -> tuple:
    g = torch.Generator().manual_seed(1000 * step + rank)  # different data per rank
    x = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)
    return x, torch.roll(x, 1, dims=1)


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x).float().reshape(-1, VOCAB), y.reshape(-1))


class Branchy(nn.Module):
    """An MLP whose second branch is used only on odd steps."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
        self.a = nn.Linear(32, 4)
        self.b = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor, use_b: bool) -> torch.Tensor:
        h = self.trunk(x)
        return self.a(h) + self.b(h) if use_b else self.a(h)


# -- helpers ---------------------------------------------------------------------
def full_state(model: nn.Module) -> dict:
    """Unsharded parameters (DTensors gathered) as plain CPU fp32 tensors."""
    out = {}
    for name, p in model.named_parameters():
        t = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name] = t.detach().to(torch.float32).cpu().clone()
    return out


def sha(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def fsdp_train(ctx: dict, mesh, mp=None, steps: int = STEPS) -> tuple:
    """fully_shard each encoder layer and the root; mp: the reduce dtype of a
    bf16 MixedPrecisionPolicy (None: plain fp32)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    model = make_model()
    ctx["extra"]["init_sha"] = sha(full_state(model))
    kw = {"mesh": mesh}
    if mp is not None:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=mp)
    for layer in model.layers:
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    losses = [fsdp_step(model, opt, step) for step in range(steps)]
    return model, opt, losses


def fsdp_step(model: nn.Module, opt, step: int) -> float:
    x, y = batch(dist.get_rank(), step)
    loss = lm_loss(model, x, y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def cpu_mesh(shape: tuple, names: tuple, ctx: dict):
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", shape, mesh_dim_names=names)
    ctx.setdefault("extra", {})["mesh_backends"] = [
        dist.get_backend(mesh.get_group(d)) for d in range(mesh.ndim)]
    return mesh


# -- proofs: each returns (losses, full parameters) -------------------------------
def proof_fsdp_fp32(ctx: dict) -> tuple:
    model, _, losses = fsdp_train(ctx, cpu_mesh((dist.get_world_size(),), ("shard",), ctx), mp=None)
    return losses, full_state(model)


def proof_fsdp_bf16(ctx: dict) -> tuple:
    model, _, losses = fsdp_train(ctx, cpu_mesh((dist.get_world_size(),), ("shard",), ctx),
                                  mp=torch.float32)
    return losses, full_state(model)


def proof_fsdp_bf16_reduce(ctx: dict) -> tuple:
    model, _, losses = fsdp_train(ctx, cpu_mesh((dist.get_world_size(),), ("shard",), ctx),
                                  mp=torch.bfloat16)
    return losses, full_state(model)


def proof_hsdp(ctx: dict) -> tuple:
    if dist.get_world_size() != 4:
        raise RuntimeError(f"hsdp needs 4 ranks, got {dist.get_world_size()}")
    model, _, losses = fsdp_train(ctx, cpu_mesh((2, 2), ("replicate", "shard"), ctx), mp=None)
    return losses, full_state(model)


def proof_dcp(ctx: dict) -> tuple:
    """Train, save with DCP, load into a fresh sharded model, check, step once more."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_state_dict, set_state_dict)
    mesh = cpu_mesh((dist.get_world_size(),), ("shard",), ctx)
    model, opt, losses = fsdp_train(ctx, mesh, mp=None, steps=STEPS - 1)
    folder = ctx["tmp"]
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=folder)
    before = full_state(model)
    # A fresh model (different initial parameters), sharded the same way.
    from torch.distributed.fsdp import fully_shard
    torch.manual_seed(123)
    fresh = TinyTransformer()
    for layer in fresh.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(fresh, mesh=mesh)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.2, momentum=0.9)
    if sha(full_state(fresh)) == sha(before):
        raise AssertionError("the fresh model already equals the trained one")
    # Optimizer state must exist before loading into it.
    msd2, osd2 = get_state_dict(fresh, fresh_opt)
    state = {"model": msd2, "optim": osd2}
    dcp.load(state, checkpoint_id=folder)
    set_state_dict(fresh, fresh_opt, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])
    after = full_state(fresh)
    loaded_equal = all(torch.equal(before[k], after[k]) for k in before)
    # One more step on both: the loaded model must continue exactly as the original.
    cont = fsdp_step(model, opt, STEPS - 1)
    cont_fresh = fsdp_step(fresh, fresh_opt, STEPS - 1)
    a, b = full_state(model), full_state(fresh)
    continue_equal = cont == cont_fresh and all(torch.equal(a[k], b[k]) for k in a)
    ctx["extra"].update(loaded_equal=loaded_equal, continue_equal=continue_equal)
    return losses + [cont_fresh], b


def _ddp(ctx: dict, **kw) -> tuple:
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.manual_seed(0)
    module = Branchy()
    ctx["extra"] = {"init_sha": sha(full_state(module))}
    model = DDP(module, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for step in range(STEPS):
        g = torch.Generator().manual_seed(1000 * step + dist.get_rank())
        x, y = torch.randn(8, 16, generator=g), torch.randn(8, 4, generator=g)
        # find_unused_parameters: branch b is unused on even steps. static_graph:
        # the graph may not change from step to step, so b is never used.
        use_b = bool(step % 2) if kw.get("find_unused_parameters") else False
        loss = nn.functional.mse_loss(model(x, use_b), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, full_state(model.module)


def proof_ddp_unused(ctx: dict) -> tuple:
    return _ddp(ctx, find_unused_parameters=True)


def proof_ddp_static(ctx: dict) -> tuple:
    return _ddp(ctx, static_graph=True)


PROOFS = {name[len("proof_"):]: fn for name, fn in globals().items()
          if name.startswith("proof_")}


# -- launch ----------------------------------------------------------------------
def ranks() -> tuple:
    if "OMPI_COMM_WORLD_RANK" in os.environ:
        return int(os.environ["OMPI_COMM_WORLD_RANK"]), int(os.environ["OMPI_COMM_WORLD_SIZE"])
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def init(mode: str, backend: str, store) -> None:
    r, n = ranks()
    prefixed = dist.PrefixStore(f"training/{backend}/", store)
    if mode == "mpirun" and backend == "ringreduce":
        rt.init_process_group(backend, store=prefixed, timeout=TIMEOUT)
    else:
        dist.init_process_group(backend, store=prefixed, rank=r, world_size=n, timeout=TIMEOUT)
    assert dist.get_backend() == backend, dist.get_backend()


def main() -> None:
    mode, names = sys.argv[1], sys.argv[2].split(",")
    _count_calls()
    r, n = ranks()
    # One store for both groups (each under its own prefix). Under torchrun
    # the agent serves MASTER_PORT; under mpirun rank 0 serves it.
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if mode == "torchrun":
        store = dist.TCPStore(host, port, n, is_master=False, timeout=TIMEOUT)
    else:
        store = dist.TCPStore(host, port, n, is_master=(r == 0), timeout=TIMEOUT)
    folder = os.environ.get("TORCH_TRAINING_OUT")
    sink = open(os.path.join(folder, f"rank{r}.txt"), "w") if folder else sys.stdout
    ref: dict = {}  # gloo's (losses, state) per proof
    states: dict = {}  # this backend's final state per proof
    for backend in ("gloo", "ringreduce"):
        init(mode, backend, store)
        for name in names:
            entry = {"proof": name, "backend": backend, "rank": r}
            tmp = None
            try:
                ctx: dict = {}
                if name == "dcp":  # every rank writes into the one folder rank 0 names
                    objs = [tempfile.mkdtemp(prefix="rr_dcp_") if r == 0 else None]
                    dist.broadcast_object_list(objs, src=0)
                    ctx["tmp"] = tmp = objs[0]
                COUNTS.clear()
                losses, state = PROOFS[name](ctx)
                entry.update(ok=True, losses=losses, sha=sha(state), calls=dict(COUNTS),
                             **ctx.get("extra", {}))
                states[name] = state
                if name != "fsdp_fp32" and "fsdp_fp32" in states and sorted(
                        states["fsdp_fp32"]) == sorted(state):
                    # HSDP and a DCP-resumed run train the same model as FSDP.
                    entry["vs_fsdp_fp32"] = max((state[k] - states["fsdp_fp32"][k]).abs()
                                                .max().item() for k in state)
                if backend == "gloo":
                    ref[name] = (losses, state)
                elif name in ref:
                    g_losses, g_state = ref[name]
                    entry["loss_diff"] = max(abs(a - b) for a, b in zip(losses, g_losses))
                    entry["max_diff"] = max((state[k] - g_state[k]).abs().max().item()
                                            for k in g_state)
                    entry["same_keys"] = sorted(state) == sorted(g_state)
            except Exception as e:  # noqa: BLE001 - recorded per proof
                entry.update(ok=False, error=f"{type(e).__name__}: {e}"[:600],
                             where=traceback.format_exc()[-1500:])
            dist.barrier()
            if tmp and r == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            print("RESULT " + json.dumps(entry), file=sink, flush=True)
        dist.barrier()
        dist.destroy_process_group()
        states.clear()
    if folder:
        sink.close()
    print(f"rank {r}: DONE", flush=True)


if __name__ == "__main__":
    main()
