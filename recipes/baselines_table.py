"""Markdown table of the evaluation reports under a folder (written by
`haba-datasets study recipes/studies/baselines.yaml`).

    python recipes/baselines_table.py recipes/results/baselines
"""

import json
import sys
from pathlib import Path


def main(folder: str) -> None:
    print("| training data | preprocessing | DSA | runs x epochs | test accuracy % (mean +- std) | validation % | wall time |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(Path(folder).glob("*/report.json")):
        r = json.loads(path.read_text())
        acc, val = r["test_accuracy"], r["val_accuracy"]
        dsa = "yes" if r["protocol"]["dsa"] else "no"
        print(f"| {r['train']} | {r['preprocessing']} | {dsa} | {len(acc['runs'])} x {r['protocol']['epochs']} | "
              f"{100 * acc['mean']:.2f} +- {100 * acc['std']:.2f} | {100 * val['mean']:.2f} | {r['seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "recipes/results/baselines")
