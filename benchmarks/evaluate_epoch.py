"""Where an evaluation run's time goes: one training epoch of the protocol, one validation pass, the test pass.

Trains the evaluation ConvNet (width 128) on the bundled zoo dataset ``--name`` exactly as
``haba-datasets evaluate`` does (``train_epoch``: DataLoader over the FactorizedDataset, DSA,
SGD with momentum and weight decay), and times :func:`~haba_datasets.evaluate.accuracy` on random
images of the real validation (5,000) and test (10,000) split sizes. The variants of
``benchmarks/_variants.py`` are A/B'd in alternating fresh processes; the best round counts.

    python benchmarks/evaluate_epoch.py [--name cifar10-ipc10] [--epochs 20] [--rounds 2]
        [--variants before after] [--write benchmarks/README.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _report import write_section  # noqa: E402
from _variants import add_arguments, alternate, apply  # noqa: E402

SPLITS = {"validation pass": 5000, "test pass": 10000}


def one(setting: dict) -> dict:
    apply(setting["variant"])
    from torch.utils.data import DataLoader

    from haba_datasets import DSA, FactorizedDataset, create_net
    from haba_datasets.evaluate import Protocol, train_epoch

    train = FactorizedDataset.from_pretrained(setting["name"], device="cpu", pairing="random")
    protocol = Protocol(lr=train.learned_lr or 0.01)
    torch.manual_seed(0)
    shape = train.hallucinators.image_shape
    net = create_net("ConvNet", shape[0], len(train.classes), shape[1])
    optimizer = torch.optim.SGD(net.parameters(), lr=protocol.lr, momentum=protocol.momentum,
                                weight_decay=protocol.weight_decay)  # fmt: skip
    loader = DataLoader(train, batch_size=protocol.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    augment, draws = DSA(), torch.Generator().manual_seed(0)
    times = []
    for _ in range(setting["epochs"] + 2):  # two warm-up epochs
        start = time.perf_counter()
        train_epoch(net, loader, optimizer, "cpu", augment, draws)
        times.append(time.perf_counter() - start)
    return {**setting, "training epoch": statistics.median(times[2:]), "items": len(train),
            "threads": torch.get_num_threads(), **time_passes(net, shape, len(train.classes))}  # fmt: skip


def time_passes(net, shape: tuple[int, ...], num_classes: int) -> dict[str, float]:
    """Seconds of :func:`~haba_datasets.evaluate.accuracy` over random images of each split's size."""
    from torch.utils.data import DataLoader, TensorDataset

    from haba_datasets.evaluate import accuracy

    times = {}
    for split, size in SPLITS.items():
        images = TensorDataset(torch.randn(size, *shape), torch.randint(num_classes, (size,)))
        start = time.perf_counter()
        accuracy(net, DataLoader(images, batch_size=256), "cpu")
        times[split] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="cifar10-ipc10", help="a bundled zoo dataset")
    parser.add_argument("--epochs", type=int, default=20, help="timed training epochs per process (median)")
    add_arguments(parser)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    runs = alternate(__file__, {"name": args.name, "epochs": args.epochs}, args)
    parts = ["training epoch", *SPLITS]
    best = {v: {p: min(r[p] for r in rs) for p in parts} for v, rs in runs.items()}
    first = runs[args.variants[0]][0]
    protocol = "3 runs x 500 epochs with 10 validation passes and 1 test pass each (the card's protocol)"
    for v in args.variants:
        best[v]["card protocol (estimate)"] = 3 * (500 * best[v]["training epoch"] + 10 * best[v]["validation pass"]
                                                   + best[v]["test pass"])  # fmt: skip
    command = "python benchmarks/evaluate_epoch.py " + " ".join(sys.argv[1:])
    ratio = f" {args.variants[-1]} / {args.variants[0]} |" if len(args.variants) > 1 else ""
    lines = [
        f"Measured by `{command.strip()}` on {platform.machine()}, {first['threads']} torch threads, torch "
        f"{torch.__version__}; ConvNet-3 (width 128) on `{args.name}` ({first['items']} items per epoch, batch 256, "
        f"DSA); best of {args.rounds} alternating rounds, the training epoch the median of {args.epochs} epochs after "
        f"two warm-up epochs; the last row is {protocol}.",
        "",
        "| part | " + " | ".join(f"{v} (s)" for v in args.variants) + " |" + ratio,
        "|---" * (1 + len(args.variants) + (len(args.variants) > 1)) + "|",
    ]
    for part in [*parts, "card protocol (estimate)"]:
        cells = " | ".join(f"{best[v][part]:.3f}" for v in args.variants)
        if len(args.variants) > 1:
            cells += f" | {best[args.variants[-1]][part] / best[args.variants[0]][part]:.2f}x"
        lines.append(f"| {part} | {cells} |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, "Evaluation (`benchmarks/evaluate_epoch.py`)", text)


if __name__ == "__main__":
    main()
