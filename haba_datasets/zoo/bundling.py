"""Put a recipe run's dataset into the zoo, then record the zoo's measurements on its card.

``haba-datasets zoo bundle NAME RUN_DIR`` (:func:`bundle`), ``zoo record NAME REPORT``
(:func:`record`) and ``zoo record-cross NAME REPORT --command ...`` (:func:`record_cross`); every
one rewrites the entry's folder, ``ZOO_DIR / NAME`` (its files and card), through ``save_pretrained``. A mismatch
between what is given and the entry is a ``ValueError`` that names the file given.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..cross_architecture import card_summary
from ..distill.recipe import load_recipe
from ..factorized import FactorizedDataset
from ..preprocessing import ZCA
from . import zoo_entry

__all__ = ["bundle", "record", "record_cross"]


def bundle(name: str, run: Path, *, runs: int, epochs: int, zca_rank: int | None = 512, normalize: bool = False) -> Path:
    """Copy ``run/dataset`` to the entry's folder (``ZOO_DIR / name``): the same factors, the ZCA (if any) truncated to
    its top ``zca_rank`` eigenvectors (kept whole when it has no more) (3072 x 3072 floats are 38 MB; see ``ZCA.truncated``), with
    ``normalize`` the hallucinators' ``normalize`` option turned on (recorded in the provenance),
    the recipe's published numbers, and the protocol (``runs`` x ``epochs``) the card will be
    measured with. The test accuracy the run measured before truncation is dropped: the card
    states only what is measured on the bundled files."""
    entry = zoo_entry(name)
    dataset = FactorizedDataset.from_pretrained(run / "dataset", device="cpu")
    if dataset.provenance.get("name") != name:
        raise ValueError(f"{run} holds {dataset.provenance.get('name')!r}, not {name!r}")
    if isinstance(dataset.preprocessing, ZCA) and zca_rank and zca_rank < dataset.preprocessing.eigenvalues.numel():
        dataset = dataset.replace(preprocessing=dataset.preprocessing.truncated(zca_rank),
                                  provenance={**dataset.provenance, "zca_rank": zca_rank})  # fmt: skip
    if normalize and not dataset.hallucinators.options().get("normalize"):
        dataset = dataset.replace(hallucinators=dataset.hallucinators.with_options(normalize=True),
                                  provenance={**dataset.provenance, "normalize_added_at_bundle": True})  # fmt: skip
    metrics = dataset.provenance["metrics"]
    dataset.provenance["metrics"] = {"val_accuracy": metrics["val_accuracy"], "runs": runs, "epochs": epochs,
                                     "model": metrics["model"]}  # fmt: skip
    dataset.provenance["reference"] = load_recipe(entry.recipe_path).get("reference", {})
    return dataset.save_pretrained(zoo_entry(name).folder)


def record(name: str, report_path: Path) -> Path:
    """Write an evaluation report's test accuracy (mean +- std) into ``name``'s card, after checking
    that ``haba-datasets evaluate NAME`` wrote it with the protocol the card asks for."""
    dataset = FactorizedDataset.from_pretrained(zoo_entry(name).folder, device="cpu")
    report = json.loads(report_path.read_text())
    metrics = dataset.provenance["metrics"]
    accuracy = report["test_accuracy"]
    measured = (len(accuracy["runs"]), report["protocol"]["epochs"], report["model"])
    if not report["train"].startswith(f"{name} ") or measured != (metrics["runs"], metrics["epochs"], metrics["model"]):
        raise ValueError(f"{report_path} measured {report['train']!r} with {measured}, "
                         f"the card asks for {name} with {(metrics['runs'], metrics['epochs'], metrics['model'])}")  # fmt: skip
    metrics.update(test_accuracy=accuracy["mean"], test_accuracy_std=accuracy["std"], torch_threads=report["environment"]["threads"],
                   command=f"haba-datasets evaluate {name} --data-root ../shared/data")  # fmt: skip
    return dataset.save_pretrained(zoo_entry(name).folder)


def record_cross(name: str, report_path: Path, command: str) -> Path:
    """Put a cross-architecture report of ``name`` (``haba-datasets evaluate NAME --models ...``,
    written by ``command``) on its card."""
    dataset = FactorizedDataset.from_pretrained(zoo_entry(name).folder, device="cpu")
    report = json.loads(report_path.read_text())
    if not report["train"].startswith(f"{name} ") or f"evaluate {name} " not in command:
        raise ValueError(f"{report_path} measured {report['train']!r}, not {name}, or the command is not its")
    dataset.provenance["cross_architecture"] = card_summary(report, command)
    return dataset.save_pretrained(zoo_entry(name).folder)
