"""The zoo table of docs/results.md: every zoo entry and what was measured beside it, per setting,
with the published numbers, the command and the budget behind each figure.

    python recipes/zoo_table.py            # the full table (docs/results.md)
    python recipes/zoo_table.py --short    # one row per zoo entry (README.md)
    python recipes/zoo_table.py --commands # the commands that make each entry (recipes/README.md)
"""

import json
import sys
from pathlib import Path

from haba_datasets.zoo import list_zoo, zoo_entry

RESULTS = Path(__file__).parent / "results"
#: Rows beside each zoo entry: what was trained, its evaluation report folder, the command that wrote it and (if
#: distilled) the run whose summary gives the budget; recorded as data in results/zoo/baselines.json.
MEASURED = json.loads((RESULTS / "zoo" / "baselines.json").read_text())


def accuracy(mean: float, std: float, runs: int, epochs: int) -> str:
    return f"{100 * mean:.2f} +- {100 * std:.2f} ({runs} x {epochs})"


def distilled(budget: dict, selected: int, val: float) -> str:
    experts = f", {budget['experts']} experts" if budget.get("experts") else ""
    return (f"{budget['iterations']} iterations in {budget['distill_seconds'] / 60:.0f} min{experts}; "
            f"iteration {selected} selected (validation {100 * val:.2f})")  # fmt: skip


KINDS = {"haba": "HaBa", "plain": "plain images", "mtt": "MTT", "dm": "DM"}


def made_by(recipe: dict) -> str:
    """Method and profile; for MTT also the experts' (and student's) width, the factor that moved the zoo."""
    width = (recipe.get("experts") or {}).get("net_options", {}).get("width") if recipe["objective"]["kind"] == "mtt" else None
    extra = f", width {width}" if width else ""
    return f"{KINDS[recipe['parameterization']['kind']]} on {KINDS[recipe['objective']['kind']]} (`{recipe['profile']}`{extra})"


def short() -> None:
    print("| name | made by | stored | test accuracy %, mean +- std (runs x epochs) | published (paper) |")
    print("|---|---|---|---|---|")
    for name in list_zoo():
        config = zoo_entry(name).config
        prov, m = config["provenance"], config["provenance"]["metrics"]
        recipe, hall = prov["recipe"], config["hallucinators"]
        made = made_by(recipe)
        small = config["basis_shape"] != config["image_shape"]  # multi-formation: bases smaller than the images
        bases = f"{config['num_bases']} bases" + (f" of {'x'.join(map(str, config['basis_shape'][1:]))}" if small else "")
        size = f"{config['num_bases']} images" if hall["architecture"] == "identity" else f"{bases} x {hall['count']} hallucinators"
        published = ", ".join(f"{method} {100 * acc:.1f}" for method, acc in prov["reference"].items())
        print(f"| `{name}` | {made} | {size} | {accuracy(m['test_accuracy'], m['test_accuracy_std'], m['runs'], m['epochs'])} "
              f"| {published} |")  # fmt: skip


def commands() -> None:
    print("| entry | distill | bundle |")
    print("|---|---|---|")
    for entry in map(zoo_entry, list_zoo()):
        experts = f" --experts-dir {entry.experts}" if entry.experts else ""
        distill = f"haba-datasets distill {entry.recipe} --profile {entry.profile}{experts} -o {entry.run} --resume"
        runs, epochs = entry.protocol
        bundle = f"haba-datasets zoo bundle {entry.name} {entry.run} --runs {runs} --epochs {epochs}"
        print(f"| `{entry.name}` | `{distill}` | `{bundle}{' --normalize' if entry.normalize else ''}` |")


def main() -> None:
    print("| setting | training data | test accuracy %, mean +- std (runs x epochs) | published (paper) | budget | command |")
    print("|---|---|---|---|---|---|")
    for name in list_zoo():
        prov = zoo_entry(name).provenance
        m, recipe = prov["metrics"], prov["recipe"]
        published = ", ".join(f"{method} {100 * acc:.1f}" for method, acc in prov["reference"].items())
        what = f"**zoo `{name}`**: {made_by(recipe)}"
        budget = distilled(prov["budget"], prov["selected_iteration"], m["val_accuracy"])
        print(f"| {name} | {what} | **{accuracy(m['test_accuracy'], m['test_accuracy_std'], m['runs'], m['epochs'])}** | "
              f"{published} | {budget} | `{m['command']}` |")  # fmt: skip
        for row in MEASURED[name]:
            what, command, run = row["what"], row["command"], row.get("run")
            report = json.loads((RESULTS / row["report"] / "report.json").read_text())
            acc = report["test_accuracy"]
            budget = f"evaluation {report['seconds'] / 60:.0f} min"
            if run:
                summary = json.loads((RESULTS / run / "summary.json").read_text())
                budget = distilled(summary["budget"], summary["selected_iteration"], summary["metrics"]["val_accuracy"])
            print(f"| {name} | {what} | {accuracy(acc['mean'], acc['std'], len(acc['runs']), report['protocol']['epochs'])} "
                  f"| | {budget} | `{command}` |")  # fmt: skip


if __name__ == "__main__":
    {"--short": short, "--commands": commands}.get(sys.argv[1] if sys.argv[1:] else "", main)()
