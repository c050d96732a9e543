"""Distillation and expert training under ``torchrun``: the processes, and how they share one iteration.

Every process holds the whole synthetic data and draws the same random numbers (one generator,
seeded alike), so all of them know the whole iteration. Each computes only its share of the
heavy work, and a loss whose gradients, summed over the processes, are those of one process:

- DM: the classes ``c`` with ``c % world == rank`` (their real and synthetic images);
- MTT: its rows of every inner step's synthetic batch; the student's gradient is summed across
  processes inside the graph (a differentiable all-reduce), so every process unrolls the same
  student and the backward pass sums the adjoints step by step;
- work done whole by every process (HaBa's cosine term): the loss divided by ``world``.

After the backward pass :func:`sum_gradients` adds the gradients up, so every process takes the
same step. Outside ``torchrun`` (or with one process) everything here is the identity.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["barrier", "owns", "rank_and_world", "rows", "shared", "start", "sum_gradients", "sum_value", "summed"]


def start(device: torch.device | str | None) -> tuple[int, int, torch.device, bool]:
    """Rank, world size, device, and whether this call started the process group.

    Under ``torchrun`` with more than one process: joins (or starts) the process group, gloo on
    the CPU and nccl on GPUs (each process then uses ``cuda:LOCAL_RANK``). Otherwise ``(0, 1, device, False)``.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return dist.get_rank(), dist.get_world_size(), device, started


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def rows(n: int) -> slice:
    """This process's contiguous share of ``n`` rows (the first ``n % world`` processes take one more)."""
    rank, world = rank_and_world()
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (rank < extra))


def owns(index: int) -> bool:
    """Whether item ``index`` of a round-robin split (DM's classes) is this process's."""
    rank, world = rank_and_world()
    return index % world == rank


def summed(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the processes, differentiable (its backward sums the gradients too)."""
    return tensor if rank_and_world()[1] == 1 else _Summed.apply(tensor)


class _Summed(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduce of the incoming gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def shared(loss: torch.Tensor) -> torch.Tensor:
    """A loss every process computes whole: its share, so that the summed gradients count it once."""
    return loss / rank_and_world()[1]


def sum_gradients(parameters) -> None:
    """Replace each parameter's gradient by its sum over the processes (in place; one flat all-reduce)."""
    if rank_and_world()[1] == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if grads:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


def sum_value(value: float) -> float:
    """A logged number summed over the processes (a DM loss that each process computed a share of)."""
    if rank_and_world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t)
