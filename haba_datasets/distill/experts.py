"""Expert networks trained on real data: MTT's trajectories (every epoch) or DANCE's two ends.

An expert is a network trained from scratch on the whole preprocessed training split with SGD
(MTT's experts: no momentum, no weight decay, a constant lr; DANCE's: momentum 0.9, weight decay
5e-4, the lr x0.1 after 2/3 and again after 5/6 of the epochs), DSA on every batch. A folder::

    index.json                        settings, parameter shapes, finished experts (validated on reading)
    preprocessing.safetensors         tensors of the preprocessing (ZCA only)
    expert_0000.safetensors           ``trajectory``: float32 (rows, P), parameters flattened in
                                      ``named_parameters()`` order; ``keep="all"``: rows = epochs + 1, row e
                                      after epoch e (row 0: the initialisation); ``keep="ends"``: rows =
                                      2, the initialisation and the final parameters (small enough to commit)
    expert_0001.partial.safetensors   an unfinished expert (every epoch so far, and the momentum buffer),
                                      continued by the next run

Expert ``i``'s initialisation depends on ``(seed, i)`` only, and its epoch ``e`` (batch order, DSA
draws) on ``(seed, i, e)`` only: the files do not depend on interruptions or on how many processes
trained them (under ``torchrun``, rank r trains the experts i with ``i % world_size == r``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import fileformat
from ..augment import DSA
from ..data import RealData, load_real
from ..evaluate import as_dataset, train_epoch
from ..fileformat import FormatError
from ..nets import create_net, list_nets
from ..preprocessing import Preprocessing, list_preprocessings, preprocessing_class
from ..progress import progress_bar
from . import distributed

__all__ = ["KEEPS", "Experts", "epoch_lr", "train_experts"]

FORMAT_NAME = "haba-datasets/experts"
FORMAT_VERSION = 2
INDEX = "index.json"
_KEYS_V1 = ("format", "format_version", "dataset", "classes", "image_shape", "net", "net_options", "preprocessing",
            "parameters", "num_parameters", "epochs", "lr", "batch_size", "dsa", "seed", "experts")  # fmt: skip
_KEYS = (*_KEYS_V1, "momentum", "weight_decay", "lr_steps", "keep")
_V1_DEFAULTS = {"momentum": 0.0, "weight_decay": 0.0, "lr_steps": False, "keep": "all"}  # what version 1 trained
KEEPS = ("all", "ends")
# What a rerun must share with the folder's index.json (the preprocessing is compared by kind and eps).
_SETTINGS = ("dataset", "classes", "image_shape", "net", "net_options", "epochs", "lr", "batch_size", "dsa", "seed",
             "parameters", "momentum", "weight_decay", "lr_steps", "keep")  # fmt: skip
_FINISHED = re.compile(r"expert_(\d{4,})\.safetensors")


def expert_file(expert_id: int, *, partial: bool = False) -> str:
    """File name of an expert's trajectory (``partial``: of its unfinished rows)."""
    return f"expert_{expert_id:04d}{'.partial' if partial else ''}.safetensors"


def flatten_parameters(net: nn.Module) -> Tensor:
    """All parameters of ``net`` as one detached vector, in ``named_parameters()`` order."""
    return nn.utils.parameters_to_vector(net.parameters()).detach()


def unflatten(flat: Tensor, shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, Tensor]:
    """Views of ``flat`` named and shaped as ``shapes`` (for :func:`torch.func.functional_call`)."""
    chunks = flat.split([math.prod(shape) for _, shape in shapes])
    return {name: chunk.view(shape) for (name, shape), chunk in zip(shapes, chunks)}


def train_experts(
    out_dir: str | Path,
    *,
    dataset: str | Path,
    data_root: str | Path | None = None,
    experts: int = 1,
    epochs: int = 50,
    net: str = "ConvNet",
    net_options: dict | None = None,
    preprocessing: str = "zca",
    zca_eps: float = 0.1,
    lr: float = 0.01,
    batch_size: int = 256,
    dsa: bool = True,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    lr_steps: bool = False,
    keep: str = "all",
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Path:
    """Train experts ``0 .. experts - 1`` into ``out_dir``; return it.

    ``momentum``, ``weight_decay`` and ``lr_steps`` (lr x0.1 after 2/3 and after 5/6 of the
    epochs) set the SGD; ``keep`` is ``"all"`` (every epoch: MTT) or ``"ends"`` (initial and
    final parameters: DANCE). Finished experts are kept and unfinished ones continued from their
    last epoch. A folder that holds experts of other settings raises ``ValueError`` (more
    experts than before is fine). Launched by ``torchrun``, the processes share the experts
    (``cuda:LOCAL_RANK`` on GPUs).

    Example::

        train_experts("experts/cifar10-dance", dataset="cifar10", experts=3, epochs=8, momentum=0.9,
                      weight_decay=5e-4, lr_steps=True, keep="ends", net_options={"width": 32})
    """
    if min(experts, epochs, batch_size) < 1 or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"need experts, epochs, batch_size >= 1 and lr > 0; got {experts}, {epochs}, {batch_size}, {lr}")
    if not (0 <= momentum < 1 and 0 <= weight_decay < 1):
        raise ValueError(f"need 0 <= momentum < 1 and 0 <= weight_decay < 1; got {momentum}, {weight_decay}")
    if keep not in KEEPS:
        raise ValueError(f"keep must be one of {KEEPS}, got {keep!r}")
    preprocessing_class(preprocessing)
    out = Path(out_dir)
    rank, world, device, started = distributed.start(device)
    try:
        real = load_real(dataset, data_root=data_root)
        settings = {"dataset": real.name, "classes": real.classes, "image_shape": list(real.image_shape), "net": net,
                    "net_options": dict(net_options or {}), "epochs": epochs, "lr": lr, "batch_size": batch_size,
                    "dsa": dsa, "seed": seed, "momentum": float(momentum), "weight_decay": float(weight_decay),
                    "lr_steps": bool(lr_steps), "keep": keep}  # fmt: skip
        with torch.device("meta"):
            params = _net(settings).named_parameters()
            settings["parameters"] = [[name, list(p.shape)] for name, p in params]
        config = _start_folder(out, settings, real, preprocessing, zca_eps, rank)
        images, labels = (t.to(device) for t in as_dataset(real.train, _read_preprocessing(out, config)).tensors)
        for i in range(rank, experts, world):
            if not (out / expert_file(i)).exists():
                _train_expert(out, i, config, images, labels, device, progress, rank if world > 1 else None)
        distributed.barrier()
        if rank == 0:
            _write_index(out, {**config, "experts": _finished(out)})
        distributed.barrier()  # every process returns once the index lists every expert
    finally:
        if started:
            dist.destroy_process_group()
    return out


class Experts:
    """A folder written by :func:`train_experts`, validated on opening; trajectories are read on demand."""

    def __init__(self, folder: Path, config: dict, preprocessing: Preprocessing) -> None:
        self.folder = folder
        self.config = config
        self.preprocessing = preprocessing
        self.parameter_shapes: list[tuple[str, tuple[int, ...]]] = [(n, tuple(s)) for n, s in config["parameters"]]
        self.num_parameters: int = config["num_parameters"]
        self.ids: list[int] = list(config["experts"])

    @classmethod
    def open(cls, folder: str | Path) -> "Experts":
        """Read ``index.json`` and the preprocessing, and check every finished expert's file header."""
        folder = Path(folder)
        config = _read_index(folder)
        for i in config["experts"]:
            _read_checked(folder / expert_file(i), {"trajectory": _trajectory_shape(config)}, rows=slice(0, 0))
        return cls(folder, config, _read_preprocessing(folder, config))

    def __repr__(self) -> str:
        c = self.config
        return f"Experts({self.folder}: {len(self.ids)} x {c['epochs']} epochs, {c['net']} on {c['dataset']})"

    def create_net(self) -> nn.Module:
        """A freshly initialised network of the experts' architecture."""
        return _net(self.config)

    def trajectory(self, expert_id: int, start: int, stop: int) -> Tensor:
        """Rows ``start .. stop`` (both included) of an expert's trajectory: float32 ``(stop - start + 1, P)``
        (experts kept with ``keep="all"``)."""
        if self.config["keep"] != "all":
            raise ValueError(f"{self.folder}: these experts keep only their {self.config['keep']}, not every epoch "
                             "(train them with keep='all' for trajectory matching)")  # fmt: skip
        if not 0 <= start <= stop <= self.config["epochs"]:
            raise ValueError(f"need 0 <= start <= stop <= {self.config['epochs']}, got start {start}, stop {stop}")
        return self._rows(expert_id, slice(start, stop + 1))

    def ends(self, expert_id: int) -> tuple[Tensor, Tensor]:
        """An expert's initial and final parameters (any ``keep``)."""
        rows = _trajectory_shape(self.config)[0]
        first, last = self._rows(expert_id, slice(0, 1)), self._rows(expert_id, slice(rows - 1, rows))
        return first[0], last[0]

    def _rows(self, expert_id: int, rows: slice) -> Tensor:
        if expert_id not in self.ids:
            raise ValueError(f"no finished expert {expert_id} in {self.folder} (finished: {self.ids})")
        spec = {"trajectory": _trajectory_shape(self.config)}
        return _read_checked(self.folder / expert_file(expert_id), spec, rows=rows)["trajectory"]


def _derived_seed(*keys: int) -> int:
    """A 63-bit seed that depends on ``keys`` only."""
    return int.from_bytes(hashlib.sha256(repr(keys).encode()).digest()[:8], "little") >> 1


def _net(config: dict) -> nn.Module:
    channels, size, _ = config["image_shape"]
    return create_net(config["net"], channels, len(config["classes"]), size, **config["net_options"])


def _trajectory_shape(config: dict) -> tuple[int, int]:
    return (config["epochs"] + 1 if config["keep"] == "all" else 2), config["num_parameters"]


def epoch_lr(config: dict, epoch: int) -> float:
    """The lr of epoch ``epoch`` (1-based): ``lr``, x0.1 after 2/3 and again after 5/6 of the epochs with ``lr_steps``."""
    epochs = config["epochs"]
    steps = sum(epoch > m for m in (2 * epochs // 3, 5 * epochs // 6)) if config["lr_steps"] else 0
    return config["lr"] * 0.1**steps


def _start_folder(out: Path, settings: dict, real: RealData, kind: str, eps: float, rank: int) -> dict:
    """Check an existing index.json against ``settings``, or (rank 0) fit the preprocessing and write one."""
    if (out / INDEX).exists():
        index = _read_index(out)
        for key in _SETTINGS:
            if index[key] != settings[key]:
                raise ValueError(f"{out / INDEX}: {key} is {index[key]!r} there, {settings[key]!r} here "
                                 "(use the same settings or another folder)")  # fmt: skip
        stored, asked = _describe(**index["preprocessing"]), _describe(kind, eps)
        if stored != asked:
            raise ValueError(f"{out / INDEX}: preprocessing is {stored} there, {asked} here "
                             "(use the same settings or another folder)")  # fmt: skip
    elif rank == 0:
        prep = real.fit_preprocessing(kind, eps=eps)
        if prep.tensors():
            tensors = {k: t.contiguous() for k, t in prep.tensors().items()}
            fileformat.write_file(out / fileformat.PREPROCESSING, safetensors_bytes(tensors))
        _write_index(out, {**settings, "preprocessing": prep.config(), "experts": []})
    distributed.barrier()
    return _read_index(out)


def _describe(kind: str, eps: float | None = None, **_) -> str:
    """A preprocessing's kind and (ZCA) eps: what a rerun must repeat (the fitted values come from the folder)."""
    return f"{kind} (eps {eps})" if kind == "zca" else kind


def _train_expert(out: Path, i: int, config: dict, images: Tensor, labels: Tensor, device: torch.device,
                  progress: bool, rank: int | None) -> None:  # fmt: skip
    """Train (or continue) expert ``i``: a partial file after every epoch, the final file at the end."""
    partial = out / expert_file(i, partial=True)
    shapes = [(n, tuple(s)) for n, s in config["parameters"]]
    epochs, seed, size = config["epochs"], config["seed"], config["num_parameters"]
    momentum = config["momentum"]
    buffer = None
    if partial.exists():
        specs = {"trajectory": (None, size), **({"momentum": (size,)} if momentum else {})}
        saved = _read_checked(partial, specs)
        rows, buffer = list(saved["trajectory"]), saved.get("momentum")
        if not 1 <= len(rows) <= epochs + 1:
            raise FormatError(f"{partial}: {len(rows)} rows for {epochs} epochs (delete it to restart expert {i})")
        net = _net(config)
        net.load_state_dict(unflatten(rows[-1], shapes), strict=False)  # parameters only: training ignores buffers
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derived_seed(seed, i))
            net = _net(config)
        rows = [flatten_parameters(net)]
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=config["lr"], momentum=momentum, weight_decay=config["weight_decay"])
    if buffer is not None:
        for p, b in zip(net.parameters(), unflatten(buffer.to(device), shapes).values()):
            optimizer.state[p]["momentum_buffer"] = b.clone()
    augment = DSA() if config["dsa"] else None
    done = ""
    bar = progress_bar(desc=f"expert {i}", initial=len(rows) - 1, total=epochs, unit="epoch", leave=False,
                       enabled=progress and not rank)  # fmt: skip
    for epoch in range(len(rows), epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(config, epoch)
        generator = torch.Generator().manual_seed(_derived_seed(seed, i, epoch))  # batch order, then DSA draws
        order = torch.randperm(len(labels), generator=generator).to(device)
        batches = ((images[index], labels[index]) for index in order.split(config["batch_size"]))
        loss, accuracy = train_epoch(net, batches, optimizer, device, augment, generator)
        rows.append(flatten_parameters(net).cpu())
        if epoch < epochs:
            tensors = {"trajectory": torch.stack(rows)}
            if momentum:
                tensors["momentum"] = torch.cat([optimizer.state[p]["momentum_buffer"].flatten() for p in net.parameters()]).cpu()
            fileformat.write_file(partial, safetensors_bytes(tensors))
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}", refresh=False)
        bar.update()
        done = f", last epoch: loss {loss:.4f}, training accuracy {accuracy:.1%}"
    bar.close()
    kept = rows if config["keep"] == "all" else [rows[0], rows[-1]]
    fileformat.write_file(out / expert_file(i), safetensors_bytes({"trajectory": torch.stack(kept)}))
    partial.unlink(missing_ok=True)
    if progress:
        tqdm.write(f"{'' if rank is None else f'[rank {rank}] '}expert {i}: {epochs} epochs{done}")


def _finished(out: Path) -> list[int]:
    return sorted(int(m[1]) for m in map(_FINISHED.fullmatch, os.listdir(out)) if m)


def _write_index(out: Path, index: dict) -> None:
    index = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **index,
             "num_parameters": sum(math.prod(shape) for _, shape in index["parameters"])}  # fmt: skip
    fileformat.write_file(out / INDEX, (json.dumps({k: index[k] for k in _KEYS}, indent=2) + "\n").encode())


def _read_index(folder: Path) -> dict:
    """Read and validate ``folder/index.json``; raise :class:`FormatError` naming the problem."""
    return fileformat.read_json(folder, INDEX, _validate_index, what="an experts folder")


def _is_int(value, low: int | None = None) -> bool:
    return type(value) is int and (low is None or value >= low)


_CHECKS = {
    "dataset": ("a name", lambda v: isinstance(v, str)),
    "classes": ("a list of distinct names", lambda v: isinstance(v, list) and v and all(isinstance(c, str) for c in v)
                and len(set(v)) == len(v)),
    "image_shape": ("[channels, height, width]",
                    lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(s, 1) for s in v)),
    "net": (f"one of {list_nets()}", lambda v: v in list_nets()),
    "net_options": ("an object", lambda v: isinstance(v, dict)),
    "preprocessing": (f"an object with a kind in {list_preprocessings()}",
                      lambda v: isinstance(v, dict) and v.get("kind") in list_preprocessings()),
    "epochs": ("an int >= 1", lambda v: _is_int(v, 1)),
    "lr": ("a positive number", lambda v: type(v) in (int, float) and math.isfinite(v) and v > 0),
    "batch_size": ("an int >= 1", lambda v: _is_int(v, 1)),
    "dsa": ("true or false", lambda v: isinstance(v, bool)),
    "seed": ("an int", _is_int),
    "experts": ("a sorted list of distinct ints >= 0", lambda v: isinstance(v, list) and all(_is_int(i, 0) for i in v)
                and v == sorted(set(v))),
    "momentum": ("a number in [0, 1)", lambda v: type(v) in (int, float) and 0 <= v < 1),
    "weight_decay": ("a number in [0, 1)", lambda v: type(v) in (int, float) and 0 <= v < 1),
    "lr_steps": ("true or false", lambda v: isinstance(v, bool)),
    "keep": (f"one of {list(KEEPS)}", lambda v: v in KEEPS),
}  # fmt: skip


def _validate_index(index) -> None:
    if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
        raise ValueError(f"'format' must be {FORMAT_NAME!r}")
    version = index.get("format_version")
    if version not in (1, FORMAT_VERSION) or isinstance(version, bool):
        raise ValueError(f"unsupported format_version {version!r} (this library reads 1 and {FORMAT_VERSION})")
    keys = _KEYS if version == FORMAT_VERSION else _KEYS_V1
    if set(index) != set(keys):
        missing, extra = sorted(set(keys) - set(index)), sorted(set(index) - set(keys))
        raise ValueError(f"keys differ from format v{version}: missing {missing}, unexpected {extra}")
    if version == 1:
        index.update(_V1_DEFAULTS)
    for key, (expected, check) in _CHECKS.items():
        if not check(index[key]):
            raise ValueError(f"{key!r} must be {expected}, got {index[key]!r}")
    preprocessing_class(index["preprocessing"]["kind"]).check_config(index["preprocessing"], tuple(index["image_shape"]))
    with torch.device("meta"):
        params = [[name, list(p.shape)] for name, p in _net(index).named_parameters()]
    if index["parameters"] != params:
        raise ValueError(f"'parameters' do not match the parameters of {index['net']} {index['net_options']}")
    total = sum(math.prod(shape) for _, shape in params)
    if index["num_parameters"] != total:
        raise ValueError(f"'num_parameters' is {index['num_parameters']!r}, the parameters hold {total}")


def _read_checked(path: Path, specs: dict[str, tuple[int | None, ...]], rows: slice | None = None) -> dict[str, Tensor]:
    """The float32 tensors ``specs`` names (shapes; None: any size) from ``path`` (see :func:`fileformat.read_safetensors`;
    ``rows=slice(0, 0)`` checks the header only)."""
    return fileformat.read_safetensors(path, {k: (shape, torch.float32) for k, shape in specs.items()}, rows=rows)


def _read_preprocessing(folder: Path, config: dict) -> Preprocessing:
    """The preprocessing ``config`` describes, with its tensors read from ``preprocessing.safetensors``."""
    prep = config["preprocessing"]
    cls = preprocessing_class(prep["kind"])
    shapes = cls.tensor_shapes(prep, tuple(config["image_shape"]))
    path = folder / (fileformat.PREPROCESSING if shapes else INDEX)
    tensors = _read_checked(path, shapes) if shapes else {}
    try:
        return cls.from_config(prep, tensors)
    except ValueError as err:
        raise FormatError(f"{path}: {err}") from None
