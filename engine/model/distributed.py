"""Distributed helpers: no-ops without an initialised process group (one process)."""
from __future__ import annotations

import os
from typing import Optional

import torch


def process_group():
    """torch.distributed when a process group is initialised, else None."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist
    return None


def dist_info() -> tuple[int, int, int]:
    """(world_size, rank, local_rank) of the initialised process group, else (1, 0, 0)."""
    d = process_group()
    if d is None:
        return 1, 0, 0
    return d.get_world_size(), d.get_rank(), int(os.environ.get("LOCAL_RANK", d.get_rank()))


def _tensor(value: float, device: Optional[torch.device]) -> torch.Tensor:
    dev = device if device is not None and device.type == "cuda" else torch.device("cpu")
    return torch.tensor([float(value)], device=dev)


def agree(flag: bool, device: Optional[torch.device] = None, src_rank_only: bool = False) -> bool:
    """Under DDP: True on every rank when any rank (or rank 0 only) says True."""
    d = process_group()
    if d is None:
        return bool(flag)
    t = _tensor(1.0 if flag else 0.0, device)
    if src_rank_only:
        d.broadcast(t, src=0)
    else:
        d.all_reduce(t, op=d.ReduceOp.MAX)
    return bool(t.item() > 0)


def from_rank0(value: int, device: Optional[torch.device] = None) -> int:
    """Rank 0's integer on every rank (e.g. a planned number of iterations)."""
    d = process_group()
    if d is None:
        return int(value)
    t = _tensor(value, device)
    d.broadcast(t, src=0)
    return int(round(t.item()))


def barrier() -> None:
    d = process_group()
    if d is not None:
        d.barrier()


def init_from_env(device: str = "auto") -> bool:
    """Under torchrun (WORLD_SIZE > 1): initialise the default process group (NCCL on
    CUDA, gloo on CPU). True when this call did it (the caller then calls shutdown())."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    if world <= 1:
        return False
    import torch.distributed as dist
    if dist.is_initialized():
        return False
    use_cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def shutdown() -> None:
    """Destroy the default process group, if there is one."""
    d = process_group()
    if d is not None:
        d.destroy_process_group()
