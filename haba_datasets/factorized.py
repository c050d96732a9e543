"""`FactorizedDataset`: a torch Dataset whose images are synthesised from bases and hallucinators."""

from __future__ import annotations

import functools
import math
import operator
from collections import Counter
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from huggingface_hub import CommitInfo
from PIL import Image
from torch.utils.data import TensorDataset
from torchvision.datasets import VisionDataset
from torchvision.transforms import v2

from . import fileformat, hub
from .card import dataset_card
from .hallucinators import HallucinatorBank
from .preprocessing import Identity, Preprocessing
from .viz import factor_grid, png_bytes, save_png, to_pil

__all__ = ["FactorizedDataset", "Pairing", "StorageReport"]

Pairing = Literal["all", "random"]


@dataclass(frozen=True)
class StorageReport:
    """Stored values of a factorized dataset against plain images.

    ``equivalent_ipc`` is how many full-size plain images per class fit in the same number of
    values: the figure to compare datasets by. ``budget_values`` is what one full-size image per
    basis would take (``images_per_class`` = bases per class), and ``ratio`` = total / budget (the
    paper's storage ratio: 1.906 for 1 basis per class + 5 hallucinators on CIFAR-10; below 1 when
    the bases are smaller than the images).
    """

    basis_values: int
    hallucinator_values: int
    images_per_class: float
    budget_values: int
    equivalent_ipc: float

    @property
    def total_values(self) -> int:
        return self.basis_values + self.hallucinator_values

    @property
    def ratio(self) -> float:
        return self.total_values / self.budget_values

    def __str__(self) -> str:
        return (
            f"{self.total_values:,} stored values ({self.basis_values:,} bases + {self.hallucinator_values:,} "
            f"hallucinators): the storage of {self.equivalent_ipc:.2f} images per class; {self.ratio:.3f}x the "
            f"{self.budget_values:,} values of one full-size image per basis ({self.images_per_class:g} per class)"
        )


class FactorizedDataset(VisionDataset):
    """A distilled dataset stored as bases and hallucinators; item ``(b, h)`` is ``h(bases[b])``.

    Args:
        bases: ``(N, C_b, H, W)`` float tensor (in model space, see ``preprocessing``).
        labels: ``(N,)`` integer class of each basis.
        hallucinators: a :class:`~haba_datasets.hallucinators.HallucinatorBank` of ``K`` members.
        classes: class names; ``labels`` index into them.
        preprocessing: the transform from real pixels to the model space of the images
            (default: identity). Kept on the CPU.
        pairing: ``"all"`` (default): ``len == N * K`` and index ``i`` is basis ``i // K`` with
            hallucinator ``i % K``. ``"random"``: the reference evaluation protocol, ``len == N``
            and index ``i`` is basis ``i`` with a hallucinator drawn at random on every access
            (from torch's global RNG: seed it with ``torch.manual_seed``; DataLoader workers get
            distinct streams).
        transform, target_transform: applied per item, as in torchvision.
        device: where bases and hallucinators live and images are synthesised (default: CUDA
            when available, else CPU). Tensors and the hallucinator module are moved, not copied.
        learned_lr: learning rate learned during distillation, if any (used for evaluation).
        provenance: JSON-serialisable description of how the dataset was made.
        soft_labels: optional ``(N, len(classes))`` probabilities per basis (e.g. a teacher's, as
            TESLA or DATM distil them). When given, an item's target is its basis's row (a float
            tensor, which ``torch.nn.functional.cross_entropy`` takes as class probabilities);
            ``labels`` stay the bases' classes (for grouping, grids and ``targets``).

    Items are ``(image, label)``: a float ``(C, H, W)`` tensor on ``device`` and an int (with
    soft labels: a float ``(len(classes),)`` tensor on ``device``).
    :meth:`__getitems__` synthesises a DataLoader batch in one vectorised call, without autograd;
    batched and per-item results agree up to float rounding (convolution kernels may sum in a
    different order for different batch sizes).
    """

    def __init__(
        self,
        bases: torch.Tensor,
        labels: torch.Tensor | Sequence[int],
        hallucinators: HallucinatorBank,
        classes: Sequence[str],
        *,
        preprocessing: Preprocessing | None = None,
        pairing: Pairing = "all",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        device: torch.device | str | None = None,
        learned_lr: float | None = None,
        provenance: dict | None = None,
        soft_labels: torch.Tensor | None = None,
    ) -> None:
        super().__init__(root=None, transform=transform, target_transform=target_transform)
        labels = torch.as_tensor(labels)
        classes = list(classes)
        if not isinstance(hallucinators, HallucinatorBank):
            raise TypeError(f"hallucinators must be a HallucinatorBank, got {type(hallucinators).__name__}")
        if not (isinstance(bases, torch.Tensor) and bases.is_floating_point() and bases.dim() == 4):
            raise ValueError("bases must be a (N, C, H, W) float tensor")
        if tuple(bases.shape[1:]) != hallucinators.basis_shape:
            raise ValueError(f"bases are {tuple(bases.shape[1:])} but the hallucinators take {hallucinators.basis_shape}")
        if labels.shape != bases.shape[:1] or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be {bases.shape[0]} integers, got {labels.dtype} {tuple(labels.shape)}")
        if not classes or len(set(classes)) != len(classes) or not all(isinstance(c, str) for c in classes):
            raise ValueError("classes must be a non-empty list of distinct names")
        if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < len(classes)):
            raise ValueError(f"labels must lie in [0, {len(classes)})")
        if pairing not in ("all", "random"):
            raise ValueError(f"pairing must be 'all' or 'random', got {pairing!r}")
        if learned_lr is not None and not (math.isfinite(learned_lr) and learned_lr > 0):
            raise ValueError(f"learned_lr must be a positive number, got {learned_lr!r}")
        if soft_labels is not None:
            if not (isinstance(soft_labels, torch.Tensor) and soft_labels.shape == (bases.shape[0], len(classes))):
                raise ValueError(f"soft_labels must be a ({bases.shape[0]}, {len(classes)}) tensor (bases x classes), "
                                 f"got {getattr(soft_labels, 'shape', type(soft_labels).__name__)}")  # fmt: skip
            soft_labels = soft_labels.detach().float()
            fileformat.check_soft_labels(soft_labels)
        self.classes = classes
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.pairing = pairing
        self.learned_lr = None if learned_lr is None else float(learned_lr)
        self.provenance = dict(provenance or {})
        self.bases = bases.detach().float()
        self.labels = labels.long()
        self.soft_labels = soft_labels
        self.hallucinators = hallucinators
        self._label_list = self.labels.tolist()
        self._preprocessing = Identity() if preprocessing is None else preprocessing
        self._load_preprocessing: Callable[[], Preprocessing] | None = None
        self.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    # -- torch Dataset protocol ------------------------------------------------------------------

    def __len__(self) -> int:
        n = self.bases.shape[0]
        return n * self.hallucinators.count if self.pairing == "all" else n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        return self.__getitems__([operator.index(index)])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int | torch.Tensor]]:
        """Synthesise the items at ``indices`` in one batched call (what DataLoader uses)."""
        basis, which = self.pairs(indices)
        with torch.no_grad():
            images = self.hallucinators(self.bases[basis.to(self.device)], which.to(self.device))
        if self.soft_labels is None:
            labels = [self._label_list[b] for b in basis.tolist()]
        else:
            labels = list(self.soft_labels[basis.to(self.device)].unbind(0))
        if self.transforms is not None:
            return [self.transforms(image, label) for image, label in zip(images, labels)]
        return list(zip(images.unbind(0), labels))

    def pairs(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(basis index, hallucinator index)`` CPU tensors of the items at ``indices``.

        Deterministic for ``pairing="all"``; draws the hallucinators for ``pairing="random"``.
        """
        n = len(self)
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if idx.numel() and not (-n <= int(idx.min()) and int(idx.max()) < n):
            raise IndexError(f"index out of range for a dataset of {n} items")
        idx = idx.remainder(n) if n else idx
        if self.pairing == "all":
            k = self.hallucinators.count
            return idx.div(k, rounding_mode="floor"), idx.remainder(k)
        return idx, torch.randint(self.hallucinators.count, idx.shape)

    @property
    def label_kind(self) -> str:
        """``"soft"`` when items carry soft labels, else ``"hard"``."""
        return "hard" if self.soft_labels is None else "soft"

    @property
    def targets(self) -> list[int]:
        """The class (hard label) of every item, in index order."""
        if self.pairing == "all":
            return [y for y in self._label_list for _ in range(self.hallucinators.count)]
        return list(self._label_list)

    @property
    def device(self) -> torch.device:
        return self.bases.device

    def to(self, device: torch.device | str) -> "FactorizedDataset":
        """Move bases, labels and hallucinators to ``device`` (in place; returns ``self``)."""
        device = torch.device(device)
        self.bases = self.bases.to(device)
        self.labels = self.labels.to(device)
        if self.soft_labels is not None:
            self.soft_labels = self.soft_labels.to(device)
        self.hallucinators.to(device)
        return self

    def replace(self, **changes) -> "FactorizedDataset":
        """A new dataset with the same fields as this one but ``changes`` (constructor keywords).

        Unchanged tensors and the hallucinator module are shared, not copied, and everything is
        validated again, as by the constructor.

        Example::

            rescaled = dataset.replace(hallucinators=dataset.hallucinators.with_options(normalize=True))
        """
        fields = dict(bases=self.bases, labels=self.labels, hallucinators=self.hallucinators, classes=self.classes,
                      preprocessing=self.preprocessing, pairing=self.pairing, transform=self.transform,
                      target_transform=self.target_transform, device=self.device, learned_lr=self.learned_lr,
                      provenance=self.provenance, soft_labels=self.soft_labels)  # fmt: skip
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise TypeError(f"replace() got unknown field(s) {unknown}; known: {sorted(fields)}")
        fields.update(changes)
        return FactorizedDataset(fields.pop("bases"), fields.pop("labels"), fields.pop("hallucinators"),
                                 fields.pop("classes"), **fields)  # fmt: skip

    # -- preprocessing ---------------------------------------------------------------------------

    @property
    def preprocessing(self) -> Preprocessing:
        """The model-space transform (read from disk on first access for loaded datasets)."""
        if self._load_preprocessing is not None:
            self._preprocessing, self._load_preprocessing = self._load_preprocessing(), None
        return self._preprocessing

    @property
    def real_transform(self) -> v2.Compose:
        """Torchvision transform turning a real PIL image (or uint8 tensor) into model space."""
        return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), self.preprocessing])

    # -- exports ---------------------------------------------------------------------------------

    def materialize(self, batch_size: int = 1024) -> TensorDataset:
        """Every ``(basis, hallucinator)`` image, in ``pairing="all"`` order, as a ``TensorDataset``
        of ``(images, labels)`` on this dataset's device (transforms are not applied; the labels
        are the soft labels' rows when the dataset has them)."""
        k = self.hallucinators.count
        flat = torch.arange(self.bases.shape[0] * k, device=self.device)
        with torch.no_grad():
            images = torch.cat(
                [self.hallucinators(self.bases[i // k], i % k) for i in flat.split(batch_size)]
            ) if flat.numel() else self.bases.new_empty((0, *self.hallucinators.image_shape))
        labels = self.labels if self.soft_labels is None else self.soft_labels
        return TensorDataset(images, labels.repeat_interleave(k, 0))

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Model-space images -> displayable pixels in [0, 1] on the CPU."""
        return self.preprocessing.inverse(images.detach().cpu()).clamp(0, 1)

    def to_hf_dataset(self):
        """Every image as a ``datasets.Dataset`` with ``image`` (PIL, pixel space) and ``label``
        (``ClassLabel``) columns, in ``pairing="all"`` order; with soft labels also ``soft_label``
        (the probabilities over ``classes``)."""
        import datasets

        images = self.materialize().tensors[0]
        k = self.hallucinators.count
        columns = {"image": [to_pil(p) for p in self.pixels(images)], "label": self.labels.repeat_interleave(k).tolist()}
        features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=self.classes)}
        if self.soft_labels is not None:
            columns["soft_label"] = self.soft_labels.repeat_interleave(k, 0).tolist()
            features["soft_label"] = datasets.Sequence(datasets.Value("float32"), length=len(self.classes))
        return datasets.Dataset.from_dict(columns, features=datasets.Features(features))

    def grid(self, *, max_bases_per_class: int = 10, scale: int = 2) -> Image.Image:
        """A picture of the dataset: a panel per class (one row per basis, one column per
        hallucinator, under the class name), the panels side by side in a near-square layout.
        Bases smaller than the images (multi-formation) come first in their row, enlarged."""
        k = self.hallucinators.count
        (basis_channels, *basis_size), (channels, *size) = self.hallucinators.basis_shape, self.hallucinators.image_shape
        show_bases = basis_size != size and basis_channels == channels
        rows = []
        for c, name in enumerate(self.classes):
            members = [i for i, y in enumerate(self._label_list) if y == c][:max_bases_per_class]
            if members:
                rows.append((name, torch.tensor(members, device=self.device)))
        if not rows:
            raise ValueError("the dataset has no bases to draw")
        chosen = torch.cat([m for _, m in rows])
        with torch.no_grad():
            images = self.hallucinators(
                self.bases[chosen].repeat_interleave(k, 0), torch.arange(k, device=self.device).repeat(len(chosen))
            ).unflatten(0, (len(chosen), k))
            if show_bases:
                bases = torch.nn.functional.interpolate(self.bases[chosen], size=size, mode="nearest")
                images = torch.cat([bases.unsqueeze(1), images], 1)
        columns = images.shape[1]
        return factor_grid(self.pixels(images.flatten(0, 1)), [(name, len(m)) for name, m in rows], columns=columns,
                           scale=scale)  # fmt: skip

    def save_grid(self, path: str | Path, *, max_bases_per_class: int = 10, scale: int = 2) -> Path:
        """Write :meth:`grid` as a PNG file (atomically)."""
        return save_png(self.grid(max_bases_per_class=max_bases_per_class, scale=scale), path)

    @property
    def storage(self) -> StorageReport:
        """How many values the dataset stores, against plain images (see :class:`StorageReport`)."""
        c, h, w = self.hallucinators.image_shape
        n_classes = len(self.classes)
        hall = sum(p.numel() for p in self.hallucinators.parameters())
        return StorageReport(
            basis_values=self.bases.numel(),
            hallucinator_values=hall,
            images_per_class=self.bases.shape[0] / n_classes,
            budget_values=self.bases.shape[0] * c * h * w,
            equivalent_ipc=(self.bases.numel() + hall) / (n_classes * c * h * w),
        )

    def extra_repr(self) -> str:
        counts = Counter(self._label_list)
        return "\n".join([
            f"Bases: {self.bases.shape[0]} x {tuple(self.bases.shape[1:])} ({min(counts.values(), default=0)}-"
            f"{max(counts.values(), default=0)} per class), classes: {len(self.classes)}",
            f"Hallucinators: {self.hallucinators.count} x {self.hallucinators.architecture} -> {self.hallucinators.image_shape}",
            f"Labels: {self.label_kind}, pairing: {self.pairing}, device: {self.device}",
            f"Storage: {self.storage.equivalent_ipc:.2f} images per class",
        ])  # fmt: skip

    # -- file format and the Hub -----------------------------------------------------------------

    def save_pretrained(
        self, folder: str | Path, *, push_to_hub: bool = False, repo_id: str | None = None, **push_kwargs
    ) -> Path:
        """Write the dataset as a format-v1 folder (see ``docs/format.md``).

        Only the format's files (config.json, the tensor files, README.md) are replaced; other
        files in ``folder`` are kept. An interrupted save is completed or rolled back by the next
        save or load, so the folder never holds a mix of two datasets.

        The folder is what :meth:`from_pretrained` reads, not a complete Hub repo: it lacks the
        parquet copy and the card's ``datasets`` loading metadata, so an upload of it by hand is
        not readable by ``datasets.load_dataset``. Publish it with :meth:`push_to_hub` (here:
        ``push_to_hub=True``, ``push_kwargs`` passed on) or ``haba-datasets push FOLDER user/name``.
        """
        if push_to_hub and repo_id is None:
            raise ValueError("push_to_hub=True needs repo_id='user/name'")
        config, files = self._format_files()
        files[fileformat.CARD] = dataset_card(config, self.storage).encode()
        fileformat.write_dataset(Path(folder), files)
        if push_to_hub:
            self.push_to_hub(repo_id, **push_kwargs)
        return Path(folder)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
    ) -> CommitInfo:
        """Publish to the Hub dataset repo ``repo_id`` (created if needed) in ONE commit.

        The commit holds the format-v1 files, a dataset card, ``preview.png`` (:meth:`grid`) and
        every image as parquet under ``data/`` (:meth:`to_hf_dataset`), so that
        ``datasets.load_dataset(repo_id)`` works without this library. Files of an earlier push
        that this one no longer has are removed in the same commit. Raises
        :class:`~haba_datasets.hub.HubError`; a failed push commits nothing.
        """
        config, files = self._format_files()
        rows = self.to_hf_dataset()
        buffer = BytesIO()
        rows.to_parquet(buffer)
        files[fileformat.DATA_FILE] = buffer.getvalue()
        files[fileformat.PREVIEW] = png_bytes(self.grid())
        export = {"path": fileformat.DATA_FILE, "num_examples": len(rows), "num_bytes": len(files[fileformat.DATA_FILE])}
        files[fileformat.CARD] = dataset_card(config, self.storage, repo_id=repo_id, export=export).encode()
        return hub.push_files(
            files, repo_id, owned=fileformat.is_dataset_file, private=private, token=token, revision=revision,
            commit_message=commit_message, create_pr=create_pr,
        )  # fmt: skip

    def _format_files(self) -> tuple[dict, dict[str, bytes]]:
        """The config and the bytes of the config and tensor files (no card)."""
        return fileformat.dataset_files(
            self.bases, self.labels, self.hallucinators, self.classes, self.preprocessing, learned_lr=self.learned_lr,
            provenance=self.provenance, soft_labels=self.soft_labels,
        )  # fmt: skip

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        device: torch.device | str | None = None,
        pairing: Pairing = "all",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        soft_labels: bool = True,
    ) -> "FactorizedDataset":
        """Load a factorized dataset from a local folder, a Hub dataset repo or the zoo.

        ``name_or_path`` is tried, in order, as a local folder written by :meth:`save_pretrained`;
        a zoo name (``"cifar10-ipc10"``, see ``haba_datasets.hub.ZOO``), served from the copy
        bundled with the package unless ``revision`` or ``force_download`` asks for its Hub repo;
        a Hub dataset repo id (``"user/name"``). Hub files go through ``huggingface_hub``'s cache
        (``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` apply; ``revision``, ``cache_dir``,
        ``force_download``, ``local_files_only`` and ``token`` are passed on). Every file the
        dataset needs (config, factors, preprocessing tensors) is downloaded before this returns,
        so the dataset then works offline; the card, preview and parquet copy are not downloaded.
        With no connection to the Hub at all, the cache is served (or the error comes at once).
        ``soft_labels=False`` trains on the bases' classes even when the dataset has soft labels.

        Everything is validated before tensors are built. A file that fails raises
        :class:`~haba_datasets.fileformat.FormatError` naming it (a Hub file is downloaded again once
        first); a dataset that cannot be found or fetched raises
        :class:`~haba_datasets.hub.HubError` saying what was tried.
        """
        source = hub.resolve(
            name_or_path, revision=revision, cache_dir=cache_dir, force_download=force_download,
            local_files_only=local_files_only, token=token,
        )  # fmt: skip
        if source.is_local:
            try:
                fileformat.recover(source.folder)
            except OSError as err:
                raise fileformat.FormatError(f"{source.folder}: an interrupted save could not be completed ({err})") from err
        config = source.read(fileformat.CONFIG, fileformat.read_config)
        source.fetch(config["files"])  # everything the dataset needs, now: it then works offline
        tensors = source.read(fileformat.FACTORS, lambda folder: fileformat.read_factors(folder, config))
        bank = fileformat.hallucinators_for(config)
        prefix = "hallucinators."
        bank.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, assign=True)
        has_file = fileformat.PREPROCESSING in config["files"]
        if has_file and source.is_local and not (source.folder / fileformat.PREPROCESSING).is_file():
            raise fileformat.FormatError(f"{source.folder / fileformat.PREPROCESSING}: missing")
        dataset = cls(
            tensors["bases"], tensors["labels"], bank, config["classes"],
            pairing=pairing, transform=transform, target_transform=target_transform, device=device,
            learned_lr=config["learned_lr"], provenance=config["provenance"],
            soft_labels=tensors.get("soft_labels") if soft_labels else None,
        )  # fmt: skip
        dataset.root = str(source.folder)
        read = functools.partial(fileformat.read_preprocessing, config=config)
        dataset._load_preprocessing = (
            functools.partial(source.read, fileformat.PREPROCESSING, read) if has_file else functools.partial(read, source.folder)
        )
        return dataset
