"""The zoo: the distilled datasets this project ships, each made by one recipe profile.

Every entry is a saved factorized dataset in ``ZOO_DIR / NAME`` (shipped inside the package), the
Hub dataset repo ``haba-datasets/NAME``, and ``recipes/NAME.yaml`` run with its ``zoo`` profile.
What an entry measured (its card's numbers) is read from its ``config.json``, never retyped here.

Example::

    entry = zoo_entry("cifar10-ipc10")
    entry.metrics["test_accuracy"], entry.protocol  # as its card records them
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..registry import Registry

__all__ = ["PROFILE", "ZOO", "ZOO_DIR", "ZooEntry", "list_zoo", "zoo_entry", "zoo_name"]

#: Copies of the zoo datasets shipped inside the package (``ZOO_DIR / name``): what a zoo name loads.
ZOO_DIR = Path(__file__).parent
#: The recipe profile that made every entry (``recipes/NAME.yaml --profile zoo``).
PROFILE = "zoo"
#: Where a checkout keeps the recipes, and what ``bash recipes/zoo.sh`` writes and keeps.
_REPOSITORY = ZOO_DIR.parents[1]
#: Each entry's MTT experts (``runs/experts/...``, trained by the study; None: DM needs none).
_EXPERTS = {
    "cifar10-ipc1": "runs/experts/cifar10-ipc10-cpu",
    "cifar10-ipc10": "runs/experts/cifar10-w64",  # experts and student of width 64
    "cifar10-ipc50": None,  # HaBa on DM
    "fashion_mnist-ipc1": "runs/experts/fashion_mnist-cpu",
    "fashion_mnist-ipc10": "runs/experts/fashion_mnist-cpu",
}
#: Short zoo names -> the project's Hub dataset repos.
ZOO = Registry("zoo dataset", {name: f"haba-datasets/{name}" for name in _EXPERTS})


@dataclass(frozen=True)
class ZooEntry:
    """One zoo entry: its name, where its files are, and what made it (paths relative to a checkout)."""

    name: str
    repo_id: str
    folder: Path  # the bundled copy
    recipe: str  # the recipe YAML, relative to the repository root
    profile: str  # the recipe's profile that made it
    experts: str | None  # the experts folder its distillation read (None: DM)
    run: str  # the distillation's run folder
    results: str  # what ``recipes/zoo.sh`` keeps of its measurement and run

    @property
    def config(self) -> dict:
        """The bundled ``config.json`` (the card is written from it)."""
        return json.loads((self.folder / "config.json").read_text())

    @property
    def provenance(self) -> dict:
        return self.config["provenance"]

    @property
    def metrics(self) -> dict:
        """What the card records: test accuracy, its std, the protocol and the command that measured it."""
        return self.provenance["metrics"]

    @property
    def protocol(self) -> tuple[int, int]:
        """(runs, epochs) the card's test accuracy was measured with."""
        return self.metrics["runs"], self.metrics["epochs"]

    @property
    def normalize(self) -> bool:
        """Whether bundling turned the hallucinators' ``normalize`` option on."""
        return bool(self.provenance.get("normalize_added_at_bundle"))

    @property
    def recipe_path(self) -> Path:
        """The recipe YAML in this checkout (absent from an installed package)."""
        return _REPOSITORY / self.recipe


def list_zoo() -> list[str]:
    """The zoo names, sorted."""
    return ZOO.names()


def zoo_entry(name: str) -> ZooEntry:
    """The zoo entry ``name`` (:class:`~haba_datasets.registry.UnknownNameError` if there is none)."""
    return ZooEntry(name, ZOO[name], ZOO_DIR / name, f"recipes/{name}.yaml", PROFILE, _EXPERTS[name], f"runs/zoo/{name}",
                    f"recipes/results/zoo/{name}")  # fmt: skip


def zoo_name(provenance: dict) -> str | None:
    """The zoo name a dataset is published under, from its provenance (None: not a zoo entry)."""
    name = provenance.get("name")
    return name if isinstance(name, str) and name in ZOO else None
