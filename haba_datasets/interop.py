"""Distilled data in the layouts other codes write, in and out of the factorized format.

:func:`import_dataset` reads ``.pt`` files (``torch.load(weights_only=True)`` only, on files the
caller names; never on a download path) or ``.safetensors`` in one of the :data:`LAYOUTS`:

- ``haba-reference``: ``IMAGES WEIGHTS``. ``images_best.pt``: the bases, ``(C * IPC, ch, H, W)``
  class-major (labels implied by that order); ``weights_best.pt``: the state dict of an
  ``nn.ModuleList`` of style translators (``i.enc.weight``, ``i.enc.bias``, ``i.scale``,
  ``i.shift``, ``i.dec.weight``, ``i.dec.bias``; image ``dec(scale * enc(x) + shift)``), mapped
  onto ``haba-conv`` and checked to give the images that formula gives.
- ``mtt``: ``IMAGES LABELS [LR]`` (``images_best.pt``, ``labels_best.pt``, DATM's ``lr_best.pt``).
- ``tensors``: ``IMAGES [LABELS]``; images ``(classes, IPC, ch, H, W)`` or class-major
  ``(classes * IPC, ch, H, W)`` (DD-Ranking's input).

LABELS may be hard (``N`` integers) or soft (``N x classes`` floats, as TESLA and DATM write):
rows that are probability distributions are kept as they are, any other rows are taken as logits
and go through a softmax (the provenance records which); the bases' classes are then their argmax.

Plain images become one ``identity`` hallucinator. :func:`export_dataset` writes a dataset's
materialised images as tensors (safetensors, and the ``.pt`` layout) or as an ImageFolder of PNGs.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
from io import BytesIO
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save as safetensors_bytes

from .data import RealData, Split, load_real
from .factorized import FactorizedDataset
from .fileformat import check_soft_labels, write_file
from .hallucinators import create_hallucinators
from .preprocessing import Preprocessing
from .registry import Registry
from .viz import to_pil

#: Import layouts: name -> reader of the named files into (bases, labels or None, bank or None, lr or None).
LAYOUTS = Registry("import layout")
#: Largest file an import reads (a distilled set is megabytes; this bounds what a wrong path costs).
MAX_FILE_BYTES = 4 << 30


def import_dataset(layout: str, files: list[str | Path], *, dataset: str, preprocessing: str = "identity",
                   lr: float | None = None, data_root: str | Path | None = None, eps: float = 0.1) -> FactorizedDataset:  # fmt: skip
    """A :class:`FactorizedDataset` from another code's files.

    Args:
        layout: one of :data:`LAYOUTS` (see the module docstring for each one's files).
        files: the files, in the layout's order.
        dataset: the real dataset the data was distilled from (classes, image shape, preprocessing).
        preprocessing: the space the images live in: ``"identity"`` (pixels in [0, 1]),
            ``"normalize"`` or ``"zca"`` (``eps``), fitted on the real training split (validation
            rows included, as those codes fit on the whole training set).
        lr: the learned learning rate, if the files do not hold it.

    Returns:
        The dataset (CPU), with provenance naming the layout and files.

    Example::

        ds = import_dataset("mtt", ["images_best.pt", "labels_best.pt"], dataset="cifar10", preprocessing="zca")
        ds.save_pretrained("mtt-cifar10-ipc10")
    """
    real = load_real(dataset, data_root=data_root)
    bases, labels, bank, stored_lr = LAYOUTS[layout]([Path(f) for f in files], len(real.classes))
    soft, soft_from = None, None
    if labels is None:
        labels = _class_major(bases.shape[0], len(real.classes))
    elif labels.is_floating_point():
        soft_from = "probabilities" if _distributions(labels) else "logits (softmax)"
        soft = labels if soft_from == "probabilities" else labels.double().softmax(1).float()
        labels = soft.argmax(1)
    shape = tuple(bank.image_shape) if bank is not None else tuple(bases.shape[1:])
    if shape != tuple(real.image_shape):
        raise ValueError(f"the files hold {shape} images, {dataset} has {tuple(real.image_shape)}")
    if bank is None:
        bank = create_hallucinators("identity", 1, shape, shape, device="cpu")
    if lr is not None and stored_lr is not None and not math.isclose(lr, stored_lr):
        raise ValueError(f"lr {lr} given, but the files hold {stored_lr}")
    prep = _fit(real, preprocessing, eps)
    provenance = {"name": f"{dataset}-{layout}-import", "dataset": dataset,
                  "imported": {"layout": layout, "files": [Path(f).name for f in files], "preprocessing": preprocessing}}  # fmt: skip
    if soft_from is not None:
        provenance["imported"]["soft_labels"] = soft_from
    return FactorizedDataset(bases, labels, bank, real.classes, preprocessing=prep, device="cpu",
                             learned_lr=lr if lr is not None else stored_lr, provenance=provenance, soft_labels=soft)  # fmt: skip


def export_dataset(dataset: FactorizedDataset, to: str, out: str | Path) -> list[Path]:
    """Write every ``(basis, hallucinator)`` image of ``dataset`` to ``out``.

    Args:
        to: ``"tensors"``: ``data.safetensors`` (``images``, ``labels``, ``lr`` when learned; model
            space; with soft labels ``labels`` are their rows and ``classes`` the bases' classes)
            and the same as ``images.pt``, ``labels.pt``, ... for tools that read ``.pt``;
            ``"image-folder"``: one PNG per image in pixel space under ``<index>-<class>/``
            (``torchvision.datasets.ImageFolder`` reads it, class order kept; classes only, so
            soft labels are not in it).

    Returns:
        The files written.
    """
    out = Path(out)
    images, labels = dataset.materialize().tensors
    images, labels = images.cpu().contiguous(), labels.cpu().contiguous()
    classes = dataset.labels.cpu().repeat_interleave(dataset.hallucinators.count)
    if to == "tensors":
        tensors = {"images": images, "labels": labels}
        if dataset.soft_labels is not None:
            tensors["classes"] = classes
        if dataset.learned_lr is not None:
            tensors["lr"] = torch.tensor(dataset.learned_lr, dtype=torch.float64)
        paths = [out / "data.safetensors"]
        write_file(paths[0], safetensors_bytes(tensors))
        for name, tensor in tensors.items():
            paths.append(out / f"{name}.pt")
            _save_pt(paths[-1], tensor)
        return paths
    if to == "image-folder":
        width = len(str(len(dataset.classes) - 1))
        folders = [f"{i:0{width}d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_') or 'class'}"
                   for i, name in enumerate(dataset.classes)]  # fmt: skip
        paths, counts = [], [0] * len(dataset.classes)
        for image, label in zip(dataset.pixels(images), classes.tolist()):
            path = out / folders[label] / f"{counts[label]:05d}.png"
            counts[label] += 1
            path.parent.mkdir(parents=True, exist_ok=True)
            to_pil(image).save(path, format="PNG")
            paths.append(path)
        return paths
    raise ValueError(f"export to 'tensors' or 'image-folder', got {to!r}")


@LAYOUTS.register("haba-reference")
def _haba_reference(files: list[Path], num_classes: int):
    if len(files) != 2:
        raise ValueError(f"haba-reference takes IMAGES WEIGHTS (images_best.pt weights_best.pt), got {len(files)} files")
    images, weights = files
    bases = _images(images, _load(images), 4)
    state = _load(weights)
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise ValueError(f"{weights}: expected a state dict of tensors")
    count = len(state) // 6
    expected = {f"{i}.{n}" for i in range(count) for n in ("enc.weight", "enc.bias", "scale", "shift", "dec.weight", "dec.bias")}
    if set(state) != expected or count < 1:
        raise ValueError(f"{weights}: keys {sorted(state)[:8]}... are not those of {max(count, 1)} style translators "
                         "(i.enc.weight, i.enc.bias, i.scale, i.shift, i.dec.weight, i.dec.bias)")  # fmt: skip
    cb, (c, h, w) = bases.shape[1], (state["0.dec.weight"].shape[1], *bases.shape[2:])
    bank = create_hallucinators("haba-conv", count, (cb, h, w), (c, h, w), device="cpu")
    mapped = {"encoder_weight": ("enc.weight", (c, cb, 3, 3)), "encoder_bias": ("enc.bias", (c,)),
              "scale": ("scale", (1, c, h - 2, w - 2)), "shift": ("shift", (1, c, h - 2, w - 2)),
              "decoder_weight": ("dec.weight", (c, c, 3, 3)), "decoder_bias": ("dec.bias", (c,))}  # fmt: skip
    stacked = {}
    for ours, (theirs, shape) in mapped.items():
        parts = [state[f"{i}.{theirs}"] for i in range(count)]
        if any(tuple(p.shape) != shape or not p.is_floating_point() for p in parts):
            raise ValueError(f"{weights}: '{{i}}.{theirs}' must be float {list(shape)} for {cb}-channel bases of "
                             f"{h}x{w} and {c}-channel images, got {[list(p.shape) for p in parts][:2]}")  # fmt: skip
        stacked[ours] = torch.stack([p.float().reshape(shape[1:] if shape[0] == 1 else shape) for p in parts])
    _finite(weights, *stacked.values())
    bank.load_state_dict(stacked)
    with torch.no_grad():  # the reference computes dec(scale * enc(x) + shift) per translator
        probe = bases[: min(4, len(bases))]
        for i in range(count):
            z = F.conv2d(probe, state[f"{i}.enc.weight"].float(), state[f"{i}.enc.bias"].float())
            z = state[f"{i}.scale"].float() * z + state[f"{i}.shift"].float()
            theirs = F.conv_transpose2d(z, state[f"{i}.dec.weight"].float(), state[f"{i}.dec.bias"].float())
            if not torch.allclose(bank(probe, i), theirs, rtol=1e-4, atol=1e-4):
                raise ValueError(f"{weights}: translator {i} mapped onto haba-conv does not reproduce its images")
    return bases, None, bank, None


@LAYOUTS.register("mtt")
def _mtt(files: list[Path], num_classes: int):
    if len(files) not in (2, 3):
        raise ValueError(f"mtt takes IMAGES LABELS [LR] (images_best.pt labels_best.pt [lr_best.pt]), got {len(files)} files")
    images = _images(files[0], _load(files[0]), 4)
    return images, _labels(files[1], _load(files[1]), len(images), num_classes), None, _lr(files[2]) if len(files) == 3 else None


@LAYOUTS.register("tensors")
def _tensors(files: list[Path], num_classes: int):
    if len(files) not in (1, 2):
        raise ValueError(f"tensors takes IMAGES [LABELS], got {len(files)} files")
    raw = _load(files[0])
    if isinstance(raw, torch.Tensor) and raw.dim() == 5:
        if raw.shape[0] != num_classes:
            raise ValueError(f"{files[0]}: {raw.shape[0]} classes x IPC images, the dataset has {num_classes} classes")
        raw = raw.flatten(0, 1)
    images = _images(files[0], raw, 4)
    labels = _labels(files[1], _load(files[1]), len(images), num_classes) if len(files) == 2 else None
    return images, labels, None, None


def _load(path: Path):
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes, more than the {MAX_FILE_BYTES:,} an import reads")
    if path.suffix == ".safetensors":
        tensors = load_file(path)
        return tensors if len(tensors) != 1 else next(iter(tensors.values()))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:  # weights_only refuses code
        raise ValueError(f"{path}: not a tensor file torch.load reads with weights_only=True ({err})") from None


def _images(path: Path, value, dims: int) -> torch.Tensor:
    if not (isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() == dims and len(value)):
        got = f"{value.dtype} {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{path}: expected float images (N, channels, H, W), got {got}")
    _finite(path, value)
    return value.detach().float().contiguous()


def _labels(path: Path, value, n: int, num_classes: int) -> torch.Tensor:
    """``n`` hard labels (integers), or soft ones (an ``n x num_classes`` float tensor, returned as float)."""
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() == 2:
        if tuple(value.shape) != (n, num_classes):
            raise ValueError(f"{path}: soft labels must be {n} x {num_classes} (images x classes), got {list(value.shape)}")
        _finite(path, value)
        return value.detach().float().contiguous()
    if not (isinstance(value, torch.Tensor) and not value.is_floating_point() and value.shape == (n,)):
        got = f"{value.dtype} {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{path}: expected {n} integer labels or {n} x {num_classes} soft labels, got {got}")
    if n and not (0 <= int(value.min()) and int(value.max()) < num_classes):
        raise ValueError(f"{path}: labels outside [0, {num_classes})")
    return value.long()


def _lr(path: Path) -> float:
    value = _load(path)
    if not (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()):
        raise ValueError(f"{path}: expected one learning rate, got {type(value).__name__}")
    lr = float(value)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"{path}: the learning rate must be positive, got {lr}")
    return lr


def _distributions(soft: torch.Tensor) -> bool:
    try:
        check_soft_labels(soft)
    except ValueError:
        return False
    return True


def _class_major(n: int, num_classes: int) -> torch.Tensor:
    if n % num_classes:
        raise ValueError(f"{n} images are not the same number per class for {num_classes} classes (labels implied)")
    return torch.arange(num_classes).repeat_interleave(n // num_classes)


def _finite(path: Path, *tensors: torch.Tensor) -> None:
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise ValueError(f"{path}: holds NaN or inf")


def _fit(real: RealData, kind: str, eps: float) -> Preprocessing:
    """``kind`` fitted on the whole training split (our validation rows put back)."""
    whole = Split(torch.cat([real.train.images, real.val.images]), torch.cat([real.train.labels, real.val.labels]))
    return dataclasses.replace(real, train=whole).fit_preprocessing(kind, eps=eps)


def _save_pt(path: Path, tensor: torch.Tensor) -> None:
    buffer = BytesIO()
    torch.save(tensor.clone(), buffer)
    write_file(path, buffer.getvalue())
