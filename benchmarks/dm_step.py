"""Seconds per iteration of DM under interpolated experts (``dm-dance``) against plain DM, at the
``cpu-dance`` profiles of the CIFAR-10 recipes (IPC 10 and 50), and ways to run its forward faster.

Both objectives run with the same real batch, network width and parameterisation (the profile's),
on random images of CIFAR-10's shape (timings do not depend on the values); ``dm-dance`` reads
random expert ends. Variants of ``dm-dance``: ``eager`` (as shipped), ``channels_last`` (network
and images in channels-last memory format), ``compile`` (``torch.compile`` of the feature
network). Settings alternate within each round; the table gives the best round, each the median
of ``--iterations`` steps after a warm-up.

    python benchmarks/dm_step.py [--ipc 10 50] [--parameterizations plain haba] [--variants eager channels_last compile]
        [--rounds 3] [--iterations 3] [--write benchmarks/README.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from _report import write_section  # noqa: E402
from distill_step import CLASSES, SHAPE, RandomTrajectories  # noqa: E402


class RandomEnds(RandomTrajectories):
    """Stands in for :class:`~haba_datasets.distill.experts.Experts` kept with ``keep="ends"``: random states."""

    def __init__(self, experts: dict) -> None:
        super().__init__(1, experts.get("net_options", {}))
        self.config = {"net": "ConvNet", "net_options": self.net_options, "keep": "ends"}
        self.ids = list(range(experts["count"]))
        self._ends = [(torch.randn(self._rows.shape[1]) * 0.01, torch.randn(self._rows.shape[1]) * 0.01) for _ in self.ids]

    def ends(self, expert: int):
        return self._ends[expert]


def _variant(objective, variant: str):
    """Wrap ``objective``'s network as ``variant`` asks (the objective embeds with ``net.embed``)."""
    if variant == "eager":
        return
    net = objective.net
    if variant == "channels_last":
        net.to(memory_format=torch.channels_last)
        net.embed = lambda x: net.features(x.contiguous(memory_format=torch.channels_last))
    elif variant == "compile":
        compiled = torch.compile(net.features)
        net.embed = lambda x: compiled(x)


def build(ipc: int, parameterization: str, objective: str, variant: str, device: torch.device):
    from haba_datasets.distill.recipe import create_objective, create_parameterization, items_per_class, load_recipe

    overrides = {"parameterization.kind": parameterization}
    recipe = load_recipe(ROOT / "recipes" / f"cifar10-ipc{ipc}.yaml", profile="cpu-dance", overrides=overrides)
    dance = recipe["objective"]["dm-dance"]
    if objective == "dm":  # the same real batch and width as dm-dance
        recipe["objective"] = {"kind": "dm", "dm": {"batch_real": dance["batch_real"], "net_options": recipe["experts"]["net_options"]}}
    torch.manual_seed(0)
    n = items_per_class(recipe) * len(CLASSES)
    init, labels = torch.randn(n, *SHAPE), torch.arange(len(CLASSES)).repeat_interleave(n // len(CLASSES))
    real = SimpleNamespace(classes=CLASSES, train=SimpleNamespace(labels=torch.arange(len(CLASSES)).repeat(500)))
    train = torch.randn(len(real.train.labels), *SHAPE)
    synthetic = create_parameterization(recipe, real, init, labels, device)
    built = create_objective(recipe, real, train, RandomEnds(recipe["experts"]), device)
    if objective == "dm-dance":
        _variant(built, variant)
    return synthetic, built, {"items": n, "width": recipe["experts"]["net_options"].get("width", 128),
                              "batch_real": dance["batch_real"]}  # fmt: skip


def time_steps(synthetic, objective, iterations: int, device: torch.device) -> float:
    from haba_datasets.augment import DSA
    from haba_datasets.distill.loop import distill_step

    augment, generator, times = DSA(), torch.Generator().manual_seed(0), []
    for _ in range(iterations + 1):  # the first is a warm-up (and compiles)
        start = time.perf_counter()
        distill_step(synthetic, objective, generator, augment)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ipc", type=int, nargs="+", default=[10, 50], choices=[10, 50])
    parser.add_argument("--parameterizations", nargs="+", default=["plain", "haba"], choices=["plain", "haba"])
    parser.add_argument("--variants", nargs="+", default=["eager", "channels_last", "compile"],
                        choices=["eager", "channels_last", "compile"])  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write", type=Path, help="replace this benchmark's section of a markdown file")
    args = parser.parse_args()
    device = torch.device(args.device)
    cases = [(ipc, p, o, v) for ipc in args.ipc for p in args.parameterizations
             for o, v in [("dm", "eager"), *[("dm-dance", v) for v in args.variants]]]  # fmt: skip
    built = {case: build(*case, device) for case in cases}
    best: dict = {}
    for round_ in range(args.rounds):
        for case in cases:
            seconds = time_steps(*built[case][:2], args.iterations, device)
            best[case] = min(best.get(case, seconds), seconds)
            print(f"round {round_ + 1}: IPC {case[0]} {case[1]} {case[2]} {case[3]}: {seconds:.3f} s / it", flush=True)
    text = _table(cases, built, best, args)
    print(text)
    if args.write:
        write_section(args.write, "DM under interpolated experts (`benchmarks/dm_step.py`)", text)


def _table(cases, built, best, args) -> str:
    command = "python benchmarks/dm_step.py " + " ".join(sys.argv[1:])
    lines = [
        f"Measured by `{command.strip()}` on {platform.machine()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, device {args.device}; CIFAR-10 shapes, the `cpu-dance` profiles (HaBa's adversary step "
        f"included); best of {args.rounds} alternating rounds, each the median of {args.iterations} iterations after a "
        "warm-up.",
        "",
        "| IPC | parameterisation | items | width | real per class | objective | variant | s / it | against DM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        ipc, parameterization, objective, variant = case
        info, dm = built[case][2], best[(ipc, parameterization, "dm", "eager")]
        lines.append(f"| {ipc} | {parameterization} | {info['items']} | {info['width']} | {info['batch_real']} | {objective} | "
                     f"{variant} | {best[case]:.3f} | {best[case] / dm:.2f}x |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
