"""Markdown table of the HaBa-vs-plain comparison (written by `haba-datasets study recipes/studies/compare.yaml`).

    python recipes/compare_table.py [recipes/results/compare]
"""

import json
import math
import sys
from pathlib import Path

from haba_datasets import create_hallucinators

SHAPES, CLASSES = {"cifar10": (3, 32, 32), "fashion_mnist": (1, 28, 28)}, 10


def stored_values(recipe: dict) -> int:
    """Values a dataset of this recipe stores: images, or bases plus hallucinator parameters."""
    section, shape = recipe["parameterization"], SHAPES[recipe["dataset"]]
    if section["kind"] == "plain":
        return recipe["ipc"] * CLASSES * math.prod(shape)
    haba = section["haba"]
    bank = create_hallucinators("haba-conv", haba["hallucinators"], shape, shape, device="meta")
    return haba["bases_per_class"] * CLASSES * math.prod(shape) + sum(p.numel() for p in bank.parameters())


def main(folder: str) -> None:
    print("| objective | synthetic data | stored values (vs 10 images/class) | iterations | distillation time | "
          "selected iteration (validation %) | test accuracy %, seed 0 | test accuracy %, all runs (runs x epochs) |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(Path(folder).glob("*/summary.json")):
        s = json.loads(path.read_text())
        r, m, b = s["recipe"], s["metrics"], s["budget"]
        kind = r["parameterization"]["kind"]
        what = "plain images, 10/class" if kind == "plain" else \
            f"HaBa, {r['parameterization']['haba']['bases_per_class']} bases/class x {r['parameterization']['haba']['hallucinators']} hallucinators"
        values = stored_values(r)
        seed0 = json.loads((path.parent / "evaluation" / "report.json").read_text())["test_accuracy"]["runs"][0]
        print(f"| {r['objective']['kind'].upper()} | {what} | {values:,} ({values / (r['ipc'] * CLASSES * 3072):.3f}x) | "
              f"{b['iterations']} | {b['distill_seconds'] / 60:.1f} min | {s['selected_iteration']} ({100 * m['val_accuracy']:.2f}) | "
              f"{100 * seed0:.2f} | "
              f"{100 * m['test_accuracy']:.2f} +- {100 * m['test_accuracy_std']:.2f} ({m['runs']} x {m['epochs']}) |")
    for path in sorted(Path(folder).glob("c*/report.json")):
        r = json.loads(path.read_text())
        acc = r["test_accuracy"]
        print(f"| - | {r['train']} ({r['preprocessing']}) | 307,200 (1.000x) | - | - | - | {100 * acc['runs'][0]:.2f} | "
              f"{100 * acc['mean']:.2f} +- {100 * acc['std']:.2f} ({len(acc['runs'])} x {r['protocol']['epochs']}) |")

    seeds = sorted(Path(folder).glob("seeds/*/report.json"))
    if seeds:
        print("\n| selected dataset | test accuracy % (mean +- std) | runs (seeds) x epochs | per run |")
        print("|---|---|---|---|")
    for path in seeds:
        r = json.loads(path.read_text())
        acc = r["test_accuracy"]
        runs = ", ".join(f"{100 * a:.2f}" for a in acc["runs"])
        print(f"| {path.parent.name} | {100 * acc['mean']:.2f} +- {100 * acc['std']:.2f} | {len(acc['runs'])} x "
              f"{r['protocol']['epochs']} | {runs} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "recipes/results/compare")
