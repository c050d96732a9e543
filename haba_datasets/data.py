"""Real image-classification data: loaded through ``datasets``, decoded once, split, preprocessed.

:func:`load_real` turns a registered name (``"cifar10"``), a Hub dataset id or a local folder in
the Hub layout into uint8 tensors: train (minus a validation split carved with a fixed seed),
val and test. Decoded tensors are cached as safetensors keyed by the source's fingerprint, so
images are decoded once, not on every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .hub import HUB_CALL_ERRORS
from .fileformat import write_file
from .progress import progress_bar
from .registry import Registry
from .preprocessing import Preprocessing, create_preprocessing, preprocessing_class

__all__ = ["REAL_DATASETS", "RealData", "RealSpec", "Split", "list_real_datasets", "load_real", "register_real_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealSpec:
    """Where a registered dataset lives on the Hub and which columns hold the images and labels."""

    hub_id: str
    image: str
    label: str
    config: str | None = None
    folder: str | None = None  # its folder name under a local data root (default: the registry name)
    license: str = "unknown"  # as its Hub card states it; distilled data inherits it
    classes: tuple[str, ...] = ()  # the label column's names, in order (known without a download)
    image_shape: tuple[int, int, int] | None = None  # (channels, height, width)


_DIGITS = tuple("0123456789")
_CIFAR100 = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
    camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch cra crocodile cup dinosaur dolphin
    elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man
    maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
    plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail
    snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout
    tulip turtle wardrobe whale willow_tree wolf woman worm""".split())  # as the Hub repo spells them ("cra")
#: Registered real datasets. ``data_root / (spec.folder or name)`` is tried before the Hub.
REAL_DATASETS: Registry = Registry("real dataset", {
    "cifar10": RealSpec("uoft-cs/cifar10", "img", "label", "plain_text", image_shape=(3, 32, 32), classes=(
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "cifar100": RealSpec("uoft-cs/cifar100", "img", "fine_label", classes=_CIFAR100, image_shape=(3, 32, 32)),
    "fashion_mnist": RealSpec("zalando-datasets/fashion_mnist", "image", "label", license="mit", image_shape=(1, 28, 28),
                              classes=("T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                       "Sneaker", "Bag", "Ankle boot")),
    "mnist": RealSpec("ylecun/mnist", "image", "label", license="mit", classes=_DIGITS, image_shape=(1, 28, 28)),
    "svhn": RealSpec("ufldl-stanford/svhn", "image", "label", "cropped_digits", license="other", classes=_DIGITS,
                     image_shape=(3, 32, 32)),
})  # fmt: skip


def register_real_dataset(name: str, spec: RealSpec) -> RealSpec:
    """Make ``name`` a real dataset that :func:`load_real` reads (from ``data_root / (spec.folder or name)``
    or the Hub repo ``spec.hub_id``)."""
    return REAL_DATASETS.register(name)(spec)


def list_real_datasets() -> list[str]:
    """Names of the registered real datasets (:func:`load_real` loads one)."""
    return REAL_DATASETS.names()


#: Fraction of each class's training images held out for validation (model selection).
VAL_FRACTION = 0.1
SPLIT_SEED = 0


@dataclass
class Split:
    """uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def floats(self) -> torch.Tensor:
        """Images as float32 in [0, 1]."""
        return self.images.float().div_(255)


@dataclass
class RealData:
    """A real dataset as tensors: ``train`` (validation rows removed), ``val`` and ``test``."""

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def subset(self, ipc: int, *, seed: int = 0) -> Split:
        """``ipc`` random training images per class (a class with fewer gives all it has)."""
        generator = torch.Generator().manual_seed(seed)
        keep = []
        for c in range(len(self.classes)):
            members = (self.train.labels == c).nonzero().flatten()
            keep.append(members[torch.randperm(len(members), generator=generator)[:ipc]])
        index = torch.cat(keep)
        return Split(self.train.images[index], self.train.labels[index])

    def fit_preprocessing(self, kind: str, *, eps: float = 0.1) -> Preprocessing:
        """A registered preprocessing ``kind`` (see ``list_preprocessings``: identity, normalize's
        per-channel mean/std, zca) fitted on the train split."""
        images = self.train.floats() if preprocessing_class(kind).fits_images else None
        return create_preprocessing(kind, images, eps=eps)


def load_real(
    name_or_path: str | Path,
    *,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    val_fraction: float = VAL_FRACTION,
) -> RealData:
    """Load a real dataset as tensors.

    ``name_or_path``: a name in :data:`REAL_DATASETS` (read from ``data_root/<name>`` when that
    folder exists, else from its Hub repo), a Hub dataset id or a local folder in the Hub layout
    (then the image and label columns are the first ``Image`` and ``ClassLabel`` features).
    ``data_root`` defaults to ``$HABA_DATA_ROOT``; ``cache_dir`` to ``$HABA_DATASETS_CACHE`` or
    ``~/.cache/haba-datasets``. The validation split holds ``val_fraction`` of every class,
    chosen with a fixed seed. Without the ``datasets`` package (a bare GPU image), a local folder
    is read with pyarrow and PIL instead (not cached).
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    name = str(name_or_path)
    spec = REAL_DATASETS.get(name)
    data_root = data_root or os.environ.get("HABA_DATA_ROOT")
    source = name if spec is None else spec.hub_id
    if spec is not None and data_root and (Path(data_root) / (spec.folder or name)).is_dir():
        source = str(Path(data_root) / (spec.folder or name))
    try:
        import datasets
    except ImportError:
        if not Path(source).is_dir():
            raise FileNotFoundError(f"{source!r}: without the datasets package only local folders can be read") from None
        classes, (train, test) = _parquet_folder(Path(source), spec)
        return _real_data(name, spec, source, classes, train, test, val_fraction)
    try:
        with _quiet_datasets():
            splits = datasets.load_dataset(source, spec.config if spec else None)
    except (*HUB_CALL_ERRORS, ValueError) as err:  # missing files or repo, bad config name, network: say what was tried
        tried = f"{source!r}" + ("" if spec is None or data_root else " (set data_root or HABA_DATA_ROOT for a local copy)")
        raise FileNotFoundError(f"could not load real dataset {name!r} from {tried}: {err}") from err
    missing = {"train", "test"} - set(splits)
    if missing:
        raise ValueError(f"{source}: needs train and test splits, has {sorted(splits)}")
    image_col, label_col = _columns(splits["train"], spec, source)
    classes = list(splits["train"].features[label_col].names)
    cache = Path(cache_dir or os.environ.get("HABA_DATASETS_CACHE") or Path.home() / ".cache" / "haba-datasets")
    train, test = (_decoded(splits[s], image_col, label_col, cache, f"{Path(name).name}-{s}") for s in ("train", "test"))
    return _real_data(name, spec, source, classes, train, test, val_fraction)


def _real_data(name: str, spec: RealSpec | None, source: str, classes: list[str], train: Split, test: Split,
               val_fraction: float) -> RealData:  # fmt: skip
    """The loaded splits, checked against what the registry says of a registered dataset."""
    if spec is not None and spec.classes and tuple(classes) != spec.classes:
        raise ValueError(f"{source}: class names {classes[:3]}... are not those registered for {name} "
                         f"{list(spec.classes[:3])}...; is it a copy of {spec.hub_id}?")  # fmt: skip
    if spec is not None and spec.image_shape and tuple(train.images.shape[1:]) != spec.image_shape:
        raise ValueError(f"{source}: images of shape {tuple(train.images.shape[1:])}, {name} has {spec.image_shape}")
    train, val = _carve(train, len(classes), val_fraction)
    return RealData(Path(name).name if spec is None else name, classes, train, val, test)


def _columns(split, spec: RealSpec | None, source: str) -> tuple[str, str]:
    import datasets

    features = split.features
    if spec is not None:
        cols = (spec.image, spec.label)
    else:
        images = [k for k, f in features.items() if isinstance(f, datasets.Image)]
        labels = [k for k, f in features.items() if isinstance(f, datasets.ClassLabel)]
        cols = (images[0] if images else None, labels[0] if labels else None)
    if cols[0] not in features or not isinstance(features.get(cols[1]), datasets.ClassLabel):
        raise ValueError(f"{source}: expected an image column and a ClassLabel column, found {dict(features)}")
    return cols


def _decoded(split, image_col: str, label_col: str, cache: Path, stem: str, batch: int = 1000) -> Split:
    """The split as uint8 tensors, decoded once and cached under ``cache`` by fingerprint."""
    key = hashlib.sha256(f"{split._fingerprint}:{image_col}:{label_col}".encode()).hexdigest()[:16]
    path = cache / f"{stem}-{key}.safetensors"
    if path.is_file():
        tensors = load_file(path)
        return Split(tensors["images"], tensors["labels"])
    chunks = []
    rows = split.select_columns([image_col]).with_format("numpy")
    for start in progress_bar(range(0, len(split), batch), desc=f"decoding {stem}", unit_scale=batch, leave=False):
        array = torch.from_numpy(rows[start:start + batch][image_col])
        chunks.append(array.unsqueeze(1) if array.dim() == 3 else array.permute(0, 3, 1, 2))
    images = torch.cat(chunks).contiguous()
    labels = torch.tensor(split[label_col], dtype=torch.int64)
    write_file(path, safetensors_bytes({"images": images, "labels": labels}))  # never a half-written cache file
    return Split(images, labels)


@contextlib.contextmanager
def _quiet_datasets():
    """``datasets``' own bars follow this library's conventions: off when TQDM_DISABLE is set or stderr
    is not a terminal (its setting is restored afterwards)."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = bool(os.environ.get("TQDM_DISABLE")) or not sys.stderr.isatty()
    was_disabled = are_progress_bars_disabled()
    if quiet and not was_disabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if quiet and not was_disabled:
            enable_progress_bars()


def _parquet_folder(folder: Path, spec: RealSpec | None) -> tuple[list[str], tuple[Split, Split]]:
    """The train and test splits of a local Hub-layout folder, read with pyarrow and decoded with PIL."""
    import io

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    classes, splits = None, []
    for split in ("train", "test"):
        files = sorted(folder.rglob(f"{split}-*.parquet"))
        if not files:
            raise FileNotFoundError(f"{folder}: no {split}-*.parquet file")
        images, labels = [], []
        for file in files:
            table = pq.read_table(file)
            features = json.loads((table.schema.metadata or {}).get(b"huggingface", b"{}")).get("info", {}).get("features", {})
            kinds = {key: (f.get("_type") if isinstance(f, dict) else None) for key, f in features.items()}
            image_col = spec.image if spec else next((k for k, t in kinds.items() if t == "Image"), None)
            label_col = spec.label if spec else next((k for k, t in kinds.items() if t == "ClassLabel"), None)
            if kinds.get(image_col) != "Image" or kinds.get(label_col) != "ClassLabel":
                raise ValueError(f"{file}: expected an image column and a ClassLabel column, found {kinds}")
            classes = list(features[label_col]["names"])
            for cell in table.column(image_col).to_pylist():
                images.append(torch.from_numpy(np.array(Image.open(io.BytesIO(cell["bytes"])))))
            labels += table.column(label_col).to_pylist()
        x = torch.stack(images)
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
        splits.append(Split(x.contiguous(), torch.tensor(labels, dtype=torch.int64)))
    return classes, (splits[0], splits[1])


def _carve(train: Split, num_classes: int, fraction: float) -> tuple[Split, Split]:
    """Hold out ``fraction`` of every class (fixed seed) as the validation split."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    val = []
    for c in range(num_classes):
        members = (train.labels == c).nonzero().flatten()
        val.append(members[torch.randperm(len(members), generator=generator)[: round(fraction * len(members))]])
    val_index = torch.cat(val).sort().values
    mask = torch.ones(len(train), dtype=torch.bool)
    mask[val_index] = False
    return Split(train.images[mask], train.labels[mask]), Split(train.images[val_index], train.labels[val_index])
