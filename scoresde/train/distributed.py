"""Sharding work across processes and gathering the results, without hanging.

Used by sampling and likelihood evaluation when several processes run (``trainer=ddp``): item ``i`` of
``n`` goes to rank ``i % world_size``, every item carries its own seed, so the gathered result is the
same for any number of processes. Every rank takes part in every collective, also ranks with no items
and ranks whose local work failed (the failure is gathered and re-raised on all ranks instead of leaving
the others blocked in the collective).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "RemoteError",
    "barrier",
    "chunks",
    "gather_objects",
    "gather_shards",
    "is_global_zero",
    "local_rank",
    "map_sharded",
    "rank_and_world",
    "shard",
    "stack_in_order",
]


class RemoteError(RuntimeError):
    """Local work failed on another rank (its message is included)."""


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_rank() -> int:
    """This process's rank on its node, which picks its GPU: ``LOCAL_RANK`` (set by Lightning or torchrun
    for the processes they start), else ``SLURM_LOCALID`` (a task that SLURM started), else the global
    rank (one node)."""
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(key, "")
        if value.isdigit():
            return int(value)
    return rank_and_world()[0]


def is_global_zero() -> bool:
    """True on the process that writes files (rank 0, or the only process)."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    """Synchronise all processes (no-op in a single process)."""
    if rank_and_world()[1] > 1:
        dist.barrier()


def shard(n: int, rank: int | None = None, world: int | None = None) -> list[int]:
    """Indices of ``range(n)`` that ``rank`` handles: ``rank, rank + world, ...`` (no padding)."""
    r, w = rank_and_world()
    rank = r if rank is None else rank
    world = w if world is None else world
    return list(range(rank, n, world))


def gather_shards(local: dict[int, Any]) -> dict[int, Any]:
    """Merge ``{index: value}`` dicts of all ranks (every rank gets the merged dict). Values must be
    picklable; tensors are moved to the CPU first. A ``BaseException`` value on any rank is re-raised
    on every rank as :class:`RemoteError`."""
    _, world = rank_and_world()
    local = {i: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for i, v in local.items()}
    if world == 1:
        parts = [local]
    else:
        parts = [None] * world
        dist.all_gather_object(parts, local)
    merged: dict[int, Any] = {}
    for rank, part in enumerate(parts):
        for i, v in part.items():
            if isinstance(v, BaseException):
                if world == 1:
                    raise v
                raise RemoteError(f"rank {rank} failed: {type(v).__name__}: {v}") from v
            merged[i] = v
    return merged


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def map_sharded(fn: Callable[[list[int]], dict[int, Any]], n: int) -> dict[int, Any]:
    """Run ``fn(my_indices) -> {index: value}`` on this rank's shard of ``range(n)`` and gather all
    shards. If ``fn`` raises, the error reaches every rank (no rank is left waiting)."""
    mine = shard(n)
    try:
        local = fn(mine)
    except Exception as err:  # noqa: BLE001 - forwarded to all ranks, then re-raised
        if rank_and_world()[1] == 1:
            raise
        local = {-1: err}
    merged = gather_shards(local)
    missing = [i for i in range(n) if i not in merged]
    if missing:
        raise RuntimeError(f"gathering lost {len(missing)} of {n} items (first: {missing[:5]})")
    return merged


def stack_in_order(merged: dict[int, torch.Tensor], n: int) -> torch.Tensor:
    """``torch.stack([merged[0], ..., merged[n - 1]])``."""
    return torch.stack([merged[i] for i in range(n)]) if n else torch.empty(0)


def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive chunks of at most ``size`` items."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
