"""Writing one benchmark's section of benchmarks/README.md without touching the others."""

from __future__ import annotations

from pathlib import Path

HEADER = "# Benchmarks\n\nRatios are measured in one run on one machine.\n"


def write_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of the markdown file ``path``."""
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    heading = f"## {title}\n"
    if heading in text:
        before, rest = text.split(heading, 1)
        after = rest[rest.index("\n## ") + 1 :] if "\n## " in rest else ""
    else:
        before, after = text.rstrip("\n") + "\n\n", ""
    path.write_text(before + heading + "\n" + body.strip("\n") + "\n" + ("\n" + after if after else ""))
