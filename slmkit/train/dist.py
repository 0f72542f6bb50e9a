"""Processes: one by default, or N under `torchrun` (DDP over gloo on CPU or nccl on GPUs, or FSDP2).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; `setup` reads them, picks the backend and device, and `wrap`
applies DDP or FSDP2 after the model is built. Multi-node: run the same torchrun command on every node with
--nnodes, --node_rank and --rdzv_endpoint (see docs/train.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from slmkit.device import default_device
from slmkit.errors import SlmError


@dataclass
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: str | None, backend: str = "auto") -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); pick the device for this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device) if device else default_device()
    if world == 1:
        return DistContext(device=dev)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise SlmError("the nccl backend needs CUDA devices; use dist.backend: gloo on CPU")
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    return DistContext(rank, local_rank, world, dev, backend)


def wrap(model: nn.Module, ctx: DistContext, fsdp: bool) -> nn.Module:
    """DDP (default) or FSDP2 (each block sharded, then the root) around a built model."""
    if not ctx.distributed:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
