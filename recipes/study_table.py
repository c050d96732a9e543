"""Markdown table of the one-factor study (written by recipes/study.sh): accuracy against CPU time.

    python recipes/study_table.py [recipes/results/study]

Each row is a run of a recipe with its `cpu` profile and the settings in the second column
changed (read from the run's summary, so the table cannot disagree with the run), under the
baseline run of that recipe (BASELINES). CPU time is wall time x threads: the experts a
run needs (its experts.json, copied from recipes/results/study/experts/) plus its distillation.
"""

import json
import sys
from pathlib import Path

from compare_table import stored_values  # recipes/ is this script's folder

from haba_datasets.distill.recipe import load_recipe

# recipe -> the run every study run of that recipe changes one factor of (same experts: 4 x 6 epochs, width 32)
BASELINES = {"cifar10-ipc10": Path("recipes/results/compare/c10-ipc10-mtt-haba"),
             "cifar10-ipc1": Path("recipes/results/zoo/cifar10-ipc1/run")}  # fmt: skip
BASELINE_EXPERTS = "cifar10-ipc10-cpu"  # the study's copy of those experts, timed
# the baselines' datasets measured with the card's protocol (3 runs x 500 epochs)
BASELINE_SEEDS = {"cifar10-ipc10": Path("recipes/results/compare/seeds/mtt-haba/report.json"),
                  "cifar10-ipc1": Path("recipes/results/zoo/cifar10-ipc1/report.json")}  # fmt: skip


def changes(recipe: dict, reference: dict, prefix: str = "") -> list[str]:
    """Dotted ``key=value`` settings where ``recipe`` differs from ``reference``."""
    out = []
    for key in sorted(set(recipe) | set(reference)):
        a, b = recipe.get(key), reference.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}={a}")
    return out


def row(folder: Path, experts: Path) -> str:
    s = json.loads((folder / "summary.json").read_text())
    reference = load_recipe(f"recipes/{s['name']}.yaml", profile="cpu")
    reference = {k: v for k, v in reference.items() if k not in ("name", "reference")}
    recipe, budget, metrics = s["recipe"], s["budget"], s["metrics"]
    changed = [c for c in changes(recipe, reference) if not c.startswith("evaluation.")] or ["(the `cpu` profile)"]
    curve = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    val = " / ".join(f"{100 * r['val_accuracy']:.1f}" for r in curve if "val_accuracy" in r)
    width = recipe["experts"].get("net_options", {}).get("width")
    cost = json.loads(experts.read_text())
    expert_h = cost["seconds"] * cost["threads"] / 3600
    distill_h = budget["distill_seconds"] / 3600  # one thread
    final = json.loads((folder / "evaluation" / "report.json").read_text())
    val_final, test = final["val_accuracy"]["runs"][0], final["test_accuracy"]["runs"][0]
    stored = budget.get("stored_values") or stored_values(recipe)  # older summaries lack the field
    return (f"| {s['name']} | {'; '.join(changed)} | {stored:,} | {recipe['experts']['count']} x {recipe['experts']['epochs']}, width {width}: "
            f"{expert_h:.2f} h | {budget['iterations']}: {budget['distill_seconds'] / budget['iterations']:.1f} s/it, "
            f"{distill_h:.2f} h | {val} | {s['selected_iteration']} ({100 * metrics['val_accuracy']:.2f}) | "
            f"{100 * val_final:.2f} | {100 * test:.2f} | {expert_h + distill_h:.2f} |")


def main(folder: str) -> None:
    print("| recipe | changed (against its `cpu` profile) | stored values | experts: count x epochs, CPU-hours | "
          "iterations: time per iteration (in-loop validation included), CPU-hours | validation % every 50 iterations (from 0) | selected iteration "
          "(validation %) | validation %, 1 x 500 | test %, 1 x 500 | CPU-hours in all |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    runs = sorted(Path(folder).glob("*/summary.json"), key=lambda p: (json.loads(p.read_text())["name"], p.parent.name))
    for name, baseline in BASELINES.items():
        print(row(baseline, Path(folder) / "experts" / f"{BASELINE_EXPERTS}.json"))
        for path in runs:
            if json.loads(path.read_text())["name"] == name:
                print(row(path.parent, path.parent / "experts.json"))
    print("\nConfirmed with the card's protocol (3 runs x 500 epochs, seeds 0-2; `bash recipes/study.sh DATA RUN:seeds`):\n")
    print("| recipe | run | validation % (mean) | test % (mean +- std) | per run |")
    print("|---|---|---|---|---|")
    confirmed = [(name, "baseline", path) for name, path in BASELINE_SEEDS.items()]
    for path in sorted(Path(folder).glob("seeds/*/report.json")):
        confirmed.append((json.loads((Path(folder) / path.parent.name / "summary.json").read_text())["name"],
                          path.parent.name, path))  # fmt: skip
    for name, run, path in sorted(confirmed, key=lambda c: (c[0], c[1] != "baseline", c[1])):
        report = json.loads(path.read_text())
        test = report["test_accuracy"]
        print(f"| {name} | {run} | {100 * report['val_accuracy']['mean']:.2f} | {100 * test['mean']:.2f} +- "
              f"{100 * test['std']:.2f} | {', '.join(f'{100 * a:.2f}' for a in test['runs'])} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "recipes/results/study")
