"""File format v1 of a factorized dataset: its files built, read with validation, written atomically.

A dataset is a folder (see ``docs/format.md``)::

    config.json                 what the tensors are (validated before any tensor is read)
    factors.safetensors         bases, labels (and soft labels, if any), hallucinator parameters
    preprocessing.safetensors   tensor parameters of the preprocessing (ZCA only), read on first use
    README.md                   dataset card

Loading never unpickles. Every problem raises :class:`FormatError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .errors import HabaError
from .hallucinators import HallucinatorBank, create_hallucinators, list_hallucinators
from .preprocessing import Preprocessing, finite_in_float32, list_preprocessings, preprocessing_class

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "FormatError", "read_config"]

FORMAT_NAME = "haba-datasets/factorized"
FORMAT_VERSION = 1
CONFIG = "config.json"
FACTORS = "factors.safetensors"
PREPROCESSING = "preprocessing.safetensors"
CARD = "README.md"
# A published (Hub) copy also holds a picture and every image as parquet, for `datasets` users.
PREVIEW = "preview.png"
DATA_FILE = "data/train-00000-of-00001.parquet"

# Sanity limits, checked against config.json before anything is allocated.
MAX_CONFIG_BYTES = 1 << 20
MAX_CHANNELS = 64
MAX_SIDE = 4096
MAX_BASES = 10_000_000
MAX_HALLUCINATORS = 4096
MAX_CLASSES = 100_000
MAX_VALUES_PER_FILE = 1 << 31

_CONFIG_KEYS = {
    "format", "format_version", "image_shape", "basis_shape", "num_bases", "classes",
    "hallucinators", "preprocessing", "learned_lr", "provenance", "files",
}  # fmt: skip
_OPTIONAL_KEYS = {"soft_labels"}  # written only when true
#: How far a row of soft labels may sum from 1 (they are probabilities, stored as float32).
SOFT_LABEL_TOLERANCE = 1e-3
_DTYPES = {"F32": torch.float32, "I64": torch.int64}


class FormatError(HabaError, ValueError):
    """A factorized dataset folder or file is missing, corrupted or inconsistent."""


def read_config(folder: Path) -> dict:
    """Read and validate ``folder/config.json``; raise :class:`FormatError` on any problem."""
    return read_json(Path(folder), CONFIG, validate_config, what="a factorized dataset folder")


def read_json(folder: Path, name: str, validate: Callable[[object], None], *, what: str) -> dict:
    """Read ``folder/name`` (size-limited JSON) and check it with ``validate`` (which raises
    ``ValueError``); every problem becomes a :class:`FormatError` naming the file."""
    path = folder / name
    if not folder.is_dir():
        raise FormatError(f"{folder}: not a folder")
    if not path.is_file():
        raise FormatError(f"{path}: missing (not {what}?)")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise FormatError(f"{path}: {path.stat().st_size} bytes, more than the {MAX_CONFIG_BYTES} allowed")
    try:
        value = parse_json(path.read_bytes())
    except ValueError as err:
        raise FormatError(f"{path}: not valid JSON ({err})") from None
    try:
        validate(value)
    except ValueError as err:
        raise FormatError(f"{path}: {err}") from None
    return value


def parse_json(data: bytes) -> object:
    """Strict JSON: UTF-8, no NaN/Infinity, bounded nesting and integer digits; raises ``ValueError``
    (bad UTF-8, bad syntax and the interpreter's limit on integer digits are ValueErrors already)."""

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(data.decode("utf-8"), parse_constant=no_constants)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def dataset_files(bases: torch.Tensor, labels: torch.Tensor, hallucinators: HallucinatorBank, classes: list[str],
                  preprocessing: Preprocessing, *, learned_lr: float | None, provenance: dict,
                  soft_labels: torch.Tensor | None = None) -> tuple[dict, dict[str, bytes]]:  # fmt: skip
    """The config and the bytes of ``config.json`` and the tensor files of a dataset (no card):
    what :func:`validate_config` and the readers accept, refusing NaN/inf values."""
    factors = {"bases": bases, "labels": labels}
    if soft_labels is not None:
        factors["soft_labels"] = soft_labels
    factors.update({f"hallucinators.{k}": v for k, v in hallucinators.state_dict().items()})
    files = {}
    for name, tensors in {FACTORS: factors, PREPROCESSING: preprocessing.tensors()}.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"refusing to save non-finite values in {bad}")
        if tensors:
            files[name] = safetensors_bytes(tensors)
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "image_shape": list(hallucinators.image_shape),
        "basis_shape": list(hallucinators.basis_shape),
        "num_bases": bases.shape[0],
        "classes": list(classes),
        "hallucinators": {"architecture": hallucinators.architecture, "count": hallucinators.count,
                          "options": hallucinators.options()},  # fmt: skip
        "preprocessing": preprocessing.config(),
        "learned_lr": learned_lr,
        "provenance": provenance,
        "files": {name: file_entry(data) for name, data in files.items()},
    }
    if soft_labels is not None:
        config["soft_labels"] = True
    files[CONFIG] = encode_config(config)
    return config, files


def encode_config(config: dict) -> bytes:
    """The bytes of ``config.json`` for ``config``, held to exactly what a reader accepts
    (:func:`validate_config` and the size limit); raises ``ValueError``."""
    try:
        data = (json.dumps(config, indent=2, allow_nan=False) + "\n").encode()
    except ValueError as err:
        raise ValueError(f"config.json can hold only finite numbers (provenance included): {err}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"config.json would be {len(data):,} bytes, more than the {MAX_CONFIG_BYTES:,} a reader "
                         "accepts (too many classes, or a large provenance?)")  # fmt: skip
    validate_config(parse_json(data))
    return data


def validate_config(config: dict) -> None:
    """Raise ``ValueError`` describing the first problem in a config dict."""
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise ValueError(f"'format' must be {FORMAT_NAME!r}")
    if not _is_int(config.get("format_version")) or config["format_version"] != FORMAT_VERSION:
        raise ValueError(f"unsupported format_version {config.get('format_version')!r} (this library reads {FORMAT_VERSION})")
    if set(config) - _OPTIONAL_KEYS != _CONFIG_KEYS:
        missing, extra = sorted(_CONFIG_KEYS - set(config)), sorted(set(config) - _CONFIG_KEYS - _OPTIONAL_KEYS)
        raise ValueError(f"keys differ from format v1: missing {missing}, unexpected {extra}")
    if config.get("soft_labels", True) is not True:
        raise ValueError(f"'soft_labels' must be true when present, got {config['soft_labels']!r}")
    for key in ("image_shape", "basis_shape"):
        shape = config[key]
        if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(s) for s in shape)):
            raise ValueError(f"{key!r} must be [channels, height, width], got {shape!r}")
        if not (1 <= shape[0] <= MAX_CHANNELS and 1 <= shape[1] <= MAX_SIDE and 1 <= shape[2] <= MAX_SIDE):
            raise ValueError(f"{key!r} {shape} is beyond the limits ({MAX_CHANNELS} channels, {MAX_SIDE} pixels)")
    _check_int(config, "num_bases", 1, MAX_BASES)
    classes = config["classes"]
    if not (isinstance(classes, list) and 1 <= len(classes) <= MAX_CLASSES and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"'classes' must be a list of 1 to {MAX_CLASSES} names")
    if len(set(classes)) != len(classes):
        raise ValueError("'classes' has duplicate names")
    hall = config["hallucinators"]
    if not (isinstance(hall, dict) and set(hall) == {"architecture", "count", "options"} and isinstance(hall["options"], dict)):
        raise ValueError("'hallucinators' must be {architecture, count, options}")
    if hall["architecture"] not in list_hallucinators():
        raise ValueError(f"unknown hallucinator architecture {hall['architecture']!r} (known: {', '.join(list_hallucinators())})")
    _check_int(hall, "count", 1, MAX_HALLUCINATORS, where="hallucinators.")
    prep = config["preprocessing"]
    if not isinstance(prep, dict) or prep.get("kind") not in list_preprocessings():
        raise ValueError(f"unknown preprocessing {prep!r} (known kinds: {', '.join(list_preprocessings())})")
    preprocessing_class(prep["kind"]).check_config(prep, tuple(config["image_shape"]))
    lr = config["learned_lr"]
    if lr is not None and not finite_in_float32(lr, positive=True):
        raise ValueError(f"'learned_lr' must be null or a positive number in float32's range, got {lr!r}")
    if not isinstance(config["provenance"], dict):
        raise ValueError("'provenance' must be an object")
    files = config["files"]
    needed = {FACTORS} | ({PREPROCESSING} if preprocessing_class(prep["kind"]).tensor_shapes(prep, tuple(config["image_shape"])) else set())
    if not isinstance(files, dict) or set(files) != needed:
        raise ValueError(f"'files' must describe exactly {sorted(needed)}")
    for name, entry in files.items():
        if not (isinstance(entry, dict) and set(entry) == {"sha256", "size"} and _is_int(entry["size"])
                and isinstance(entry["sha256"], str) and len(entry["sha256"]) == 64):
            raise ValueError(f"'files.{name}' must be {{sha256: 64 hex digits, size: int}}")
    try:
        specs = {FACTORS: factor_shapes(config)}
    except (TypeError, ValueError) as err:
        raise ValueError(f"'hallucinators' do not fit the shapes: {err}") from None
    if PREPROCESSING in files:
        shapes = preprocessing_class(prep["kind"]).tensor_shapes(prep, tuple(config["image_shape"]))
        specs[PREPROCESSING] = {k: (shape, torch.float32) for k, shape in shapes.items()}
    d = math.prod(config["image_shape"])  # the largest a free (None) dimension may be: a ZCA keeps K <= D
    for name, tensors in specs.items():
        values = sum(math.prod(s or 1 for s in shape) for shape, _ in tensors.values())
        if values > MAX_VALUES_PER_FILE:
            raise ValueError(f"{name} would hold {values:,} values, more than the {MAX_VALUES_PER_FILE:,} allowed")
        most = 8 + 1024 + 512 * len(tensors)  # the header: names, dtypes, shapes and offsets as JSON
        most += sum(math.prod(d if s is None else s for s in shape) * dtype.itemsize for shape, dtype in tensors.values())
        if not 8 < files[name]["size"] <= most:
            raise ValueError(f"'files.{name}.size' is {files[name]['size']:,} bytes, but the tensors described "
                             f"here take at most {most:,}")  # fmt: skip


def hallucinators_for(config: dict) -> HallucinatorBank:
    """The hallucinator bank ``config`` describes, on the meta device (shapes only, no memory)."""
    hall = config["hallucinators"]
    return create_hallucinators(
        hall["architecture"], hall["count"], tuple(config["basis_shape"]), tuple(config["image_shape"]),
        device="meta", **hall["options"],
    )  # fmt: skip


def factor_shapes(config: dict) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor ``factors.safetensors`` must hold."""
    n = config["num_bases"]
    bank = hallucinators_for(config)
    specs = {"bases": ((n, *config["basis_shape"]), torch.float32), "labels": ((n,), torch.int64)}
    if config.get("soft_labels"):
        specs["soft_labels"] = ((n, len(config["classes"])), torch.float32)
    specs.update({f"hallucinators.{k}": (tuple(v.shape), v.dtype) for k, v in bank.state_dict().items()})
    return specs


def read_tensors(folder: Path, name: str, config: dict, specs: dict[str, tuple[tuple[int | None, ...], torch.dtype]]) -> dict[str, torch.Tensor]:
    """Read ``folder/name`` after checking its size, checksum, header, shapes (None: any size) and
    dtypes; reject NaN/inf."""
    path = Path(folder) / name
    entry = config["files"][name]
    if not path.is_file():
        raise FormatError(f"{path}: missing")
    size = path.stat().st_size
    if size != entry["size"]:
        raise FormatError(f"{path}: {size} bytes but config.json records {entry['size']} (truncated or replaced?)")
    read_safetensors(path, specs, rows=slice(0, 0))  # header, names, shapes, dtypes and length: before hashing
    if _sha256(path) != entry["sha256"]:
        raise FormatError(f"{path}: checksum differs from config.json (corrupted file)")
    return read_safetensors(path, specs)


def read_safetensors(path: Path, specs: dict[str, tuple[tuple[int | None, ...], torch.dtype]], *,
                     rows: slice | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """The tensors ``specs`` names (shape, None = any size; dtype) from ``path``, header checked before
    any data is read; NaN/inf rejected. ``rows`` reads only those rows of each tensor."""
    if not path.is_file():
        raise FormatError(f"{path}: missing")
    try:
        with safe_open(path, framework="pt") as f:
            if set(f.keys()) != set(specs):
                raise FormatError(f"{path}: holds tensors {sorted(f.keys())}, expected {sorted(specs)}")
            for key, (shape, dtype) in specs.items():
                sl = f.get_slice(key)
                got = sl.get_shape()
                fits = len(got) == len(shape) and all(s in (None, g) for s, g in zip(shape, got))
                if not fits or _DTYPES.get(sl.get_dtype()) != dtype:
                    expected = ["any" if s is None else s for s in shape]
                    raise FormatError(f"{path}: tensor {key!r} is {sl.get_dtype()} {got}, expected {dtype} {expected}")
            tensors = {key: f.get_tensor(key) if rows is None else f.get_slice(key)[rows] for key in specs}
    except SafetensorError as err:
        raise FormatError(f"{path}: not a valid safetensors file ({err})") from None
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise FormatError(f"{path}: tensor {key!r} contains NaN or inf")
    return tensors


def read_factors(folder: Path, config: dict) -> dict[str, torch.Tensor]:
    """The validated tensors of ``factors.safetensors`` (labels checked against the classes, soft
    labels to be probabilities)."""
    tensors = read_tensors(folder, FACTORS, config, factor_shapes(config))
    labels = tensors["labels"]
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < len(config["classes"])):
        raise FormatError(f"{Path(folder) / FACTORS}: labels outside [0, {len(config['classes'])})")
    if "soft_labels" in tensors:
        try:
            check_soft_labels(tensors["soft_labels"])
        except ValueError as err:
            raise FormatError(f"{Path(folder) / FACTORS}: {err}") from None
    return tensors


def check_soft_labels(soft: torch.Tensor) -> None:
    """Raise ``ValueError`` unless every row of ``soft`` is a probability distribution."""
    if not bool(torch.isfinite(soft).all()) or (soft.numel() and float(soft.min()) < 0):
        raise ValueError("soft labels must be finite and non-negative (probabilities, not logits)")
    sums = soft.double().sum(1)
    if sums.numel() and float((sums - 1).abs().max()) > SOFT_LABEL_TOLERANCE:
        raise ValueError(f"every row of soft labels must sum to 1 (within {SOFT_LABEL_TOLERANCE}); a row sums to "
                         f"{float(sums[(sums - 1).abs().argmax()]):.6g}")  # fmt: skip


def read_preprocessing(folder: Path, config: dict) -> Preprocessing:
    """Build the preprocessing described by ``config`` (reading its tensor file when it has one)."""
    prep = config["preprocessing"]
    cls = preprocessing_class(prep["kind"])
    shapes = cls.tensor_shapes(prep, tuple(config["image_shape"]))
    tensors = read_tensors(folder, PREPROCESSING, config, {k: (s, torch.float32) for k, s in shapes.items()}) if shapes else {}
    try:
        return cls.from_config(prep, tensors)
    except ValueError as err:
        raise FormatError(f"{Path(folder) / PREPROCESSING}: {err}") from None


def is_dataset_file(path: str) -> bool:
    """Whether a path in a published repo belongs to the dataset (rather than to its owner)."""
    return path in (CONFIG, FACTORS, PREPROCESSING, CARD, PREVIEW) or path.startswith("data/")


def file_entry(data: bytes) -> dict:
    """The ``files`` entry of config.json for a file with these bytes."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


#: The files ``save_pretrained`` owns in a dataset folder (anything else there is left alone).
OWNED = (FACTORS, PREPROCESSING, CARD, CONFIG)  # installed in this order: config.json last
#: Where a save stages its files, inside the dataset folder (see :func:`write_dataset`).
STAGING = ".haba-save"
_MANIFEST = "manifest.json"


def write_dataset(folder: Path, files: dict[str, bytes]) -> None:
    """Make ``files`` (a subset of :data:`OWNED`) the dataset in ``folder``, replacing only the
    files the format owns; anything else in the folder (a ``.git/``, ``data/``, notes) is kept.

    Protocol: the files are written and fsynced into ``folder/.haba-save/``; then a manifest
    naming what to install and which owned files to remove is written there (the commit point);
    then each file is renamed into place, config.json last, and the staging folder removed. An
    interrupted save is finished (manifest present) or discarded (no manifest) by the next save or
    load of the folder (:func:`recover`), so the folder never stays a mix of two datasets.
    Refuses a folder holding owned files that is not a factorized dataset.
    """
    folder = Path(folder)
    if unknown := set(files) - set(OWNED):
        raise ValueError(f"not files of the format: {sorted(unknown)}")
    folder.mkdir(parents=True, exist_ok=True)
    recover(folder)
    if any((folder / name).exists() for name in OWNED) and not _is_dataset(folder):
        raise FileExistsError(f"{folder}: holds {', '.join(n for n in OWNED if (folder / n).exists())} but is not a "
                              "factorized dataset folder; refusing to replace them")  # fmt: skip
    staging = folder / STAGING
    staging.mkdir()
    try:
        for name, data in files.items():
            _write_synced(staging / name, data)
        manifest = {"install": [n for n in OWNED if n in files], "remove": [n for n in OWNED if n not in files]}
        _write_synced(staging / f"{_MANIFEST}.tmp", json.dumps(manifest).encode())
        os.replace(staging / f"{_MANIFEST}.tmp", staging / _MANIFEST)  # committed from here on
        _fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _install(folder)


def recover(folder: Path) -> None:
    """Finish (manifest written) or discard (no manifest) a save of ``folder`` that was interrupted."""
    staging = Path(folder) / STAGING
    if not staging.is_dir():
        return
    if (staging / _MANIFEST).is_file():
        _install(Path(folder))
    else:
        shutil.rmtree(staging)


def _install(folder: Path) -> None:
    staging = folder / STAGING
    manifest = json.loads((staging / _MANIFEST).read_text(encoding="utf-8"))
    for name in manifest["install"]:
        if (staging / name).exists():  # absent: installed before an interruption
            os.replace(staging / name, folder / name)
    for name in manifest["remove"]:
        (folder / name).unlink(missing_ok=True)
    _fsync_dir(folder)
    shutil.rmtree(staging)


def _is_dataset(folder: Path) -> bool:
    try:
        return json.loads((folder / CONFIG).read_text(encoding="utf-8")).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_file(path: Path, data: bytes) -> None:
    """Write one file atomically: a temporary sibling, flushed, then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp's 0o600 -> what open() would create (0o666 less the umask)
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(d: dict, key: str, low: int, high: int, where: str = "") -> None:
    if not (_is_int(d[key]) and low <= d[key] <= high):
        raise ValueError(f"'{where}{key}' must be an int in [{low}, {high}], got {d[key]!r}")
