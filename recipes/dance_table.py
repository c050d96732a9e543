"""Markdown table of DM under interpolated experts (``dm-dance``) against DM under random networks.

    python recipes/dance_table.py [recipes/results/study]

Each row is a recorded run (summary.json, validation.jsonl, losses.jsonl when kept, the final
evaluation's report.json) and the run it is measured against, at equal storage (iterations: the
fourth column; DM under random networks gains nothing from 800 to 1,600).
CPU time is wall time x threads of the distillation plus, for runs that read experts, the experts'
training (results/study/experts/).
"""

import json
import sys
from pathlib import Path

#: (run, experts timing or None, label, the run it is measured against)
RUNS = [
    ("dm-mf2-basis-lr-0.001", None, "HaBa, DM, random networks, 64 real images per class", None),
    ("dm-mf2-basis-lr-0.001-real-256", None, "HaBa, DM, random networks, 256 real images per class", None),
    ("dm-mf2-basis-lr-0.001-real-256-1600", None, "the same, 1,600 iterations", None),
    ("dm-plain-real-256", None, "plain images, DM, random networks, 256 real images per class", None),
    ("../zoo/cifar10-ipc10/run", "cifar10-w64", "the zoo's cifar10-ipc10 (HaBa, MTT, width 64)", None),
    ("dance-haba", "cifar10-dance-w32", "HaBa, dm-dance", "dm-mf2-basis-lr-0.001-real-256"),
    ("dance-haba", "cifar10-dance-w32", "HaBa, dm-dance (against the zoo entry)", "../zoo/cifar10-ipc10/run"),
    ("dance-plain", "cifar10-dance-w32", "plain images, dm-dance", "dm-plain-real-256"),
    ("dance-ipc1-haba", "cifar10-dance-w32", "IPC 1: HaBa, dm-dance", "dance-ipc1-plain"),
    ("dance-ipc1-plain", "cifar10-dance-w32", "IPC 1: plain images (2 per class), dm-dance", None),
    ("../zoo/fashion_mnist-ipc10/run", "fashion_mnist-cpu", "Fashion-MNIST: the zoo's fashion_mnist-ipc10 (HaBa, MTT)", None),
    ("dance-fmnist-haba", "fashion_mnist-dance-w32", "Fashion-MNIST: HaBa, dm-dance", "../zoo/fashion_mnist-ipc10/run"),
    ("dance-fmnist-plain", "fashion_mnist-dance-w32", "Fashion-MNIST: plain images, dm-dance", "dance-fmnist-haba"),
]
LOSS_TERMS = ("match", "calibration", "cos")


def name(run: str) -> str:
    """A run's name; a zoo entry's run (``../zoo/NAME/run``) is ``zoo NAME``."""
    return f"zoo {Path(run).parent.name}" if run.startswith("../zoo/") else run


def measured(root: Path, run: str, experts: str | None) -> dict:
    folder = root / run
    s = json.loads((folder / "summary.json").read_text())
    report = json.loads((folder / "evaluation" / "report.json").read_text())
    curve = [json.loads(line) for line in (folder / "validation.jsonl").read_text().splitlines()]
    losses = folder / "losses.jsonl"
    last = json.loads(losses.read_text().splitlines()[-1]) if losses.exists() else {}
    expert_h = 0.0
    if experts:
        cost = json.loads((root / "experts" / f"{experts}.json").read_text())
        expert_h = cost["seconds"] * cost["threads"] / 3600
    distill_h = s["budget"]["distill_seconds"] * s["budget"].get("threads", 1) / 3600
    return {"summary": s, "val": report["val_accuracy"]["runs"][0], "test": report["test_accuracy"]["runs"][0],
            "curve": curve, "last": last, "expert_h": expert_h, "distill_h": distill_h, "hours": expert_h + distill_h}  # fmt: skip


def main(folder: str) -> None:
    root = Path(folder)
    print("| run | data, objective | stored values | iterations: s/it (validation included), CPU-hours | experts, CPU-hours | "
          "validation % from iteration 0, every 200 | selected iteration (validation %) | validation %, final (1 x 500) | "
          "test %, the same | loss terms, mean of the last stretch | CPU-hours in all | against (equal storage): validation (test) %, difference |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    done = {}
    for run, experts, label, against in RUNS:
        if not (root / run / "summary.json").exists():
            continue
        m = done[run] = measured(root, run, experts)
        s, b = m["summary"], m["summary"]["budget"]
        curve = " / ".join(f"{100 * r['val_accuracy']:.1f}" for r in m["curve"])
        terms = ", ".join(f"{k} {m['last'][k]:.3g}" for k in LOSS_TERMS if k in m["last"]) or "-"
        versus = "-"
        if against and (root / against / "summary.json").exists():
            a = done.get(against) or measured(root, against, next(e for r, e, *_ in RUNS if r == against))
            gain, extra = 100 * (m["val"] - a["val"]), m["hours"] - a["hours"]
            rate = f", {gain / extra:+.1f} per extra CPU-hour" if extra > 0.01 else f", for {extra:+.2f} CPU-hours"
            versus = f"`{name(against)}`: {100 * a['val']:.2f} ({100 * a['test']:.2f}): {gain:+.2f}{rate}"
        experts_cell = f"{m['expert_h']:.2f}" if experts else "-"
        print(f"| `{name(run)}` | {label} | {b['stored_values']:,} | {b['iterations']}: {b['distill_seconds'] / b['iterations']:.1f} s/it, "
              f"{m['distill_h']:.2f} | {experts_cell} | {curve} | {s['selected_iteration']} "
              f"({100 * s['metrics']['val_accuracy']:.2f}) | {100 * m['val']:.2f} | {100 * m['test']:.2f} | {terms} | "
              f"{m['hours']:.2f} | {versus} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "recipes/results/study")
