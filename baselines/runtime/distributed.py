"""Minimal torch.distributed helpers for the contrastive losses.

The losses gather embeddings from every rank so that each rank sees the negatives of the
whole global batch (open_clip's ``gather_features(..., gather_with_grad=True)``).

Gradient bookkeeping, which the loss tests rely on: the backward of
``torch.distributed.nn.functional.all_gather`` *sums* the incoming gradients of all ranks
for each shard. If every rank computes a loss ``L_r`` from the gathered tensors, the gradient
that reaches rank ``r``'s local embeddings is ``d(sum_r' L_r') / d x_r``. DDP then *averages*
parameter gradients over ranks, so the model ends up with ``d(mean_r L_r) / d theta``:
  * every rank computes the global loss L        -> mean_r L_r = L        (exact)
  * every rank computes its local rows' share L_r -> mean_r L_r = L, provided the local
    losses are means over equally sized local batches (open_clip's ``local_loss``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_info() -> tuple[int, int]:
    """Return ``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping the autograd graph.

    Rank order is preserved, so rank ``r``'s rows sit at ``[r * n, (r + 1) * n)`` when every
    rank holds ``n`` rows (all ranks must pass tensors of the same shape). Identity when not
    distributed, so single-process code paths are untouched.
    """
    _, world_size = world_info()
    if world_size == 1:
        return x
    from torch.distributed.nn.functional import all_gather  # imported lazily: optional module

    return torch.cat(all_gather(x), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (e.g. integer labels) from all ranks along dim 0, without autograd."""
    _, world_size = world_info()
    if world_size == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)
