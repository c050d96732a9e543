"""The generated tables of README.md, docs/results.md and recipes/README.md, remade from the recorded JSON.

    python recipes/tables.py                 # rewrite every generated table in place
    python recipes/tables.py --check [FILE]  # exit 1, naming each table that differs from its command's output
    python recipes/tables.py cross REPORT    # the table of a cross-architecture report.json

A generated table sits between ``<!-- table: COMMAND -->`` and ``<!-- end table -->``; COMMAND (a
``python recipes/*.py`` script with its arguments, run from the repository root) prints it.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

from haba_datasets.cross_architecture import CrossArchitectureReport, NetworkResult

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "results.md", ROOT / "recipes" / "README.md"]
BLOCK = re.compile(r"(<!-- table: (?P<command>[^>]+?) -->\n)(?P<table>.*?)(<!-- end table -->)", re.S)


def run(command: str) -> str:
    """What ``command`` prints (only this folder's scripts)."""
    args = command.split()
    if args[0] != "python" or not re.fullmatch(r"recipes/\w+\.py", args[1]):
        raise SystemExit(f"error: not a table command: {command!r}")
    return subprocess.run([sys.executable, *args[1:]], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def cross_table(report: Path) -> str:
    data = json.loads(report.read_text())
    results = {key: None if data[key] is None else [NetworkResult.from_json(r) for r in data[key]] for key in ("networks", "baseline")}
    setting = {k: v for k, v in data.items() if k not in ("distilled_with", "networks", "baseline", "transfer_mean", "baseline_transfer_mean")}
    return CrossArchitectureReport(setting, data["distilled_with"], results["networks"], results["baseline"]).table()


def regenerate(text: str, stale: list[str]) -> str:
    """``text`` with each generated table remade; the commands of those that changed go to ``stale``."""
    def block(match: re.Match) -> str:
        table = run(match["command"])
        if table != match["table"]:
            stale.append(match["command"])
        return match[1] + table + match[4]

    return BLOCK.sub(block, text)


def main(argv: list[str]) -> int:
    if argv[:1] == ["cross"]:
        print(cross_table(Path(argv[1])))
        return 0
    check = argv[:1] == ["--check"]
    files = [Path(f) for f in argv[1 if check else 0:]] or DOCUMENTS
    failed = False
    for path in files:
        stale = []
        text = regenerate(path.read_text(), stale)
        for command in stale:
            what = "differs from the recorded results" if check else "rewritten"
            print(f"{path}: the table of `{command}` {what}", file=sys.stderr)
        if stale and not check:
            path.write_text(text)
        failed |= bool(stale) and check
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
