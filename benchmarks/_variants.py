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
    """Run ``script --one SETTING`` for each variant in a fresh process (``setting["processes"]``
    of them under torchrun), ``args.rounds`` times in alternation; returns each variant's results
    (the JSON line each process prints last; under torchrun the slowest time and largest peak)."""
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    processes = setting.get("processes", 1)
    launcher = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
                                   if processes > 1 else [])  # fmt: skip
    for _ in range(args.rounds):
        for variant in args.variants:
            out = subprocess.run([*launcher, script, "--one", json.dumps({**setting, "variant": variant})],
                                 check=True, capture_output=True, text=True).stdout  # fmt: skip
            results = _json_objects(out)[-processes:]  # torchrun's processes may share a line
            slowest = max(results, key=lambda r: r["seconds"])  # under torchrun: the largest of any process
            runs[variant].append({**slowest, "peak_bytes": max(r["peak_bytes"] for r in results)})
    return runs


def _json_objects(text: str) -> list[dict]:
    """Every JSON object printed in ``text`` (each at the start of a line or right after another)."""
    decoder, found, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) >= 0:
        if i and text[i - 1] not in "\n}":
            i += 1
            continue
        try:
            value, i = decoder.raw_decode(text, i)
            found.append(value)
        except json.JSONDecodeError:
            i += 1
    return found
