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
  ``(classes * IPC, ch, H, W)`` (DD-Ranking's input), or the ``data.safetensors`` of
  :func:`export_dataset` (images, labels and lr in one file).

Sparse tensors and tensors whose elements share memory (expanded) are refused before any copy.

LABELS may be hard (``N`` integers) or soft (``N x classes`` floats, as TESLA and DATM write):
rows that are probability distributions are kept as they are, any other rows are taken as logits
and go through a softmax (the provenance records which); the bases' classes are then their argmax.

Plain images become one ``identity`` hallucinator. :func:`export_dataset` writes a dataset's
materialised images as tensors (safetensors, and the ``.pt`` layout) or as an ImageFolder of PNGs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import re
from io import BytesIO
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .data import REAL_DATASETS, RealData, Split, load_real
from .factorized import FactorizedDataset
from .fileformat import SOFT_LABEL_TOLERANCE, FormatError, read_json, write_file
from .hallucinators import create_hallucinators
from .preprocessing import Identity, Preprocessing
from .registry import Registry
from .viz import to_pil

__all__ = ["EXPORT_MANIFEST", "EXPORT_TARGETS", "LAYOUTS", "export_dataset", "import_dataset"]

#: What :func:`export_dataset` writes: safetensors of all images and labels, or an ImageFolder of PNGs.
EXPORT_TARGETS = ("tensors", "image-folder")

#: Import layouts: name -> reader of the named files into (bases, labels or None, bank or None, lr or None).
LAYOUTS = Registry("import layout")
#: Largest file an import reads (a distilled set is megabytes; this bounds what a wrong path costs).
MAX_FILE_BYTES = 4 << 30
#: What an export writes into its folder first: the files it owns there (a later export replaces them).
EXPORT_MANIFEST = ".haba-export.json"
_EXPORT_FORMAT = "haba-datasets/export"
#: Longest class name kept in an ImageFolder's folder names (file systems allow 255 bytes).
MAX_FOLDER_NAME = 100


def import_dataset(layout: str, files: list[str | Path], *, dataset: str, preprocessing: str = "identity",
                   lr: float | None = None, data_root: str | Path | None = None, eps: float = 0.1) -> FactorizedDataset:  # fmt: skip
    """A :class:`FactorizedDataset` from another code's files.

    Args:
        layout: one of :data:`LAYOUTS` (see the module docstring for each one's files).
        files: the files, in the layout's order.
        dataset: the real dataset the data was distilled from (classes, image shape, preprocessing);
            a registered name (``cifar10``, ...) with ``"identity"`` is not loaded: the registry
            knows its classes and image shape.
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
    reader = LAYOUTS[layout]  # an unknown layout, before any file is read
    for f in files:
        if not Path(f).is_file():
            raise ValueError(f"{f}: no such file")
    spec = REAL_DATASETS.get(dataset)
    if preprocessing == "identity" and spec is not None and spec.classes:  # nothing to fit: no download
        real, classes, image_shape = None, list(spec.classes), spec.image_shape
    else:
        real = load_real(dataset, data_root=data_root)
        classes, image_shape = real.classes, real.image_shape
    bases, labels, bank, stored_lr = reader([Path(f) for f in files], len(classes))
    soft, soft_from = None, None
    if labels is None:
        labels = _class_major(bases.shape[0], len(classes))
    elif labels.is_floating_point():
        soft, soft_from = _probabilities(labels)
        labels = soft.argmax(1)
    shape = tuple(bank.image_shape) if bank is not None else tuple(bases.shape[1:])
    if shape != tuple(image_shape):
        raise ValueError(f"the files hold {shape} images, {dataset} has {tuple(image_shape)}")
    if bank is None:
        bank = create_hallucinators("identity", 1, shape, shape, device="cpu")
    if lr is not None and stored_lr is not None and not math.isclose(lr, stored_lr):
        raise ValueError(f"lr {lr} given, but the files hold {stored_lr}")
    prep = Identity() if real is None else _fit(real, preprocessing, eps)
    provenance = {"name": f"{dataset}-{layout}-import", "dataset": dataset,
                  "imported": {"layout": layout, "files": [Path(f).name for f in files], "preprocessing": preprocessing}}  # fmt: skip
    if soft_from is not None:
        provenance["imported"]["soft_labels"] = soft_from
    return FactorizedDataset(bases, labels, bank, classes, preprocessing=prep, device="cpu",
                             learned_lr=lr if lr is not None else stored_lr, provenance=provenance, soft_labels=soft)  # fmt: skip


def export_dataset(dataset: FactorizedDataset, to: str, out: str | Path) -> list[Path]:
    """Write every ``(basis, hallucinator)`` image of ``dataset`` to ``out``.

    Args:
        to: ``"tensors"``: ``data.safetensors`` (``images``, ``labels``, ``lr`` when learned; model
            space; with soft labels ``labels`` are their rows and ``classes`` the bases' classes)
            and the same as ``images.pt``, ``labels.pt``, ... for tools that read ``.pt``;
            ``"image-folder"``: one PNG per image in pixel space under ``<index>-<class>/``
            (``torchvision.datasets.ImageFolder`` reads it, class order kept; classes only, so
            soft labels are not in it; class names cut to :data:`MAX_FOLDER_NAME` characters).

    ``out`` must be new, empty or an earlier export (its files, named in :data:`EXPORT_MANIFEST`,
    are replaced completely); a folder holding anything else raises ``FileExistsError``.
    ``import_dataset("tensors", [out / "data.safetensors"], ...)`` reads the tensors back.

    Returns:
        The files written.
    """
    out = Path(out)
    if to not in EXPORT_TARGETS:
        raise ValueError(f"export to 'tensors' or 'image-folder', got {to!r}")
    _clear_export(out)
    images, labels = dataset.materialize().tensors
    images, labels = images.cpu().contiguous(), labels.cpu().contiguous()
    classes = dataset.labels.cpu().repeat_interleave(dataset.hallucinators.count)
    if to == "tensors":
        tensors = {"images": images, "labels": labels}
        if dataset.soft_labels is not None:
            tensors["classes"] = classes
        if dataset.learned_lr is not None:
            tensors["lr"] = torch.tensor(dataset.learned_lr, dtype=torch.float64)
        paths = [out / "data.safetensors", *(out / f"{name}.pt" for name in tensors)]
        _write_manifest(out, paths)
        write_file(paths[0], safetensors_bytes(tensors))
        for path, tensor in zip(paths[1:], tensors.values()):
            _save_pt(path, tensor)
        return paths
    width = len(str(len(dataset.classes) - 1))
    folders = [f"{i:0{width}d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_')[:MAX_FOLDER_NAME] or 'class'}"
               for i, name in enumerate(dataset.classes)]  # fmt: skip
    counts, paths = [0] * len(dataset.classes), []
    for label in classes.tolist():
        paths.append(out / folders[label] / f"{counts[label]:05d}.png")
        counts[label] += 1
    _write_manifest(out, paths)
    for image, path in zip(dataset.pixels(images), paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil(image).save(path, format="PNG")
    return paths


def _clear_export(out: Path) -> None:
    """Empty ``out`` of an earlier export (its manifest names the files); refuse a folder holding
    anything else, so that no file the export did not write is replaced or left mixed with its own."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: is a file; export into a new or empty folder")
    if not out.exists() or not any(out.iterdir()):
        return
    refuse = f"{out}: not empty and not an earlier export; export into a new or empty folder"
    try:
        written = set(read_json(out, EXPORT_MANIFEST, _check_manifest, what="an export folder")["files"])
    except FormatError as err:
        raise FileExistsError(f"{refuse} ({err})") from None
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_symlink() or not p.is_dir()}
    if others := sorted(present - written - {EXPORT_MANIFEST}):
        raise FileExistsError(f"{out}: holds files the export did not write ({', '.join(others[:3])}"
                              f"{', ...' if len(others) > 3 else ''}); export into a new or empty folder")  # fmt: skip
    for name in sorted(present & written):
        (out / name).unlink()
    for folder in sorted((p for p in out.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    (out / EXPORT_MANIFEST).unlink()


def _check_manifest(manifest) -> None:
    if not (isinstance(manifest, dict) and manifest.get("format") == _EXPORT_FORMAT and isinstance(manifest.get("files"), list)):
        raise ValueError(f"not a manifest of {_EXPORT_FORMAT}")
    for name in manifest["files"]:
        if not (isinstance(name, str) and name and not Path(name).is_absolute() and ".." not in Path(name).parts):
            raise ValueError(f"{name!r} is not a path inside the folder")


def _write_manifest(out: Path, paths: list[Path]) -> None:
    """Record the files the export is about to write (first: an interrupted export is still its own)."""
    files = [p.relative_to(out).as_posix() for p in paths]
    write_file(out / EXPORT_MANIFEST, (json.dumps({"format": _EXPORT_FORMAT, "files": files}, indent=1) + "\n").encode())


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
    lr = _lr(files[2], _load(files[2])) if len(files) == 3 else None
    return images, _labels(files[1], _load(files[1]), len(images), num_classes), None, lr


@LAYOUTS.register("tensors")
def _tensors(files: list[Path], num_classes: int):
    if len(files) not in (1, 2):
        raise ValueError(f"tensors takes IMAGES [LABELS], got {len(files)} files")
    raw, stored = _load(files[0]), {}
    if isinstance(raw, dict):  # data.safetensors of export_dataset: images, labels, lr (and classes)
        if "images" not in raw or set(raw) - {"images", "labels", "classes", "lr"}:
            raise ValueError(f"{files[0]}: holds tensors {sorted(raw)}; expected one tensor, or images [labels, lr] "
                             "as `export --to tensors` writes")  # fmt: skip
        raw, stored = raw["images"], raw
    if isinstance(raw, torch.Tensor) and raw.dim() == 5:
        if raw.shape[0] != num_classes:
            raise ValueError(f"{files[0]}: {raw.shape[0]} classes x IPC images, the dataset has {num_classes} classes")
        raw = raw.flatten(0, 1)
    images = _images(files[0], raw, 4)
    labels = _labels(files[1], _load(files[1]), len(images), num_classes) if len(files) == 2 else None
    if labels is None and "labels" in stored:
        labels = _labels(files[0], stored["labels"], len(images), num_classes)
    return images, labels, None, _lr(files[0], stored["lr"]) if "lr" in stored else None


def _load(path: Path):
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes, more than the {MAX_FILE_BYTES:,} an import reads")
    if path.suffix == ".safetensors":
        try:  # the header is checked against the file's size before any tensor is read
            with safe_open(path, framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except SafetensorError as err:
            raise ValueError(f"{path}: not a valid safetensors file ({err})") from None
        return tensors if len(tensors) != 1 else next(iter(tensors.values()))
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:  # weights_only refuses code
        raise ValueError(f"{path}: not a tensor file torch.load reads with weights_only=True ({err})") from None
    for tensor in value.values() if isinstance(value, dict) else [value]:
        _check_dense(path, tensor)
    return value


def _check_dense(path: Path, tensor) -> None:
    """Refuse a sparse tensor, or one whose elements share memory (expanded, stride 0): a small file
    could then ask for far more memory than it holds."""
    if not isinstance(tensor, torch.Tensor):
        return
    if tensor.layout != torch.strided:
        raise ValueError(f"{path}: holds a {tensor.layout} tensor; save it dense (tensor.to_dense()) first")
    if tensor.numel() * tensor.element_size() > tensor.untyped_storage().nbytes():
        raise ValueError(f"{path}: holds a tensor of shape {list(tensor.shape)} whose elements share memory (expanded, "
                         "stride 0); save tensor.contiguous() instead")  # fmt: skip


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


def _lr(path: Path, value) -> float:
    if not (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()):
        raise ValueError(f"{path}: expected one learning rate, got {type(value).__name__}")
    lr = float(value)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"{path}: the learning rate must be positive, got {lr}")
    return lr


def _probabilities(soft: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Rows that are probability distributions kept, the others (logits) through a softmax; and which."""
    rows = soft.double()
    kept = (rows >= 0).all(1) & ((rows.sum(1) - 1).abs() <= SOFT_LABEL_TOLERANCE)
    if bool(kept.all()):
        return soft, "probabilities"
    converted = torch.where(kept[:, None], rows, rows.softmax(1)).float()
    if not bool(kept.any()):
        return converted, "logits (softmax)"
    return converted, f"{int((~kept).sum())} of {len(kept)} rows logits (softmax), the others probabilities"


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
