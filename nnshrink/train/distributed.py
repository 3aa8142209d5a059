"""Data-parallel fine-tuning across processes and machines (DistributedDataParallel).

Launch any script or ``nnshrink run`` with ``torchrun``; it sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init_distributed` then joins the group
(gloo on CPU, nccl on GPU), loaders shard the data by rank, :func:`wrap_ddp` averages gradients,
and only rank 0 writes checkpoints and reports.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes files)."""
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(
    device: torch.device | str | None = None, backend: str | None = None
) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    On CUDA each process takes the GPU of its ``LOCAL_RANK`` (``torch.cuda.set_device``) and the
    group uses nccl; on CPU gloo.

    Args:
        device: the device the run asked for (``cuda`` picks ``cuda:LOCAL_RANK``); default:
            CUDA when available.
        backend: override ``"gloo"`` / ``"nccl"``.

    Returns:
        This process's :class:`DistInfo` (rank 0 of 1 without torchrun, and nothing is started).

    Example:
        >>> info = init_distributed()  # under: torchrun --nproc-per-node 2 script.py  # doctest: +SKIP
    """
    if device in ("gloo", "nccl"):  # the old positional backend argument
        device, backend = None, device
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kind = torch.device(device).type if device is not None else None
    cuda = kind == "cuda" or (kind is None and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def current() -> DistInfo:
    """This process's :class:`DistInfo` if a group is initialized, else rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
        )
    return DistInfo()


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialized group."""
    return current().is_main


def wrap_ddp(model: nn.Module) -> nn.Module:
    """Wrap in ``DistributedDataParallel`` when a group with more than one process exists."""
    info = current()
    if info.world_size <= 1:
        return model
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (or the module itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def barrier() -> None:
    """Wait for every rank (no-op without a group)."""
    if current().world_size > 1:
        dist.barrier()
