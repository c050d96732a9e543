"""Copy what a reader needs of a run or an evaluation into recipes/results/: no logs, grids or pictures.

    python recipes/keep_results.py SOURCE DEST

A distillation run (SOURCE/summary.json) keeps its summary, the validation records of its log
(``validation.jsonl``), the mean of each loss term between validation points (``losses.jsonl``)
and its final evaluation's report; an evaluation (SOURCE/report.json, also a
cross-architecture one) keeps its report. Reports keep each training run's curve points (the epochs
with a validation accuracy, and the last), not every epoch: a chart can be redrawn from them.
"""

import json
import shutil
import sys
from pathlib import Path


def curve_points(report):
    """``report`` with every ``curve`` cut to its validation points and its last epoch."""
    if isinstance(report, list):
        return [curve_points(value) for value in report]
    if not isinstance(report, dict):
        return report
    return {key: [p for i, p in enumerate(value) if "val_accuracy" in p or i == len(value) - 1]
            if key == "curve" and isinstance(value, list) else curve_points(value) for key, value in report.items()}  # fmt: skip


def keep_report(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(curve_points(json.loads(source.read_text())), indent=2) + "\n")


def validation_records(log: Path) -> str:
    """The lines of a loop's ``log.jsonl`` that carry a validation accuracy."""
    return "".join(line + "\n" for line in log.read_text().splitlines() if '"val_accuracy"' in line)


def loss_records(log: Path) -> str:
    """One line per stretch of iterations ending at a validation point: the mean of each loss term."""
    lines, terms, first = [], {}, None
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record["iteration"] == 0:
            continue
        first = first or record["iteration"]
        for key, value in record.items():
            if key not in ("iteration", "val_accuracy") and isinstance(value, (int, float)):
                terms.setdefault(key, []).append(value)
        if "val_accuracy" in record:
            means = {key: round(sum(v) / len(v), 6) for key, v in terms.items()}
            lines.append(json.dumps({"iterations": [first, record["iteration"]], **means}) + "\n")
            terms, first = {}, None
    return "".join(lines)


def keep(source: Path, dest: Path) -> None:
    if (source / "summary.json").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "summary.json", dest / "summary.json")
        (dest / "validation.jsonl").write_text(validation_records(source / "log.jsonl"))
        (dest / "losses.jsonl").write_text(loss_records(source / "log.jsonl"))
        if (source / "evaluation" / "report.json").is_file():
            keep_report(source / "evaluation" / "report.json", dest / "evaluation" / "report.json")
    elif (source / "report.json").is_file():
        keep_report(source / "report.json", dest / "report.json")
    else:
        raise SystemExit(f"error: {source} holds neither summary.json (a run) nor report.json (an evaluation)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    keep(Path(sys.argv[1]), Path(sys.argv[2]))
