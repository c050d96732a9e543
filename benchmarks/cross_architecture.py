"""What a cross-architecture table costs: per network, one training epoch on a zoo dataset, one
validation pass and one test pass, and from them the cost of ``haba-datasets evaluate NAME --models
... --baseline random`` at a chosen budget.

Each network trains exactly as ``haba-datasets evaluate`` trains it (``train_epoch``: DataLoader
over the FactorizedDataset with random pairing, DSA, SGD, the CLI's allocator setting), after two warm-up
epochs; the passes time :func:`~haba_datasets.evaluate.accuracy` on random images of the real
split sizes (5,000 and 10,000).

    python benchmarks/cross_architecture.py [--name cifar10-ipc10] [--models ConvNet,AlexNet,VGG11,ResNet18]
        [--epochs 5] [--runs 2 --budget-epochs 300 --lr-epochs 60 --grid 5 --curve-points 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from haba_datasets import DSA, FactorizedDataset, create_net
from haba_datasets.allocator import keep_freed_memory
from haba_datasets.evaluate import Protocol, train_epoch

sys.path.insert(0, str(Path(__file__).parent))
from evaluate_epoch import time_passes  # noqa: E402


def cost(name: str, model: str, epochs: int) -> dict:
    train = FactorizedDataset.from_pretrained(name, device="cpu", pairing="random")
    shape = train.hallucinators.image_shape
    torch.manual_seed(0)
    net = create_net(model, shape[0], len(train.classes), shape[1])
    protocol = Protocol(lr=0.01)
    optimizer = torch.optim.SGD(net.parameters(), lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)
    loader = DataLoader(train, batch_size=protocol.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    augment, draws, times = DSA(), torch.Generator().manual_seed(0), []
    for _ in range(epochs + 2):
        start = time.perf_counter()
        train_epoch(net, loader, optimizer, "cpu", augment, draws)
        times.append(time.perf_counter() - start)
    passes = time_passes(net, shape, len(train.classes))
    return {"epoch": statistics.median(times[2:]), "validation": passes["validation pass"], "test": passes["test pass"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="cifar10-ipc10", help="a bundled zoo dataset")
    parser.add_argument("--models", default="ConvNet,AlexNet,VGG11,ResNet18")
    parser.add_argument("--epochs", type=int, default=5, help="timed training epochs per network (median)")
    parser.add_argument("--runs", type=int, default=2, help="budget: runs per network")
    parser.add_argument("--budget-epochs", type=int, default=300, help="budget: epochs per run")
    parser.add_argument("--lr-epochs", type=int, default=60, help="budget: epochs of each lr candidate's run")
    parser.add_argument("--grid", type=int, default=5, help="budget: lr candidates per network")
    parser.add_argument("--curve-points", type=int, default=2, help="budget: validation passes per run")
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does
    lines = [
        f"Measured by `python benchmarks/cross_architecture.py --name {args.name} --models {args.models} --epochs "
        f"{args.epochs} --runs {args.runs} --budget-epochs {args.budget_epochs} --lr-epochs {args.lr_epochs} --grid "
        f"{args.grid} --curve-points {args.curve_points}` on {platform.machine()}, {torch.get_num_threads()} torch "
        f"thread(s), torch {torch.__version__}. Budget per network and training set: {args.runs} runs x "
        f"{args.budget_epochs} epochs ({args.curve_points} validation passes and 1 test pass each), plus "
        f"{args.grid} lr candidates x {args.lr_epochs} epochs (1 validation pass each) for every network "
        "without a learned lr.",
        "",
        "| network | training epoch (s) | validation pass (s) | test pass (s) | runs only (min) | with lr search (min) |",
        "|---|---|---|---|---|---|",
    ]
    for model in args.models.split(","):
        c = cost(args.name, model, args.epochs)
        runs = args.runs * (args.budget_epochs * c["epoch"] + args.curve_points * c["validation"] + c["test"])
        search = args.grid * (args.lr_epochs * c["epoch"] + c["validation"])
        lines.append(f"| {model} | {c['epoch']:.3f} | {c['validation']:.2f} | {c['test']:.2f} | {runs / 60:.1f} | "
                     f"{(runs + search) / 60:.1f} |")  # fmt: skip
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
