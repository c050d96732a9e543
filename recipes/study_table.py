"""Markdown table of the one-factor study (written by recipes/study.sh): accuracy against CPU time.

    python recipes/study_table.py [recipes/results/study]

Each row is a run of recipes/cifar10-ipc10.yaml with the `cpu` profile and the settings in its
first column changed (read from the run's summary, so the table cannot disagree with the run);
the baseline is recipes/compare.sh's HaBa/MTT run. CPU time is wall time x threads: the experts a
run needs (its experts.json, copied from recipes/results/study/experts/) plus its distillation.
"""

import json
import sys
from pathlib import Path

from haba_datasets.distill.recipe import load_recipe

BASELINE = Path("recipes/results/compare/c10-ipc10-mtt-haba")
# The baseline's experts (4 x 6 epochs, width 32): trained once for compare.sh; this study's copy
# of them is timed in recipes/results/study/experts/cifar10-ipc10-cpu.json.
BASELINE_EXPERTS = "cifar10-ipc10-cpu"


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


def row(folder: Path, reference: dict, experts_dir: Path) -> str:
    s = json.loads((folder / "summary.json").read_text())
    recipe, budget, metrics = s["recipe"], s["budget"], s["metrics"]
    changed = [c for c in changes(recipe, reference) if not c.startswith("evaluation.")] or ["(the `cpu` profile)"]
    curve = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    val = " / ".join(f"{100 * r['val_accuracy']:.1f}" for r in curve if "val_accuracy" in r)
    width = recipe["experts"].get("net_options", {}).get("width")
    cost = json.loads((experts_dir / f"{BASELINE_EXPERTS}.json" if folder == BASELINE else folder / "experts.json").read_text())
    expert_h = cost["seconds"] * cost["threads"] / 3600
    distill_h = budget["distill_seconds"] / 3600  # one thread
    test = json.loads((folder / "evaluation" / "report.json").read_text())["test_accuracy"]["runs"][0]
    stored = budget.get("stored_values", 304_320)  # the baseline's summary predates the field: 9 bases x 10 + 5 hallucinators
    return (f"| {'; '.join(changed)} | {stored:,} | {recipe['experts']['count']} x {recipe['experts']['epochs']}, width {width}: "
            f"{expert_h:.2f} h | {budget['iterations']}: {budget['distill_seconds'] / budget['iterations']:.1f} s/it, "
            f"{distill_h:.2f} h | {val} | {s['selected_iteration']} ({100 * metrics['val_accuracy']:.2f}) | "
            f"{100 * test:.2f} | {expert_h + distill_h:.2f} |")


def main(folder: str) -> None:
    reference = load_recipe("recipes/cifar10-ipc10.yaml", profile="cpu")
    reference = {k: v for k, v in reference.items() if k not in ("name", "reference")}
    print("| changed (against the `cpu` profile) | stored values | experts: count x epochs, CPU-hours | iterations: "
          "time per iteration, CPU-hours | validation % every 50 iterations (from 0) | selected iteration "
          "(validation %) | test %, 1 x 500 | CPU-hours in all |")
    print("|---|---|---|---|---|---|---|---|")
    experts_dir = Path(folder) / "experts"
    print(row(BASELINE, reference, experts_dir))
    for path in sorted(Path(folder).glob("*/summary.json")):
        print(row(path.parent, reference, experts_dir))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "recipes/results/study")
