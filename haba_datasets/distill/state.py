"""Keep what a distillation run needs to continue, small enough to commit, and put it back.

A run folder holds its checkpoint (about 1 MB at IPC 1), its log, and ``best/``, the dataset
selected so far, whose ZCA (38 MB for CIFAR-10) is the experts' own (MTT) or fitted on the real
training split (DM). :func:`keep_state` copies the checkpoint and the log and stores ``best/``
without its preprocessing; :func:`restore_state` writes them back into a new run folder, ``best/``
under the experts' preprocessing or the one :func:`refit_preprocessing` fits again as the run
fitted it, so that ``haba-datasets distill ... --resume`` continues the run on a machine that has
only the kept state (experts and fit are redone there, deterministically on the same CPU model
and torch build). The commands: ``haba-datasets keep-state`` and ``restore-state``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors import safe_open

from ..data import load_real
from ..factorized import FactorizedDataset
from ..preprocessing import Preprocessing
from .loop import BEST, CHECKPOINT, LOG

__all__ = ["keep_state", "refit_preprocessing", "restore_state"]


def _copy(source: Path, out: Path, dataset: FactorizedDataset, *, replace: bool) -> None:
    """Write the checkpoint, the log and ``dataset`` as ``best/`` into ``out``, all or nothing."""
    if out.exists() and not replace:
        raise ValueError(f"{out} exists; remove it first or name a new run folder")
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


def keep_state(run: Path, state: Path) -> None:
    """Copy ``run``'s checkpoint, log and selected dataset (without its preprocessing) into ``state``,
    replacing an older state there."""
    best = FactorizedDataset.from_pretrained(run / BEST, device="cpu", pairing="random")
    _copy(run, state, best.replace(preprocessing=None), replace=True)


def refit_preprocessing(state: Path, data_root: Path | None) -> Preprocessing:
    """The preprocessing a run without experts fitted: its checkpoint's dataset and kind, fitted again."""
    with safe_open(state / CHECKPOINT, framework="pt") as f:
        settings = json.loads(f.metadata()["state"])["settings"]
    if not {"dataset", "preprocessing"} <= set(settings):
        raise ValueError(f"{state / CHECKPOINT} does not record its dataset and preprocessing")
    return load_real(settings["dataset"], data_root=data_root).fit_preprocessing(settings["preprocessing"])


def restore_state(state: Path, run: Path, preprocessing: Preprocessing) -> None:
    """Write ``state`` into the new run folder ``run``, the dataset under ``preprocessing``."""
    best = FactorizedDataset.from_pretrained(state / BEST, device="cpu", pairing="random")
    _copy(state, run, best.replace(preprocessing=preprocessing), replace=False)
