"""What publishing and fetching a CIFAR-10-shaped IPC-10 dataset moves over HTTP.

Pushes a random CIFAR-shaped dataset (100 bases x 5 hallucinators, ZCA fitted on 4,000 random
images) to the loopback Hub of the test suite, then loads it with ``from_pretrained``, and reports
the repo's files and which of them each step downloads.

    python benchmarks/hub_transfer.py [--write benchmarks/hub_transfer.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.hub_server import HubServer  # noqa: E402  (must start before huggingface_hub is imported)

REPO = "bench/cifar-shaped-ipc10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="also write the markdown table to this file")
    args = parser.parse_args()
    hub = HubServer()
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as storage:
        os.environ.update(HF_ENDPOINT=hub.url, HF_HOME=home, HF_HUB_DISABLE_XET="1")
        hub.reset(Path(storage))
        hub.start()
        report = measure(hub)
    print(report)
    if args.write:
        args.write.write_text(report)


def measure(hub: HubServer) -> str:
    import torch

    from haba_datasets import ZCA, FactorizedDataset, create_hallucinators

    torch.manual_seed(0)
    zca = ZCA.fit(torch.rand(4000, 3, 32, 32), eps=0.1)
    bank = create_hallucinators("haba-conv", 5, (3, 32, 32), (3, 32, 32))
    dataset = FactorizedDataset(torch.randn(100, 3, 32, 32) * 0.1, torch.arange(100) % 10, bank,
                                [f"class{i}" for i in range(10)], preprocessing=zca, device="cpu")  # fmt: skip
    start = time.perf_counter()
    dataset.push_to_hub(REPO, token="hf_test_write")
    push_s = time.perf_counter() - start
    files = hub.files(REPO)

    def fetched(since: int) -> list[str]:
        return [p.split("/resolve/")[1].split("/", 1)[1] for m, p, _ in hub.requests[since:] if m == "GET" and "/resolve/" in p]

    mark = len(hub.requests)
    start = time.perf_counter()
    loaded = FactorizedDataset.from_pretrained(REPO, device="cpu")
    load_s = time.perf_counter() - start
    on_load = fetched(mark)
    mark = len(hub.requests)
    loaded.preprocessing
    on_use = fetched(mark)
    lines = [
        "# Hub transfer (`benchmarks/hub_transfer.py`)",
        "",
        "Measured by `python benchmarks/hub_transfer.py --write benchmarks/hub_transfer.md` against the test "
        "suite's loopback Hub: CIFAR-10 shapes, IPC 10 (100 bases x 5 hallucinators), ZCA preprocessing, "
        "random factors (so the PNG-based files are larger than for real images).",
        "",
        "| file in the pushed repo | bytes | downloaded by `from_pretrained` |",
        "|---|---:|---|",
    ]
    for name, data in sorted(files.items()):
        when = "yes" if name in on_load else ("on first use of `dataset.preprocessing`" if name in on_use else "no")
        lines.append(f"| `{name}` | {len(data):,} | {when} |")
    total, needed = sum(map(len, files.values())), sum(len(files[n]) for n in on_load)
    lines += [
        "",
        f"`from_pretrained` downloaded {needed:,} of {total:,} bytes ({100 * needed / total:.1f}%) in {load_s:.2f} s; "
        f"the one-commit push took {push_s:.2f} s (loopback, {os.cpu_count()} CPUs).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
