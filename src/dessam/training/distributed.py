"""Multi-process training with torch.distributed (torchrun), or a no-op for one process.

`torchrun --nproc_per_node=N -m dessam train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; dessam
then joins the process group (NCCL on GPUs, gloo on CPU), shards the training images across
ranks, wraps the model in DistributedDataParallel and writes files from rank 0 only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as torch_dist

DIGEST_ENV = "DESSAM_RANK_DIGEST_DIR"


@dataclass
class DistContext:
    enabled: bool
    rank: int = 0
    world_size: int = 1
    device: Optional[torch.device] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or "RANK" not in os.environ:
        return DistContext(False)
    use_cuda = torch.cuda.is_available()
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if use_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistContext(True, torch_dist.get_rank(), torch_dist.get_world_size(), device)


def shard(items: list, context: DistContext) -> list:
    """This rank's share, padded by wrapping so every rank gets the same number of items."""
    if not context.enabled:
        return list(items)
    per_rank = -(-len(items) // context.world_size)
    padded = [items[i % len(items)] for i in range(per_rank * context.world_size)]
    return padded[context.rank::context.world_size]


def wrap(model: torch.nn.Module, context: DistContext) -> torch.nn.Module:
    if not context.enabled:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    # Parameters can go unused in a step (an image without positive proposals skips the token).
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def all_finite(context: DistContext, loss: torch.Tensor) -> bool:
    """True when the loss is finite on every rank (all ranks skip a step together).

    Every rank must call this every step, finite or not, or the ranks fall out of step.
    """
    finite = bool(torch.isfinite(loss).all())
    if not context.enabled:
        return finite
    flag = torch.tensor([1.0 if finite else 0.0], device=loss.device)
    torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def barrier(context: DistContext) -> None:
    """Wait until every rank gets here (a no-op for one process)."""
    if context.enabled:
        torch_dist.barrier()


def write_rank_digest(state: dict, context: DistContext) -> None:
    """With $DESSAM_RANK_DIGEST_DIR set, write this rank's SHA-256 of `state` to rank{R}.sha256.

    A check that data-parallel ranks end with identical weights (each rank writes its own file).
    """
    folder = os.environ.get(DIGEST_ENV)
    if not folder:
        return
    from ..atomic import write_text_atomic
    from ..models.checkpoints import state_sha256

    write_text_atomic(Path(folder) / f"rank{context.rank}.sha256", state_sha256(state) + "\n")
