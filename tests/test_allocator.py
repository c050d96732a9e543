"""keep_freed_memory: large blocks are reused instead of mapped and zero-filled afresh."""

import json
import os
import subprocess
import sys

import pytest

from haba_datasets import cli

PROBE = """
import json, resource, sys, torch
from haba_datasets.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
x = torch.empty(2**24).fill_(1.0); del x  # 64 MiB, above glibc's largest mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    x = torch.empty(2**24).fill_(1.0); del x
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def probe(mode: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_without_page_faults():
    default, kept = probe("default"), probe("keep")
    assert kept["applied"] is True
    assert default["faults"] > 10 * 16_000 * 0.9  # every 64 MiB block faults in its 16,384 pages again
    assert kept["faults"] < default["faults"] / 5  # at most the first block's pages
    assert probe("keep", HABA_KEEP_FREED_MEMORY="0")["applied"] is False


def test_the_command_line_applies_it(monkeypatch, saved):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["info", str(saved)]) == 0
    assert calls == [1]
