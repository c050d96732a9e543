"""Seconds per distillation iteration and peak memory of the loop's own step
(:func:`haba_datasets.distill.loop.distill_step`), at the settings of the CIFAR-10 recipes.

Cases: the recipes' paper settings (IPC 1: 50 inner steps, IPC 10: 30; width 128; 5
hallucinators; ``batch_syn`` all) and their ``cpu`` profiles, for HaBa and plain images, MTT with
the full unroll and checkpointed, and DM (the ``cpu-dm`` profile). The variants of
``benchmarks/_variants.py`` (``before``, ``allocator``, ``layers``, ``after``) are A/B'd in one run,
alternating fresh subprocesses round by round.

Peak memory is the growth of the process's peak resident memory (``ru_maxrss``) over what it
held before the first step (on CUDA: ``torch.cuda.max_memory_allocated``). MTT uses expert
trajectories of random parameters (timings do not depend on their values).

    python benchmarks/distill_step.py [--cases paper cpu] [--ipc 1 10] [--parameterizations plain haba]
        [--unrolls full checkpointed] [--no-dm] [--variants before after] [--rounds 2] [--iterations 2]
        [--processes 1 2] [--write benchmarks/README.md]

``--processes N`` runs each setting under ``torchrun`` with N processes (gloo on the CPU), the
iteration shared as ``haba-datasets distill`` shares it; time and peak memory are the largest of
any one process.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from _report import write_section  # noqa: E402
from _variants import add_arguments, alternate, apply  # noqa: E402

CLASSES = [str(c) for c in range(10)]
SHAPE = (3, 32, 32)


class RandomTrajectories:
    """Stands in for :class:`~haba_datasets.distill.experts.Experts`: random parameters, the recipe's net."""

    folder = "random"

    def __init__(self, epochs: int, net_options: dict) -> None:
        self.config, self.ids, self.net_options = {"epochs": epochs, "keep": "all"}, [0], net_options
        net = self.create_net()
        self.parameter_shapes = [(n, tuple(p.shape)) for n, p in net.named_parameters()]
        self._rows = torch.randn(epochs + 1, sum(p.numel() for p in net.parameters())) * 0.01

    def create_net(self):
        from haba_datasets.nets import create_net

        return create_net("ConvNet", SHAPE[0], len(CLASSES), SHAPE[1], **self.net_options)

    def trajectory(self, expert: int, start: int, stop: int) -> torch.Tensor:
        return self._rows[start : stop + 1]


def _recipe(setting: dict) -> dict:
    from haba_datasets.distill.recipe import load_recipe

    overrides = {"parameterization.kind": setting["parameterization"]}
    if setting["objective"] == "mtt":
        overrides["objective.mtt.checkpoint"] = setting["checkpoint"]
    else:
        overrides["objective.kind"] = "dm"
    return load_recipe(ROOT / "recipes" / f"cifar10-ipc{setting['ipc']}.yaml", profile=setting["profile"],
                       overrides=overrides)  # fmt: skip


def one(setting: dict) -> dict:
    """Time ``iterations`` steps of one setting and variant (run in a fresh subprocess)."""
    apply(setting["variant"])
    from haba_datasets.augment import DSA
    from haba_datasets.distill import distributed
    from haba_datasets.distill.loop import distill_step
    from haba_datasets.distill.recipe import create_objective, create_parameterization, items_per_class

    recipe = _recipe(setting)
    torch.manual_seed(0)
    _, _, device, _ = distributed.start(setting["device"])
    n = items_per_class(recipe) * len(CLASSES)
    init, labels = torch.randn(n, *SHAPE), torch.arange(len(CLASSES)).repeat_interleave(n // len(CLASSES))
    real = SimpleNamespace(classes=CLASSES, train=SimpleNamespace(labels=torch.arange(len(CLASSES)).repeat(500)))
    experts = None
    if setting["objective"] == "mtt":
        mtt = recipe["objective"]["mtt"]
        experts = RandomTrajectories(mtt["max_start_epoch"] + mtt["expert_epochs"], recipe["experts"].get("net_options", {}))
    train = torch.randn(len(real.train.labels), *SHAPE) if experts is None else None
    synthetic = create_parameterization(recipe, real, init, labels, device)
    objective = create_objective(recipe, real, train, experts, device)
    augment, generator = DSA(), torch.Generator().manual_seed(0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(setting["iterations"] + 1):  # the first is a warm-up
        start = time.perf_counter()
        distill_step(synthetic, objective, generator, augment)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024
    mtt, dm = recipe["objective"]["mtt"], recipe["objective"]["dm"]
    net_options = recipe["experts"].get("net_options", {}) if experts else dm.get("net_options", {})
    info = {"syn_steps": mtt["syn_steps"] if experts else None, "items": n, "width": net_options.get("width", 128),
            "threads": torch.get_num_threads()}  # fmt: skip
    return {**setting, **info, "seconds": statistics.median(times[1:]), "peak_bytes": peak}


def settings(args) -> list[dict]:
    out = []
    for case in args.cases:
        for ipc in args.ipc:
            objectives = [("mtt", unroll == "checkpointed") for unroll in args.unrolls]
            objectives += [("dm", False)] if case == "cpu" and args.dm else []
            for objective, checkpoint in objectives:
                for parameterization in args.parameterizations:
                    profile = {"paper": None, "cpu": "cpu-dm" if objective == "dm" else "cpu"}[case]
                    for processes in args.processes:
                        out.append({"case": case, "ipc": ipc, "profile": profile, "objective": objective,
                                    "checkpoint": checkpoint, "parameterization": parameterization,
                                    "iterations": args.iterations, "device": args.device, "processes": processes})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["paper", "cpu"], choices=["paper", "cpu"])
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10], choices=[1, 10, 50])
    parser.add_argument("--parameterizations", nargs="+", default=["plain", "haba"], choices=["plain", "haba"])
    parser.add_argument("--unrolls", nargs="+", default=["full", "checkpointed"], choices=["full", "checkpointed"])
    parser.add_argument("--no-dm", dest="dm", action="store_false", help="skip DM (measured in the cpu case)")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per process (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--processes", type=int, nargs="+", default=[1], help="torchrun processes per setting")
    add_arguments(parser)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    rows = []
    for setting in settings(args):
        runs = alternate(__file__, setting, args)
        best = {v: min(r, key=lambda x: x["seconds"]) for v, r in runs.items()}
        rows.append(best)
        print(" | ".join(f"{_name(r)} {v}: {r['seconds']:.3f} s, {r['peak_bytes'] / 2**20:.0f} MiB"
                         for v, r in best.items()), flush=True)  # fmt: skip
    text = _table(rows, args)
    print(text)
    if args.write:
        write_section(args.write, "Distillation step (`benchmarks/distill_step.py`)", text)


def _name(r: dict) -> str:
    objective = "DM" if r["objective"] == "dm" else ("MTT checkpointed" if r["checkpoint"] else "MTT full unroll")
    return f"{r['case']} IPC {r['ipc']} {objective} {r['parameterization']}"


def _table(rows: list[dict], args) -> str:
    first = next(iter(rows[0].values()))
    command = "python benchmarks/distill_step.py " + " ".join(sys.argv[1:])
    variants = args.variants
    head = " | ".join(f"{v}: s / it, peak MiB" for v in variants)
    ratio = f" | {variants[-1]} / {variants[0]}" if len(variants) > 1 else ""
    lines = [
        f"Measured by `{command.strip()}` on {platform.machine()}, {first['threads']} torch threads, torch "
        f"{torch.__version__}, device {args.device}; CIFAR-10 shapes; the step of `distill_step` (both HaBa losses "
        f"and `after_step` included); best of {args.rounds} alternating rounds, each the median of "
        f"{args.iterations} iterations after a warm-up, in a fresh process.",
        "",
        f"| case | IPC | objective | inner steps | width | items | parameterisation | processes | {head}{ratio} |",
        "|---" * (8 + len(variants) + (len(variants) > 1)) + "|",
    ]
    for best in rows:
        r = best[variants[0]]
        objective = "DM" if r["objective"] == "dm" else ("MTT, checkpointed" if r["checkpoint"] else "MTT, full unroll")
        cells = " | ".join(f"{best[v]['seconds']:.3f}, {best[v]['peak_bytes'] / 2**20:,.0f}" for v in variants)
        if len(variants) > 1:
            cells += f" | {best[variants[-1]]['seconds'] / best[variants[0]]['seconds']:.2f}x"
        lines.append(f"| {r['case']} | {r['ipc']} | {objective} | {r['syn_steps'] or '-'} | {r['width']} | {r['items']} | "
                     f"{r['parameterization']} | {r.get('processes', 1)} | {cells} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
