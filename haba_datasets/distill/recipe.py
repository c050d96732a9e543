"""Recipes: one YAML file per published dataset, run end to end.

real data -> (MTT) expert trajectories -> distillation (validation-selected) -> evaluation on the
real test split with the literature's protocol -> dataset folder with provenance (-> the Hub).

A recipe holds the paper-scale settings; ``profiles`` holds named overrides (``cpu``: what fits a
small machine), merged key by key; a profile may ``extends: <profile>`` another, so the zoo's
settings are written as what they change; ``overrides`` (``{"parameterization.kind": "plain"}``) are
applied last. ``parameterization`` and ``objective`` name their ``kind`` and keep the options of
every kind under its name, so one switch changes the method. See ``recipes/README.md``.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from .. import fileformat
from ..data import RealData, load_real
from ..evaluate import Protocol, as_dataset, evaluate, real_eval_sets
from ..factorized import FactorizedDataset
from ..hub import HubError
from ..registry import Registry
from . import distributed
from .experts import Experts, train_experts
from .loop import Schedule, distill
from .objectives import (DistributionMatching, InterpolatedDistributionMatching, Objective, TrainedDistributionMatching,
                         TrajectoryMatching)
from .parameterizations import HaBa, Parameterization, PlainImages

__all__ = [
    "OBJECTIVES", "PARAMETERIZATIONS", "build_objective", "build_synthetic", "items_per_class", "load_recipe",
    "parse_overrides", "run_recipe",
]

logger = logging.getLogger(__name__)

_KEYS = {"name", "dataset", "ipc", "preprocessing", "seed", "parameterization", "objective", "experts", "schedule",
         "evaluation", "reference", "profiles"}  # fmt: skip
_REQUIRED = _KEYS - {"experts", "reference", "profiles"}
_WITH_EXPERTS = ("mtt", "dm-trained", "dm-dance")  # objectives that read experts


def parse_overrides(items: list[str]) -> dict:
    """``["objective.kind=dm", ...]`` (the CLI's ``--set``) -> ``{"objective.kind": "dm", ...}``, values read as YAML."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def load_recipe(path: str | Path, *, profile: str | None = None, overrides: dict | None = None) -> dict:
    """Read a recipe, apply ``profile`` and ``overrides`` (dotted keys), and check its structure."""
    path = Path(path)
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the recipe ({err})") from None
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe is a mapping of settings")
    profiles = recipe.pop("profiles", None) or {}
    if profile is not None:
        recipe = _merge(recipe, _profile(path, profiles, profile))
    for dotted, value in (overrides or {}).items():
        recipe = _merge(recipe, _nest(dotted.split("."), value))
    recipe["profile"] = profile
    unknown, missing = set(recipe) - _KEYS - {"profile"}, _REQUIRED - set(recipe)
    if unknown or missing:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    for section, registry in (("parameterization", PARAMETERIZATIONS), ("objective", OBJECTIVES)):
        kind = recipe[section].get("kind") if isinstance(recipe[section], dict) else None
        if kind not in registry:
            raise ValueError(f"{path}: {section}.kind must be one of {registry.names()}, got {kind!r}")
    reference = recipe.get("reference", {})
    if not (isinstance(reference, dict) and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in reference.values())):
        raise ValueError(f"{path}: 'reference' maps method names to published test accuracies in [0, 1]")
    if recipe["objective"]["kind"] in _WITH_EXPERTS and not isinstance(recipe.get("experts"), dict):
        raise ValueError(f"{path}: a {recipe['objective']['kind']} recipe needs an 'experts' section (count, epochs)")
    return recipe


def _profile(path: Path, profiles: dict, name: str, seen: tuple[str, ...] = ()) -> dict:
    """Profile ``name``'s overrides, on top of those of the profile it ``extends`` (if any)."""
    if name not in profiles:
        raise ValueError(f"{path}: no profile {name!r} (has: {', '.join(profiles) or 'none'})")
    if name in seen:
        raise ValueError(f"{path}: profiles extend each other in a cycle: {' -> '.join((*seen, name))}")
    overrides = dict(profiles[name])
    parent = overrides.pop("extends", None)
    return _merge(_profile(path, profiles, parent, (*seen, name)), overrides) if parent else overrides


def _merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _nest(keys: list[str], value) -> dict:
    return {keys[0]: _nest(keys[1:], value) if len(keys) > 1 else value}


def _call(what: str, factory, *args, **kwargs):
    """Build a recipe component; a wrong option becomes a ValueError naming the section."""
    try:
        return factory(*args, **kwargs)
    except TypeError as err:
        raise ValueError(f"recipe section {what!r}: {err}") from None


#: Parameterisation kinds of a recipe: kind -> builder (options, real data, init images, labels, device).
PARAMETERIZATIONS = Registry("parameterization kind")
#: Objective kinds of a recipe: kind -> builder (options, real data, DM's training images, experts, device).
OBJECTIVES = Registry("objective kind")


def build_synthetic(recipe: dict, real: RealData, init: torch.Tensor, labels: torch.Tensor, device) -> Parameterization:
    """The recipe's parameterisation (``parameterization.kind``, options under ``parameterization.<kind>``),
    initialised from real images ``init`` (model space)."""
    section = recipe["parameterization"]
    options = dict(section.get(section["kind"]) or {})
    return PARAMETERIZATIONS[section["kind"]](options, real, init.to(device), labels.to(device))


@PARAMETERIZATIONS.register("plain")
def _plain(options: dict, real: RealData, init: torch.Tensor, labels: torch.Tensor) -> PlainImages:
    return _call("parameterization.plain", PlainImages, init, labels, **options)


@PARAMETERIZATIONS.register("haba")
def _haba(options: dict, real: RealData, init: torch.Tensor, labels: torch.Tensor) -> HaBa:
    """``basis_factor`` (default 1) stores bases at ``1 / factor`` of the image size, initialised as
    the area-averaged ``init`` (multi-formation; needs ``haba-conv-up``)."""
    options.pop("bases_per_class", None)
    factor = options.pop("basis_factor", 1)
    image_shape = tuple(init.shape[1:])
    if not (isinstance(factor, int) and factor >= 1 and image_shape[1] % factor == 0 and image_shape[2] % factor == 0):
        raise ValueError(f"parameterization.haba.basis_factor must be a positive int dividing the image size "
                         f"{image_shape[1:]}, got {factor!r}")  # fmt: skip
    bases = F.interpolate(init, scale_factor=1 / factor, mode="area") if factor > 1 else init
    return _call("parameterization.haba", HaBa, bases, labels, num_classes=len(real.classes), image_shape=image_shape,
                 **options)  # fmt: skip


def items_per_class(recipe: dict) -> int:
    """Stored images (plain) or bases (HaBa) per class."""
    section = recipe["parameterization"]
    return recipe["ipc"] if section["kind"] == "plain" else (section.get("haba") or {}).get("bases_per_class", recipe["ipc"])


def build_objective(recipe: dict, real: RealData, train: torch.Tensor | None, experts: Experts | None, device) -> Objective:
    """The recipe's objective (``objective.kind``, with the options under ``objective.<kind>``)."""
    kind = recipe["objective"]["kind"]
    return OBJECTIVES[kind](dict(recipe["objective"].get(kind) or {}), real, train, experts, device)


@OBJECTIVES.register("mtt")
def _mtt(options: dict, real: RealData, train, experts: Experts, device) -> TrajectoryMatching:
    return _call("objective.mtt", TrajectoryMatching, experts, device=device, **options)


@OBJECTIVES.register("dm-trained")
def _dm_trained(options: dict, real: RealData, train: torch.Tensor, experts: Experts, device) -> TrainedDistributionMatching:
    return _call("objective.dm-trained", TrainedDistributionMatching, train, real.train.labels, experts,
                 num_classes=len(real.classes), device=device, **options)  # fmt: skip


@OBJECTIVES.register("dm-dance")
def _dm_dance(options: dict, real: RealData, train: torch.Tensor, experts: Experts, device) -> InterpolatedDistributionMatching:
    return _call("objective.dm-dance", InterpolatedDistributionMatching, train, real.train.labels, experts,
                 num_classes=len(real.classes), device=device, **options)  # fmt: skip


@OBJECTIVES.register("dm")
def _dm(options: dict, real: RealData, train: torch.Tensor, experts, device) -> DistributionMatching:
    return _call("objective.dm", DistributionMatching, train, real.train.labels, num_classes=len(real.classes),
                 device=device, **options)  # fmt: skip


def run_recipe(
    recipe: dict,
    out_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    experts_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    resume: bool = False,
    push: str | None = None,
    progress: bool = True,
) -> FactorizedDataset:
    """Run a recipe (see :func:`load_recipe`) into ``out_dir``; return the published dataset.

    ``out_dir`` receives the distillation run (see :mod:`.loop`), ``evaluation/`` (report.json,
    curves.png; none when ``evaluation.runs`` is 0) and ``dataset/`` (the validation-selected dataset
    with its test accuracy in the provenance and card). Experts (mtt, dm-trained, dm-dance) go to
    ``experts_dir`` (default ``out_dir/experts``) and are reused or resumed when already there.
    ``push`` publishes ``dataset/`` to that Hub repo.
    Under ``torchrun`` the processes share the experts and each iteration (``cuda:LOCAL_RANK`` on
    GPUs); process 0 evaluates and writes.
    """
    rank, _, device, started = distributed.start(device)
    try:
        return _run(recipe, Path(out_dir), rank, data_root=data_root, experts_dir=experts_dir, device=device,
                    resume=resume, push=push, progress=progress)  # fmt: skip
    finally:
        if started:
            torch.distributed.destroy_process_group()


def _run(recipe: dict, out: Path, rank: int, *, data_root, experts_dir, device, resume, push, progress) -> FactorizedDataset:
    seed = recipe["seed"]
    real = load_real(recipe["dataset"], data_root=data_root)
    experts = None
    if recipe["objective"]["kind"] in _WITH_EXPERTS:
        options = dict(recipe["experts"])
        folder = Path(experts_dir or out / "experts")
        train_experts(folder, dataset=recipe["dataset"], data_root=data_root, experts=options.pop("count"),
                      epochs=options.pop("epochs"), preprocessing=recipe["preprocessing"], seed=seed, device=device,
                      progress=progress, **options)  # fmt: skip
        experts = Experts.open(folder)
        preprocessing = experts.preprocessing
    else:
        preprocessing = real.fit_preprocessing(recipe["preprocessing"])
    init_split = real.subset(items_per_class(recipe), seed=seed)
    init = as_dataset(init_split, preprocessing).tensors[0]
    torch.manual_seed(seed)  # hallucinator and adversary initialisation
    synthetic = build_synthetic(recipe, real, init, init_split.labels, device)
    train = None if recipe["objective"]["kind"] == "mtt" else as_dataset(real.train, preprocessing).tensors[0]  # DM's
    objective = build_objective(recipe, real, train, experts, device)
    val, test = real_eval_sets(real, preprocessing)
    schedule = Schedule(seed=seed, **recipe["schedule"])
    settings = {k: recipe[k] for k in ("dataset", "ipc", "preprocessing", "parameterization", "objective")}
    best, record = distill(synthetic, objective, classes=real.classes, preprocessing=preprocessing, val=val, out_dir=out,
                           schedule=schedule, settings=settings, resume=resume, device=device, progress=progress)  # fmt: skip
    if rank != 0:  # under torchrun, process 0 evaluates, saves and publishes
        return best
    ev = recipe["evaluation"]
    metrics = {"val_accuracy": record["val_accuracy"], "model": "ConvNet"}
    if ev["runs"]:  # 0: no final evaluation (a zoo entry is measured as bundled, recipes/zoo.sh)
        protocol = Protocol(epochs=ev["epochs"], lr=best.learned_lr or 0.01)
        report = evaluate(best.to(device), test, num_classes=len(real.classes), runs=ev["runs"], protocol=protocol,
                          val=val, seed=seed, device=device, setting={"train": recipe["name"]}, progress=progress)  # fmt: skip
        report.save(out / "evaluation")
        metrics.update(test_accuracy=report.mean, test_accuracy_std=report.std, runs=ev["runs"], epochs=ev["epochs"])
        logger.info("test accuracy %s", report)
    best.provenance = {
        "name": recipe["name"],
        "dataset": recipe["dataset"],
        "recipe": {k: v for k, v in recipe.items() if k not in ("name", "reference")},
        "budget": {"iterations": schedule.iterations, "distill_seconds": round(record["seconds"], 1),
                   "device": str(device), "threads": torch.get_num_threads(), "experts": len(experts.ids) if experts else None,
                   "stored_values": best.storage.total_values},
        "selected_iteration": record["iteration"],
        "metrics": metrics,
        "reference": recipe.get("reference", {}),
    }  # fmt: skip
    best.save_pretrained(out / "dataset")
    best.save_grid(out / "dataset-grid.png")
    logger.info("wrote %s", out / "dataset")
    fileformat.write_file(out / "summary.json", (json.dumps(best.provenance, indent=2) + "\n").encode())
    if push:
        try:
            best.push_to_hub(push)
        except HubError as err:  # the run's results are saved: say how to publish them alone
            raise HubError(f"{err}\nThe distilled dataset is saved in {out / 'dataset'}; publish it without "
                           f"distilling again: haba-datasets push {out / 'dataset'} {push}") from err  # fmt: skip
    return best
