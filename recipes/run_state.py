"""Keep what a distillation run needs to continue, small enough to commit, and put it back.

    python recipes/run_state.py keep RUN_DIR STATE_DIR
    python recipes/run_state.py restore STATE_DIR RUN_DIR --experts-dir EXPERTS_DIR    (MTT)
    python recipes/run_state.py restore STATE_DIR RUN_DIR --data-root DATA_ROOT        (DM: no experts)

A run folder holds its checkpoint (about 1 MB at IPC 1), its log, and ``best/``, the dataset
selected so far, whose ZCA (38 MB for CIFAR-10) is the experts' own (MTT) or fitted on the real
training split (DM). ``keep`` copies the checkpoint and the log and stores ``best/`` without its
preprocessing; ``restore`` writes them back into a new run folder, ``best/`` with the preprocessing
of the experts in EXPERTS_DIR, or fitted again as the run fitted it (the dataset and preprocessing
its checkpoint records), so that ``haba-datasets distill ... --resume`` continues the run on a
machine that has only the committed state (experts and fit are redone there, deterministically on
the same CPU model and torch build: see docs/what-we-learned.md).
``recipes/study.sh`` calls both: ``RUN:keep`` keeps, and a run (or the run it continues) that is
missing from ``runs/study`` is restored from ``recipes/results/study/RUN/state`` when that exists.
"""

import argparse
import json
import shutil
from pathlib import Path

from safetensors import safe_open

from haba_datasets import FactorizedDataset
from haba_datasets.data import load_real
from haba_datasets.distill.experts import Experts
from haba_datasets.distill.loop import BEST, CHECKPOINT, LOG
from haba_datasets.preprocessing import Preprocessing


def _copy(source: Path, out: Path, dataset: FactorizedDataset, *, replace: bool) -> None:
    """Write the checkpoint, the log and ``dataset`` as ``best/`` into ``out``, all or nothing."""
    if out.exists() and not replace:
        raise SystemExit(f"error: {out} exists; remove it first")
    partial, old = out.with_name(out.name + ".partial"), out.with_name(out.name + ".old")
    for folder in (partial, old):
        shutil.rmtree(folder, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in (CHECKPOINT, LOG):
        shutil.copy2(source / name, partial / name)
    dataset.save_pretrained(partial / BEST)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def keep(run: Path, state: Path) -> None:
    """Copy ``run``'s checkpoint, log and selected dataset (without its preprocessing) into ``state``."""
    best = FactorizedDataset.from_pretrained(run / BEST, device="cpu", pairing="random")
    _copy(run, state, best.replace(preprocessing=None), replace=True)


def refit(state: Path, data_root: Path | None) -> Preprocessing:
    """The preprocessing a run without experts fitted: its checkpoint's dataset and kind, fitted again."""
    with safe_open(state / CHECKPOINT, framework="pt") as f:
        settings = json.loads(f.metadata()["state"])["settings"]
    if not {"dataset", "preprocessing"} <= set(settings):
        raise SystemExit(f"error: {state / CHECKPOINT} does not record its dataset and preprocessing")
    return load_real(settings["dataset"], data_root=data_root).fit_preprocessing(settings["preprocessing"])


def restore(state: Path, run: Path, preprocessing: Preprocessing) -> None:
    """Write ``state`` into the new run folder ``run``, the dataset under ``preprocessing``."""
    best = FactorizedDataset.from_pretrained(state / BEST, device="cpu", pairing="random")
    _copy(state, run, best.replace(preprocessing=preprocessing), replace=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("keep", help="copy a run's resumable state into STATE_DIR")
    p.add_argument("run", type=Path)
    p.add_argument("state", type=Path)
    p = commands.add_parser("restore", help="write a kept state into a new run folder")
    p.add_argument("state", type=Path)
    p.add_argument("run", type=Path)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--experts-dir", type=Path, help="MTT: the preprocessing of these experts")
    source.add_argument("--data-root", type=Path, help="DM: the preprocessing fitted again on this real data")
    args = parser.parse_args()
    if args.command == "keep":
        keep(args.run, args.state)
    elif args.experts_dir:
        restore(args.state, args.run, Experts.open(args.experts_dir).preprocessing)
    else:
        restore(args.state, args.run, refit(args.state, args.data_root))


if __name__ == "__main__":
    main()
