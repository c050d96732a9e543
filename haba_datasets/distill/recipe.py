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
import inspect
import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from .. import fileformat
from ..fileformat import FormatError
from ..data import RealData, load_real
from ..evaluate import Protocol, as_dataset, evaluate, real_eval_sets
from ..factorized import FactorizedDataset
from ..hub import HubError
from ..nets import list_nets
from ..preprocessing import list_preprocessings
from ..registry import Registry
from . import distributed
from .experts import KEEPS, Experts, train_experts
from .loop import Schedule, distill
from .objectives import (DISTANCES, DistributionMatching, InterpolatedDistributionMatching, Objective,
                         TrainedDistributionMatching, TrajectoryMatching)
from .parameterizations import HaBa, Parameterization, PlainImages

__all__ = [
    "OBJECTIVES", "PARAMETERIZATIONS", "create_objective", "create_parameterization", "items_per_class",
    "list_objectives", "list_parameterizations", "load_recipe", "needs_experts", "parse_overrides", "recipe_experts",
    "register_objective", "register_parameterization", "run_recipe",
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
        try:
            overrides[key] = _safe_yaml(value)
        except (yaml.YAMLError, ValueError, RecursionError) as err:
            raise ValueError(f"--set {key}: the value is not YAML ({' '.join(str(err).split())}); quote a string") from None
    return overrides


def load_recipe(path: str | Path, *, profile: str | None = None, overrides: dict | None = None) -> dict:
    """Read a recipe, apply ``profile`` and ``overrides`` (dotted keys), and check its structure."""
    path = Path(path)
    recipe = _read_yaml(path)
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe is a mapping of settings")
    profiles = recipe.pop("profiles", None) or {}
    _check_profiles(path, profiles)
    if profile is not None:
        recipe = _merge(recipe, _profile(path, profiles, profile))
    for dotted, value in (overrides or {}).items():
        recipe = _merge(recipe, _nest(dotted.split("."), value))
    recipe["profile"] = profile
    unknown, missing = set(recipe) - _KEYS - {"profile"}, _REQUIRED - set(recipe)
    if unknown or missing:
        parts = [f"unknown keys {sorted(map(str, unknown))}" if unknown else "", f"missing keys {sorted(missing)}" if missing else ""]
        raise ValueError(f"{path}: {', '.join(p for p in parts if p)} (a recipe has {', '.join(sorted(_KEYS))})")
    for section, registry in (("parameterization", PARAMETERIZATIONS), ("objective", OBJECTIVES)):
        kind = recipe[section].get("kind") if isinstance(recipe[section], dict) else None
        if kind not in registry:
            raise ValueError(f"{path}: {section}.kind must be one of {registry.names()}, got {kind!r}")
    reference = recipe.get("reference", {})
    if not (isinstance(reference, dict) and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in reference.values())):
        raise ValueError(f"{path}: 'reference' maps method names to published test accuracies in [0, 1]")
    if recipe["objective"]["kind"] in _WITH_EXPERTS and not isinstance(recipe.get("experts"), dict):
        raise ValueError(f"{path}: a {recipe['objective']['kind']} recipe needs an 'experts' section (count, epochs)")
    _validate(recipe, path)
    return recipe


#: Largest recipe file read (a recipe is a few kilobytes).
MAX_RECIPE_BYTES = 1 << 20
#: Counts a recipe may set anywhere (name: smallest, largest), bounded before anything is allocated.
_COUNTS = {
    "ipc": (1, 100_000), "bases_per_class": (1, 100_000), "hallucinators": (2, fileformat.MAX_HALLUCINATORS),
    "basis_factor": (1, 64), "width": (1, 4096), "depth": (1, 64), "batch_real": (1, 65_536), "batch_syn": (1, 1_000_000),
    "batch_size": (1, 65_536), "syn_steps": (1, 10_000), "expert_epochs": (1, 100_000), "max_start_epoch": (1, 100_000),
    "max_epoch": (0, 100_000), "num_freqs": (1, 100_000), "count": (1, 10_000), "epochs": (1, 100_000),
    "iterations": (0, 10_000_000), "eval_every": (0, 10_000_000), "eval_epochs": (1, 100_000),
    "grid_every": (0, 10_000_000), "checkpoint_every": (0, 10_000_000), "runs": (0, 1000), "seed": (0, 2**63 - 1),
}  # fmt: skip
#: Settings that take one of a few values (switches: true or false).
_CHOICES = {"distance": DISTANCES, "keep": KEEPS, **{k: (True, False) for k in ("interpolate", "compile", "lr_steps",
                                                                           "dsa", "checkpoint")}}  # fmt: skip
#: Each known kind's class: its keyword arguments are the options a recipe may give it (builders add some).
_OPTIONS = {("parameterization", "plain"): (PlainImages, ()), ("parameterization", "haba"): (HaBa, ("bases_per_class", "basis_factor")),
            ("objective", "mtt"): (TrajectoryMatching, ()), ("objective", "dm"): (DistributionMatching, ()),
            ("objective", "dm-trained"): (TrainedDistributionMatching, ()),
            ("objective", "dm-dance"): (InterpolatedDistributionMatching, ())}  # fmt: skip
#: What a builder or train_experts passes itself (not a recipe's to give).
_GIVEN = {"self", "images", "labels", "bases", "experts", "num_classes", "image_shape", "device", "augment", "out_dir",
          "dataset", "data_root", "preprocessing", "seed", "progress"}  # fmt: skip


#: Most values a recipe (or a --set value) may expand to, aliases (``*name``) included.
MAX_RECIPE_NODES = 100_000


def _safe_yaml(text: str):
    """``yaml.safe_load`` that refuses documents whose aliases expand past :data:`MAX_RECIPE_NODES`
    values (a few bytes of aliases can stand for gigabytes) or refer to themselves."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        sizes: dict[int, int] = {}

        def size(n, open_: frozenset = frozenset()) -> int:
            if id(n) in open_:
                raise ValueError("an alias refers to itself")
            if id(n) not in sizes:
                children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else (
                    n.value if isinstance(n, yaml.SequenceNode) else [])  # fmt: skip
                sizes[id(n)] = 1 + sum(size(c, open_ | {id(n)}) for c in children)
                if sizes[id(n)] > MAX_RECIPE_NODES:
                    raise ValueError(f"expands to more than {MAX_RECIPE_NODES:,} values (aliases?)")
            return sizes[id(n)]

        if node is not None:
            size(node)
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


def _read_yaml(path: Path, what: str = "recipe"):
    """The YAML document in ``path`` (size-limited, UTF-8, bounded aliases); every problem names the file."""
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise ValueError(f"{path.stat().st_size:,} bytes, more than the {MAX_RECIPE_BYTES:,} a {what} may have")
        return _safe_yaml(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); save the {what} as UTF-8") from None
    except (OSError, ValueError, yaml.YAMLError, RecursionError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else " ".join(str(err).split()) or "nested too deeply"
        raise ValueError(f"{path}: cannot read the {what} ({reason})") from None


def _check_profiles(path: Path, profiles) -> None:
    if not (isinstance(profiles, dict) and all(isinstance(p, dict) for p in profiles.values())):
        raise ValueError(f"{path}: 'profiles' maps profile names to mappings of settings")
    for name, overrides in profiles.items():
        if not isinstance(overrides.get("extends", ""), str):
            raise ValueError(f"{path}: profiles.{name}.extends names another profile, got {overrides['extends']!r}")


def _validate(recipe: dict, path: Path) -> None:
    """Types, ranges and bounds of a merged recipe's values; raise ``ValueError`` naming the file and setting."""

    def fail(where: str, what: str, value) -> None:
        raise ValueError(f"{path}: {where} must be {what}, got {value!r} (fix the recipe, or --set {where}=...)")

    for key in ("name", "dataset"):
        if not (isinstance(recipe[key], str) and recipe[key].strip()):
            fail(key, "a non-empty string", recipe[key])
    if "/" in recipe["name"] or "\\" in recipe["name"] or recipe["name"] in (".", ".."):
        fail("name", "a name without path separators (it names the run folder)", recipe["name"])
    if recipe["preprocessing"] not in list_preprocessings():
        fail("preprocessing", f"one of {list_preprocessings()}", recipe["preprocessing"])
    for section in ("parameterization", "objective", "schedule", "evaluation", "experts"):
        if section in recipe and not isinstance(recipe[section], dict):
            fail(section, "a mapping", recipe[section])
    _check_values(recipe, "", fail)
    for section in ("parameterization", "objective"):
        for kind, options in recipe[section].items():
            if kind != "kind" and options is not None and not isinstance(options, dict):
                fail(f"{section}.{kind}", "a mapping of options", options)
        kind = recipe[section]["kind"]
        if (section, kind) in _OPTIONS:
            cls, extra = _OPTIONS[(section, kind)]
            _check_names(path, f"{section}.{kind}", recipe[section].get(kind) or {}, cls, extra)
    if "experts" in recipe:
        _check_names(path, "experts", recipe["experts"], train_experts, ("count", "epochs"))
        if recipe["objective"]["kind"] in _WITH_EXPERTS:
            for key in ("count", "epochs"):
                if key not in recipe["experts"]:
                    fail(f"experts.{key}", "set (experts to train and their epochs)", None)
    schedule, evaluation = recipe["schedule"], recipe["evaluation"]
    _check_names(path, "schedule", schedule, Schedule, ())
    if "iterations" not in schedule:
        fail("schedule.iterations", "set (distillation iterations)", None)
    if schedule.get("eval_model", "ConvNet") not in list_nets():
        fail("schedule.eval_model", f"one of {list_nets()}", schedule["eval_model"])
    if unknown := set(evaluation) - {"runs", "epochs"}:
        raise ValueError(f"{path}: evaluation takes runs and epochs, not {sorted(unknown)}")
    if "runs" not in evaluation:
        fail("evaluation.runs", "set (0: no final evaluation)", None)
    if evaluation["runs"] and "epochs" not in evaluation:
        fail("evaluation.epochs", "set when evaluation.runs is above 0", None)


def _check_values(section: dict, prefix: str, fail) -> None:
    """Numbers finite; learning rates positive (a factor's, ``lr_bases`` or ``lr_hallucinators``, may be 0: frozen);
    momenta and weight decays in [0, 1); counts whole and bounded."""
    for key, value in section.items():
        where = f"{prefix}{key}"
        if isinstance(value, dict):
            _check_values(value, f"{where}.", fail)
        elif key in _COUNTS and not (value is None and key == "batch_syn"):  # batch_syn None: every image
            low, high = _COUNTS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                fail(where, f"a whole number from {low:,} to {high:,}", value)
        elif key in _CHOICES:
            if not any(value is choice or (type(value) is type(choice) and value == choice) for choice in _CHOICES[key]):
                fail(where, f"one of {list(_CHOICES[key])}", value)
        elif isinstance(value, float) and not math.isfinite(value):
            fail(where, "a finite number", value)
        elif key in ("momentum", "weight_decay", "lr_momentum"):
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value < 1):
                fail(where, "a number in [0, 1)", value)
        elif isinstance(key, str) and (key == "lr" or key.startswith("lr_")) and not isinstance(value, bool):
            frozen = key in ("lr_bases", "lr_hallucinators") and value == 0
            if not (isinstance(value, (int, float)) and (0 < value <= 1e6 or frozen)):
                fail(where, "a positive number", value)


def _check_names(path: Path, where: str, options: dict, target, extra: tuple[str, ...]) -> None:
    """Refuse options ``target`` (a class or function) does not take, before a run builds it."""
    parameters = inspect.signature(target).parameters
    known = (set(parameters) - _GIVEN) | set(extra)
    if unknown := sorted(str(k) for k in set(options) - known):
        raise ValueError(f"{path}: {where} has unknown options {unknown}; it takes {', '.join(sorted(known))}")


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
    """Build a recipe component; a wrong option (unknown, or a value it refuses) becomes a ValueError
    naming the section."""
    try:
        return factory(*args, **kwargs)
    except FormatError:  # a damaged file names itself
        raise
    except (TypeError, ValueError) as err:
        raise ValueError(f"recipe section {what!r}: {err}") from None


#: Parameterisation kinds of a recipe: kind -> builder (options, real data, init images, labels).
PARAMETERIZATIONS = Registry("parameterization kind")
#: Decorator registering a parameterisation builder under a kind (``parameterization.kind`` of a recipe).
register_parameterization = PARAMETERIZATIONS.register
#: Objective kinds of a recipe: kind -> builder (options, real data, DM's training images, experts, device).
OBJECTIVES = Registry("objective kind")
#: Decorator registering an objective builder under a kind (``objective.kind`` of a recipe).
register_objective = OBJECTIVES.register


def list_parameterizations() -> list[str]:
    """Names of the registered parameterisation kinds."""
    return PARAMETERIZATIONS.names()


def list_objectives() -> list[str]:
    """Names of the registered objective kinds."""
    return OBJECTIVES.names()


def create_parameterization(recipe: dict, real: RealData, init: torch.Tensor, labels: torch.Tensor, device) -> Parameterization:
    """The recipe's parameterisation (``parameterization.kind``, options under ``parameterization.<kind>``),
    initialised from real images ``init`` (model space)."""
    section = recipe["parameterization"]
    options = dict(section.get(section["kind"]) or {})
    return PARAMETERIZATIONS[section["kind"]](options, real, init.to(device), labels.to(device))


@register_parameterization("plain")
def _plain(options: dict, real: RealData, init: torch.Tensor, labels: torch.Tensor) -> PlainImages:
    return _call("parameterization.plain", PlainImages, init, labels, **options)


@register_parameterization("haba")
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


def create_objective(recipe: dict, real: RealData, train: torch.Tensor | None, experts: Experts | None, device) -> Objective:
    """The recipe's objective (``objective.kind``, with the options under ``objective.<kind>``)."""
    kind = recipe["objective"]["kind"]
    return OBJECTIVES[kind](dict(recipe["objective"].get(kind) or {}), real, train, experts, device)


@register_objective("mtt")
def _mtt(options: dict, real: RealData, train, experts: Experts, device) -> TrajectoryMatching:
    return _call("objective.mtt", TrajectoryMatching, experts, device=device, **options)


@register_objective("dm-trained")
def _dm_trained(options: dict, real: RealData, train: torch.Tensor, experts: Experts, device) -> TrainedDistributionMatching:
    return _call("objective.dm-trained", TrainedDistributionMatching, train, real.train.labels, experts,
                 num_classes=len(real.classes), device=device, **options)  # fmt: skip


@register_objective("dm-dance")
def _dm_dance(options: dict, real: RealData, train: torch.Tensor, experts: Experts, device) -> InterpolatedDistributionMatching:
    return _call("objective.dm-dance", InterpolatedDistributionMatching, train, real.train.labels, experts,
                 num_classes=len(real.classes), device=device, **options)  # fmt: skip


@register_objective("dm")
def _dm(options: dict, real: RealData, train: torch.Tensor, experts, device) -> DistributionMatching:
    return _call("objective.dm", DistributionMatching, train, real.train.labels, num_classes=len(real.classes),
                 device=device, **options)  # fmt: skip


def needs_experts(recipe: dict) -> bool:
    """Whether the recipe's objective reads experts (mtt, dm-trained, dm-dance)."""
    return recipe["objective"]["kind"] in _WITH_EXPERTS


def recipe_experts(recipe: dict, folder: str | Path, *, data_root: str | Path | None = None, device=None,
                   progress: bool = True) -> Experts:  # fmt: skip
    """The experts ``recipe`` asks for in ``folder``: reused, resumed or trained there."""
    options = dict(recipe["experts"])
    train_experts(folder, dataset=recipe["dataset"], data_root=data_root, experts=options.pop("count"),
                  epochs=options.pop("epochs"), preprocessing=recipe["preprocessing"], seed=recipe["seed"], device=device,
                  progress=progress, **options)  # fmt: skip
    return Experts.open(folder)


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
    if needs_experts(recipe):
        experts = recipe_experts(recipe, experts_dir or out / "experts", data_root=data_root, device=device, progress=progress)
        preprocessing = experts.preprocessing
    else:
        preprocessing = real.fit_preprocessing(recipe["preprocessing"])
    init_split = real.subset(items_per_class(recipe), seed=seed)
    init = as_dataset(init_split, preprocessing).tensors[0]
    torch.manual_seed(seed)  # hallucinator and adversary initialisation
    synthetic = create_parameterization(recipe, real, init, init_split.labels, device)
    train = None if recipe["objective"]["kind"] == "mtt" else as_dataset(real.train, preprocessing).tensors[0]  # DM's
    objective = create_objective(recipe, real, train, experts, device)
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
