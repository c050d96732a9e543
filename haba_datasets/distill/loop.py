"""The distillation loop: steps, logs, pictures, validation-based selection, checkpoints and resume.

Output folder::

    log.jsonl                one JSON line per iteration (loss terms; val_accuracy when measured)
    progress.png             loss and validation accuracy against the iteration
    grids/iter_NNNNNN.png    the synthetic data every ``grid_every`` iterations
    best/                    the best dataset so far on the VALIDATION split (format v1)
    checkpoint.safetensors   everything needed to continue bit-identically (tensors + JSON metadata)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch.utils.data import Dataset

from .. import fileformat
from ..augment import DSA
from ..evaluate import Protocol, train_and_test
from ..factorized import FactorizedDataset
from ..preprocessing import Preprocessing
from ..progress import progress_bar
from ..viz import new_figure, save_png
from . import distributed
from .objectives import Objective
from .parameterizations import Parameterization

__all__ = ["Schedule", "distill", "distill_step", "plot_progress"]

CHECKPOINT = "checkpoint.safetensors"
LOG = "log.jsonl"
BEST = "best"


@dataclass(frozen=True)
class Schedule:
    """How long to distil and how often to measure, draw and checkpoint (0 = only at the end).

    Validation trains ``eval_model`` for ``eval_epochs`` (the evaluation protocol, shortened) on
    the current synthetic data and tests it on the validation split carved from the real training
    set; the best iteration (the initialisation, iteration 0, included) is kept in ``best/``.
    """

    iterations: int
    eval_every: int = 0
    eval_epochs: int = 300
    eval_model: str = "ConvNet"
    grid_every: int = 0
    checkpoint_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 0 or min(self.eval_every, self.grid_every, self.checkpoint_every, self.eval_epochs) < 0:
            raise ValueError(f"iterations and intervals must be >= 0, got {self}")

    def due(self, every: int, iteration: int) -> bool:
        return iteration == self.iterations or (every > 0 and iteration % every == 0)


def distill(
    synthetic: Parameterization,
    objective: Objective,
    *,
    classes: list[str],
    preprocessing: Preprocessing,
    val: Dataset,
    out_dir: str | Path,
    schedule: Schedule,
    settings: dict | None = None,
    augment: DSA | None = None,
    resume: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[FactorizedDataset, dict]:
    """Run ``schedule.iterations`` steps of ``objective`` on ``synthetic``; return the
    validation-selected dataset (``pairing="random"``, the evaluation protocol's, as validated)
    and its record (``iteration``, ``val_accuracy``).

    Each iteration is one :func:`distill_step`.
    All randomness comes from one generator seeded with ``schedule.seed`` and saved in the
    checkpoint, so ``resume=True`` continues exactly where the last checkpoint stopped and gives
    the same result as an uninterrupted run. ``settings`` (JSON) is stored in the checkpoint and
    must match on resume, except ``schedule.iterations``: a finished or interrupted run may be
    continued to more iterations (its training then equals a run planned that long from the start;
    only the extra measurement at the former last iteration differs).

    Under ``torchrun`` every process runs the loop and takes its share of each step (see
    :mod:`.distributed`); process 0 alone validates and writes the folder, and every process
    returns the selected dataset.
    """
    out = Path(out_dir)
    settings = json.loads(json.dumps({"schedule": asdict(schedule), **(settings or {})}))
    augment = augment or DSA()
    generator = torch.Generator().manual_seed(schedule.seed)
    modules = {"synthetic": synthetic, "objective": objective}
    saved_optimizers = [*synthetic.optimizers(), *objective.optimizers(), *synthetic.helper_optimizers()]
    state = {"iteration": 0, "best": None, "log_bytes": 0, "seconds": 0.0, "settings": settings}
    writer = distributed.rank_and_world()[0] == 0
    if (out / CHECKPOINT).exists() or (out / LOG).exists():
        if not resume:
            raise FileExistsError(f"{out} holds an earlier run: resume it (--resume) or choose another output folder")
        if (out / CHECKPOINT).exists():
            state = _load_checkpoint(out / CHECKPOINT, modules, saved_optimizers, generator, settings)
    distributed.barrier()  # every process has read the folder before process 0 writes to it
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / LOG, "ab") as f:
            f.truncate(state["log_bytes"])

    def snapshot(iteration: int, extra: dict | None = None) -> FactorizedDataset:
        return synthetic.to_dataset(classes, preprocessing=preprocessing, learned_lr=objective.learned_lr,
                                    provenance={"iteration": iteration, **(extra or {})})  # fmt: skip

    def validate(iteration: int) -> float:
        dataset = snapshot(iteration)
        protocol = Protocol(epochs=schedule.eval_epochs, lr=objective.learned_lr or 0.01, curve_points=0)
        with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
            result = train_and_test(dataset, val, num_classes=len(classes), model=schedule.eval_model, protocol=protocol,
                                    seed=schedule.seed, device=device, progress=False)  # fmt: skip
        if state["best"] is None or result.test_accuracy > state["best"]["val_accuracy"]:
            state["best"] = {"iteration": iteration, "val_accuracy": result.test_accuracy}
            snapshot(iteration, {"val_accuracy": result.test_accuracy}).save_pretrained(out / BEST)
        return result.test_accuracy

    if state["iteration"] == 0 and schedule.eval_every and writer:
        _append(out / LOG, state, {"iteration": 0, "val_accuracy": validate(0)})
    bar = progress_bar(total=schedule.iterations, initial=state["iteration"], desc="distill", enabled=progress and writer)
    started = time.perf_counter() - state["seconds"]
    for iteration in range(state["iteration"] + 1, schedule.iterations + 1):
        try:
            record = {"iteration": iteration, **distill_step(synthetic, objective, generator, augment)}
        except FloatingPointError as e:
            raise FloatingPointError(f"iteration {iteration}: {e}") from None
        state["iteration"], state["seconds"] = iteration, time.perf_counter() - started
        if not writer:
            continue
        if schedule.due(schedule.eval_every, iteration):
            record["val_accuracy"] = validate(iteration)
        if schedule.grid_every and schedule.due(schedule.grid_every, iteration):
            snapshot(iteration).save_grid(out / "grids" / f"iter_{iteration:06d}.png")
        _append(out / LOG, state, record)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "match", "lr", "cos", "val_accuracy")})
        if schedule.due(schedule.checkpoint_every, iteration):
            _save_checkpoint(out / CHECKPOINT, modules, saved_optimizers, generator, state)
            plot_progress(out / LOG, out / "progress.png")
    bar.close()
    if writer:
        if state["best"] is None:  # no validation asked for: the last iteration
            state["best"] = {"iteration": state["iteration"], "val_accuracy": None}
            snapshot(state["iteration"]).save_pretrained(out / BEST)
        plot_progress(out / LOG, out / "progress.png")
    distributed.barrier()  # best/ is written
    best = FactorizedDataset.from_pretrained(out / BEST, device="cpu", pairing="random")  # as validated
    if not writer:  # the record process 0 kept
        state["best"] = {"iteration": best.provenance["iteration"], "val_accuracy": best.provenance.get("val_accuracy")}
    return best, {**state["best"], "seconds": state["seconds"]}


def distill_step(synthetic: Parameterization, objective: Objective, generator: torch.Generator,
                 augment: DSA) -> dict[str, float]:  # fmt: skip
    """One distillation iteration, the one :func:`distill` runs; returns its log record.

    Zero the optimisers' gradients, ``objective.loss + synthetic.regularizer``, backward, step the
    optimisers of both, ``objective.after_step()``, then ``synthetic.adversary_step``. A
    non-finite loss raises ``FloatingPointError`` before anything is updated. Under ``torchrun``
    the gradients of every process's share are summed before the step.

    Example::

        generator = torch.Generator().manual_seed(0)
        record = distill_step(HaBa(bases, labels, num_classes=10), objective, generator, DSA())
    """
    optimizers = [*synthetic.optimizers(), *objective.optimizers()]
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss, record = objective.loss(synthetic, generator)
    extra, extra_record = synthetic.regularizer(augment, generator)
    total = loss if extra is None else loss + extra
    value = distributed.sum_value(total.item())  # under torchrun: the shares of every process
    if not math.isfinite(value):
        raise FloatingPointError(f"the loss became {value}; lower the learning rates")
    total.backward()
    distributed.sum_gradients(p for o in optimizers for group in o.param_groups for p in group["params"])
    for optimizer in optimizers:
        optimizer.step()
    objective.after_step()
    return {"loss": value, **record, **extra_record, **synthetic.adversary_step(augment, generator)}


def _append(path: Path, state: dict, record: dict) -> None:
    line = (json.dumps(record) + "\n").encode()
    with open(path, "ab") as f:
        f.write(line)
    state["log_bytes"] += len(line)


def _save_checkpoint(path: Path, modules: dict, optimizers: list, generator: torch.Generator, state: dict) -> None:
    tensors = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    optimizer_states = [_split(o.state_dict(), f"optimizer{i}", tensors) for i, o in enumerate(optimizers)]
    tensors["generator"] = generator.get_state()
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    metadata = {"state": json.dumps(state), "optimizers": json.dumps(optimizer_states)}
    fileformat.write_file(path, safetensors_bytes(tensors, metadata=metadata))


def _load_checkpoint(path: Path, modules: dict, optimizers: list, generator: torch.Generator, settings: dict) -> dict:
    fix = f"delete {path} and {path.parent / LOG} to start the run over, or choose another output folder"
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        state = fileformat.parse_json(metadata["state"].encode())
        skeletons = fileformat.parse_json(metadata["optimizers"].encode())
        _check_state(state)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise fileformat.FormatError(f"{path}: not a checkpoint this run can continue from ({_reason(err)}); {fix}") from None
    if _without_length(state["settings"]) != _without_length(settings):
        old, new = _without_length(state["settings"]), _without_length(settings)
        changed = sorted(k for k in {*new, *old} if new.get(k) != old.get(k))
        raise ValueError(f"{path}: the run was started with different settings ({', '.join(changed)}); "
                         "use another output folder or the original settings")  # fmt: skip
    if settings["schedule"]["iterations"] < state["iteration"]:
        raise ValueError(f"{path}: the run is already at iteration {state['iteration']}; to continue it, ask for "
                         f"at least that many iterations, not {settings['schedule']['iterations']}")  # fmt: skip
    _check_log(path.parent / LOG, state["log_bytes"], fix)
    state["settings"] = settings  # a longer run than first planned continues as if planned so from the start
    try:
        for name, module in modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        for optimizer, saved in zip(optimizers, skeletons, strict=True):
            optimizer.load_state_dict(_join(saved, tensors))
        generator.set_state(tensors["generator"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise fileformat.FormatError(f"{path}: its tensors do not fit this run ({_reason(err)}); {fix}") from None
    return state


def _reason(err: Exception) -> str:
    """An exception as a few words on one line (KeyError: the missing key)."""
    text = f"missing {err}" if isinstance(err, KeyError) else str(err) or type(err).__name__
    return " ".join(text.split())[:300]


def _check_state(state) -> None:
    """Raise ``ValueError`` unless ``state`` is what :func:`_save_checkpoint` writes."""
    if not (isinstance(state, dict) and {"iteration", "best", "log_bytes", "seconds", "settings"} <= set(state)):
        raise ValueError("its state lacks iteration, best, log_bytes, seconds or settings")
    for key in ("iteration", "log_bytes"):
        if isinstance(state[key], bool) or not isinstance(state[key], int) or state[key] < 0:
            raise ValueError(f"state {key} must be a count, got {state[key]!r}")
    best = state["best"]
    if best is not None and not (isinstance(best, dict) and isinstance(best.get("iteration"), int)):
        raise ValueError(f"state best must be null or a record of an iteration, got {best!r}")
    if not isinstance(state["seconds"], (int, float)) or not isinstance(state["settings"], dict):
        raise ValueError("state seconds must be a number and settings a mapping")
    if not isinstance(state["settings"].get("schedule"), dict):
        raise ValueError("state settings lack the schedule")


def _check_log(path: Path, length: int, fix: str) -> None:
    """The first ``length`` bytes of ``log.jsonl`` (what the checkpoint accounts for) must be JSON records."""
    try:
        with open(path, "rb") as f:
            data = f.read(length)
        if len(data) < length:
            raise ValueError(f"{len(data)} bytes, but the checkpoint accounts for {length}")
        for number, line in enumerate(data.splitlines(), 1):
            try:
                record = fileformat.parse_json(line)
            except ValueError as err:
                raise ValueError(f"line {number} is not JSON: {err}") from None
            if not isinstance(record, dict):
                raise ValueError(f"line {number} is not a JSON record")
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise fileformat.FormatError(f"{path}: damaged ({reason}); {fix}") from None


def _without_length(settings: dict) -> dict:
    """The settings a resumed run must share with its checkpoint: all but ``schedule.iterations``."""
    return {**settings, "schedule": {k: v for k, v in settings["schedule"].items() if k != "iterations"}}


def _split(obj, key: str, tensors: dict) -> dict:
    """A JSON skeleton of a nested state (tensors moved into ``tensors``, dict keys kept typed)."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj
        return {"tensor": key}
    if isinstance(obj, dict):
        return {"dict": [[k, _split(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"list": [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    return {"value": obj}


def _join(skeleton: dict, tensors: dict):
    (kind, value), = skeleton.items()
    if kind == "tensor":
        return tensors[value]
    if kind == "dict":
        return {k: _join(v, tensors) for k, v in value}
    if kind == "list":
        return [_join(v, tensors) for v in value]
    return value


def plot_progress(log: Path, path: Path) -> Path:
    """Loss terms and validation accuracy from ``log.jsonl`` as a PNG."""
    records = [json.loads(line) for line in Path(log).read_text().splitlines() if line]
    fig = new_figure(figsize=(13, 3.5))
    axes = fig.subplots(1, 3)
    panels = [("match", "matching loss", "log"), ("cos", "cosine between two hallucinators' views", "linear")]
    for ax, (key, title, scale) in zip(axes, panels):
        points = [(r["iteration"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points), linewidth=0.8)
        ax.set(xlabel="iteration", yscale=scale, title=title)
    points = [(r["iteration"], 100 * r["val_accuracy"]) for r in records if "val_accuracy" in r]
    if points:
        axes[2].plot(*zip(*points), marker="o")
    axes[2].set(xlabel="iteration", ylabel="accuracy %", title="validation accuracy (short protocol)")
    return save_png(fig, path)
