"""The code paths a benchmark A/B's, applied at the start of a fresh process.

- ``before``: ``nn.GroupNorm`` as the instance norm, ``nn.AvgPool2d(2)`` as the pooling and
  glibc's default allocator (the code before :mod:`haba_datasets.instance_norm`,
  :mod:`haba_datasets.pooling` and :func:`~haba_datasets.allocator.keep_freed_memory`);
- ``allocator``: the layers of ``before``, freed memory kept;
- ``layers``: :class:`~haba_datasets.instance_norm.InstanceNorm` and
  :class:`~haba_datasets.pooling.AvgPool2x2`, default allocator;
- ``after``: all three, as the command line runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

VARIANTS = {"before": (False, False), "allocator": (False, True), "layers": (True, False), "after": (True, True)}


def apply(variant: str) -> None:
    """Switch this process to ``variant``'s code paths (before any network is built)."""
    new_layers, keep_memory = VARIANTS[variant]
    if keep_memory:
        from haba_datasets.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise RuntimeError("glibc's mallopt is unavailable here: no 'allocator' or 'after' variant")
    if not new_layers:
        from haba_datasets import nets

        nets.InstanceNorm = lambda channels: torch.nn.GroupNorm(channels, channels)
        nets.AvgPool2x2 = lambda: torch.nn.AvgPool2d(2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every A/B benchmark takes (``--one`` runs one setting in this process)."""
    parser.add_argument("--variants", nargs="+", default=["before", "after"], choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best round counts")
    parser.add_argument("--write", type=Path, help="also write the table into this markdown file")
    parser.add_argument("--one", help=argparse.SUPPRESS)


def alternate(script: str, setting: dict, args: argparse.Namespace) -> dict[str, list[dict]]:
    """Run ``script --one SETTING`` for each variant in a fresh process, ``args.rounds`` times in
    alternation; returns each variant's results (the JSON line each process prints last)."""
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    for _ in range(args.rounds):
        for variant in args.variants:
            out = subprocess.run([sys.executable, script, "--one", json.dumps({**setting, "variant": variant})],
                                 check=True, capture_output=True, text=True).stdout  # fmt: skip
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    return runs
