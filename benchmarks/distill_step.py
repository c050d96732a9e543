"""Seconds per distillation iteration and peak memory: MTT (full unroll vs checkpointed) and DM,
HaBa vs plain images, at the CIFAR-10 IPC 1 and IPC 10 settings.

Every setting runs in a fresh subprocess so its peak memory is its own: on CUDA the peak of
``torch.cuda.max_memory_allocated`` during the steps; on a CPU the growth of the process's peak
resident memory (``ru_maxrss``) over what it held before the first step. MTT uses expert
trajectories of random parameters (timings do not depend on their values) and the paper's
``syn_steps`` unless ``--syn-steps`` is given.

    python benchmarks/distill_step.py [--ipc 1 10] [--iterations 3] [--syn-steps N] [--write benchmarks/README.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from haba_datasets.augment import DSA
from haba_datasets.distill.objectives import DistributionMatching, TrajectoryMatching
from haba_datasets.distill.parameterizations import HaBa, PlainImages
from haba_datasets.nets import create_net

sys.path.insert(0, str(Path(__file__).parent))
from _report import write_section  # noqa: E402

SHAPE, CLASSES = (3, 32, 32), 10
SYN_STEPS = {1: 50, 10: 30, 50: 30}  # the paper's MTT settings
LR_TEACHER = {1: 0.01, 10: 0.001, 50: 0.01}


class RandomTrajectories:
    """Stands in for :class:`~haba_datasets.distill.experts.Experts`: random parameters, same shapes."""

    folder = "random"

    def __init__(self, epochs: int = 3) -> None:
        self.config = {"epochs": epochs}
        self.ids = [0]
        net = self.create_net()
        self.parameter_shapes = [(n, tuple(p.shape)) for n, p in net.named_parameters()]
        self._rows = torch.randn(epochs + 1, sum(p.numel() for p in net.parameters())) * 0.01

    def create_net(self):
        return create_net("ConvNet", SHAPE[0], CLASSES, SHAPE[1])

    def trajectory(self, expert: int, start: int, stop: int) -> torch.Tensor:
        return self._rows[start : stop + 1]


def one(setting: dict) -> dict:
    """Time ``iterations`` steps of one setting (run in a subprocess)."""
    torch.manual_seed(0)
    device = torch.device(setting["device"])
    ipc, n = setting["ipc"], setting["ipc"] * CLASSES
    init, labels = torch.randn(n, *SHAPE, device=device), torch.arange(CLASSES, device=device).repeat_interleave(ipc)
    if setting["parameterization"] == "haba":
        synthetic = HaBa(init, labels, num_classes=CLASSES, hallucinators=5)
    else:
        synthetic = PlainImages(init, labels, lr=100.0)
    if setting["objective"] == "dm":
        real = torch.randn(2000, *SHAPE)
        objective = DistributionMatching(real, torch.arange(CLASSES).repeat(200), num_classes=CLASSES,
                                         batch_real=setting["batch_real"], device=device)  # fmt: skip
    else:
        objective = TrajectoryMatching(RandomTrajectories(), syn_steps=setting["syn_steps"], expert_epochs=2,
                                       max_start_epoch=1, lr_teacher=LR_TEACHER[ipc], lr_lr=1e-5,
                                       checkpoint=setting["checkpoint"], device=device)  # fmt: skip
    augment, generator = DSA(), torch.Generator().manual_seed(0)
    optimizers = [*synthetic.optimizers(), *objective.optimizers()]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(setting["iterations"] + 1):  # the first is a warm-up
        start = time.perf_counter()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss, _ = objective.loss(synthetic, generator)
        extra, _ = synthetic.regularizer(augment, generator)
        (loss if extra is None else loss + extra).backward()
        for optimizer in optimizers:
            optimizer.step()
        synthetic.adversary_step(augment, generator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024
    return {**setting, "seconds": statistics.median(times[1:]), "peak_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--syn-steps", type=int, help="MTT inner steps (default: the paper's for each IPC)")
    parser.add_argument("--batch-real", type=int, default=256, help="DM real images per class")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write", type=Path, help="also write the table into this markdown file")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    rows = []
    for ipc in args.ipc:
        for objective, checkpoint in (("mtt", False), ("mtt", True), ("dm", False)):
            for parameterization in ("plain", "haba"):
                setting = {"ipc": ipc, "objective": objective, "checkpoint": checkpoint, "parameterization": parameterization,
                           "syn_steps": args.syn_steps or SYN_STEPS[ipc], "batch_real": args.batch_real,
                           "iterations": args.iterations, "device": args.device}  # fmt: skip
                out = subprocess.run([sys.executable, __file__, "--one", json.dumps(setting)], check=True,
                                     capture_output=True, text=True).stdout  # fmt: skip
                rows.append(json.loads(out.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"IPC {ipc} {objective}{' ckpt' if checkpoint else ''} {parameterization}: "
                      f"{r['seconds']:.3f} s/it, peak {r['peak_bytes'] / 2**20:.0f} MiB", flush=True)  # fmt: skip
    command = "python benchmarks/distill_step.py " + " ".join(sys.argv[1:])
    lines = [
        f"Measured by `{command.strip()}` on {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, device {args.device}; CIFAR-10 shapes (3x32x32, 10 classes), ConvNet-3 "
        f"(width 128), HaBa with 5 hallucinators and its adversary (both of its losses included); MTT "
        f"`batch_syn` = all items; DM `batch_real` = {args.batch_real}; median of {args.iterations} "
        "iterations after a warm-up.",
        "",
        "| IPC | objective | inner steps | parameterisation | s / iteration | peak memory (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = {"dm": "DM"}.get(r["objective"], "MTT, checkpointed" if r["checkpoint"] else "MTT, full unroll")
        steps = r["syn_steps"] if r["objective"] == "mtt" else "-"
        lines.append(f"| {r['ipc']} | {name} | {steps} | {r['parameterization']} | {r['seconds']:.3f} | "
                     f"{r['peak_bytes'] / 2**20:.0f} |")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, "Distillation step (`benchmarks/distill_step.py`)", text)


if __name__ == "__main__":
    main()
