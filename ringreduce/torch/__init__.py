"""PyTorch integration: DDP communication hooks, a Horovod-style
DistributedOptimizer and a ``torch.distributed`` backend named "ringreduce".

Importing this package registers the backend, so that
``torch.distributed.init_process_group("ringreduce")`` works. ``import
ringreduce`` alone never imports torch.
"""
try:
    import torch  # noqa: F401
    import torch.distributed  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("ringreduce.torch needs PyTorch with torch.distributed "
                      f"(pip install torch); importing it failed: {e}") from e

from .backend import (BACKEND_NAME, RingReduceDistError, RingReduceDistTimeout,
                      RingReduceProcessGroup, init_process_group)
from .hooks import allreduce_hook, bf16_compress_hook, fp16_compress_hook
from .optimizer import (BF16Compressor, Compression, DistributedOptimizer, FP16Compressor,
                        NoneCompressor, broadcast_optimizer_state, broadcast_parameters)

__all__ = [
    "allreduce_hook", "fp16_compress_hook", "bf16_compress_hook",
    "DistributedOptimizer", "broadcast_parameters", "broadcast_optimizer_state",
    "Compression", "NoneCompressor", "FP16Compressor", "BF16Compressor",
    "RingReduceProcessGroup", "init_process_group", "BACKEND_NAME", "RingReduceDistError",
    "RingReduceDistTimeout",
]
