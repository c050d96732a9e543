"""The code paths a benchmark A/B's, applied at the start of a fresh process.

- ``before``: ``nn.GroupNorm`` as the instance norm and glibc's default allocator (the code
  before the fused norm and :func:`~haba_datasets.allocator.keep_freed_memory`);
- ``allocator``: ``nn.GroupNorm``, freed memory kept;
- ``norm``: the fused :class:`~haba_datasets.instance_norm.InstanceNorm`, default allocator;
- ``after``: both, as the command line runs.
"""

from __future__ import annotations

import torch

VARIANTS = {"before": (False, False), "allocator": (False, True), "norm": (True, False), "after": (True, True)}


def apply(variant: str) -> None:
    """Switch this process to ``variant``'s code paths (before any network is built)."""
    fused_norm, keep_memory = VARIANTS[variant]
    if keep_memory:
        from haba_datasets.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise RuntimeError("glibc's mallopt is unavailable here: no 'allocator' or 'after' variant")
    if not fused_norm:
        from haba_datasets import nets

        nets.InstanceNorm = lambda channels: torch.nn.GroupNorm(channels, channels)
