"""Markdown table of the one-factor study (written by `haba-datasets study recipes/studies/study.yaml`):
accuracy against CPU time.

    python recipes/study_table.py [recipes/results/study]

Each row is a run of a recipe with a profile (`cpu`, or `cpu-dm` for DM) and the settings in the
second column changed (read from the run's summary, so the table cannot disagree with the run),
under the baseline runs of that recipe and profile (results/study/baselines.json). CPU time is
wall time x threads: the experts a run needs (its experts.json, copied from
recipes/results/study/experts/; none for DM) plus its distillation.
"""

import json
import sys
from pathlib import Path

from compare_table import stored_values  # recipes/ is this script's folder

from haba_datasets.distill.recipe import load_recipe

RESULTS = Path("recipes/results")
#: The runs every study run of a (recipe, profile) changes one factor of, each with the timing of the experts it
#: used (none for DM) and, where its settings now have another name, the profile it is shown against; and the
#: baselines' datasets measured with the card's protocol: recorded as data in results/study/baselines.json.
INDEX = json.loads((RESULTS / "study" / "baselines.json").read_text())


def key(summary: dict) -> tuple[str, str]:
    return summary["name"], summary["recipe"]["profile"]


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


def row(folder: Path, experts: Path | None, profile: str | None = None) -> str:
    """A run against ``profile`` (default: the one it was made with)."""
    s = json.loads((folder / "summary.json").read_text())
    profile = profile or key(s)[1]
    reference = load_recipe(f"recipes/{s['name']}.yaml", profile=profile)
    reference = {k: v for k, v in reference.items() if k not in ("name", "reference")}
    recipe, budget, metrics = s["recipe"], s["budget"], s["metrics"]
    unread = "parameterization." + ("haba." if recipe["parameterization"]["kind"] == "plain" else "plain.")  # never read
    changed = [c for c in changes(recipe, reference) if not c.startswith(("evaluation.", "profile=", unread))]
    changed = changed or [f"(the `{profile}` profile)"]
    curve = [json.loads(line) for line in (folder / "validation.jsonl").read_text().splitlines()]
    val = " / ".join(f"{100 * r['val_accuracy']:.1f}" for r in curve)
    if experts is None:
        expert_h, expert_cell = 0.0, "-"
    else:
        width = recipe["experts"].get("net_options", {}).get("width")
        expert_cell = f"{recipe['experts']['count']} x {recipe['experts']['epochs']}, width {width}: "
        if experts.exists():
            cost = json.loads(experts.read_text())
            expert_h = cost["seconds"] * cost["threads"] / 3600
            expert_cell += f"{expert_h:.2f} h"
        else:  # trained outside the study (zoo.sh), not timed
            expert_h, expert_cell = 0.0, expert_cell + "not timed"
    distill_h = budget["distill_seconds"] * budget.get("threads", 1) / 3600  # older summaries: one thread
    final = folder / "evaluation" / "report.json"  # absent for a run without final evaluation (a zoo entry: its card)
    report = json.loads(final.read_text()) if final.exists() else None
    val_final, test = (f"{100 * report[k]['runs'][0]:.2f}" if report else "-" for k in ("val_accuracy", "test_accuracy"))
    stored = budget.get("stored_values") or stored_values(recipe)  # older summaries lack the field
    return (f"| {s['name']} ({profile}) | {'; '.join(changed)} | {stored:,} | {expert_cell} | {budget['iterations']}: {budget['distill_seconds'] / budget['iterations']:.1f} s/it, "
            f"{distill_h:.2f} h | {val} | {s['selected_iteration']} ({100 * metrics['val_accuracy']:.2f}) | "
            f"{val_final} | {test} | {expert_h + distill_h:.2f} |")


def main(folder: str) -> None:
    print("| recipe (profile) | changed (against the profile) | stored values | experts: count x epochs, CPU-hours | "
          "iterations: time per iteration (in-loop validation included), CPU-hours | validation % from iteration 0, every 50 "
          "(MTT) or 200 (DM) | selected iteration "
          "(validation %) | validation %, final evaluation (1 x 500 epochs; IPC 50: 1 x 300) | test %, the same | "
          "CPU-hours in all |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    runs = sorted(Path(folder).glob("*/summary.json"), key=lambda p: p.parent.name)
    baselines = {}
    for b in INDEX["baselines"]:
        baselines.setdefault((b["recipe"], b["profile"]), []).append(b)
    for setting, rows in baselines.items():
        for b in rows:
            print(row(RESULTS / b["run"], RESULTS / b["experts"] if b["experts"] else None, b.get("shown_as")))
        for path in runs:
            if key(json.loads(path.read_text())) == setting:
                experts = path.parent / "experts.json"
                print(row(path.parent, experts if experts.exists() else None))
    print("\nConfirmed with the card's protocol (3 runs x 500 epochs, seeds 0-2; `haba-datasets study recipes/studies/study.yaml RUN:seeds`):\n")
    print("| recipe (profile) | run | validation % (mean) | test % (mean +- std) | per run |")
    print("|---|---|---|---|---|")
    confirmed = [((b["recipe"], b["profile"]), b["label"], RESULTS / b["report"]) for b in INDEX["baseline_seeds"]]
    for path in sorted(Path(folder).glob("seeds/*/report.json")):
        confirmed.append((key(json.loads((Path(folder) / path.parent.name / "summary.json").read_text())),
                          path.parent.name, path))  # fmt: skip
    for setting, run, path in sorted(confirmed, key=lambda c: (c[0], not c[1].startswith("baseline"), c[1])):
        report = json.loads(path.read_text())
        test = report["test_accuracy"]
        print(f"| {setting[0]} ({setting[1]}) | {run} | {100 * report['val_accuracy']['mean']:.2f} | {100 * test['mean']:.2f} +- "
              f"{100 * test['std']:.2f} | {', '.join(f'{100 * a:.2f}' for a in test['runs'])} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "recipes/results/study")
