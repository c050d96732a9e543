"""Training and testing networks on (distilled) data, and the literature's evaluation protocol.

:func:`evaluate` trains fresh networks on a training set (a ``FactorizedDataset`` or any dataset
of ``(image, label)``) with :class:`Protocol` (section 8 of the method notes: SGD momentum 0.9,
weight decay 5e-4, lr x 0.1 at half the epochs, DSA on every batch) and tests them on real data
in the same preprocessing. The reported number is the test accuracy after the LAST epoch; the
validation split only draws curves (no model or epoch is chosen with the test set).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .augment import DSA
from .data import REAL_DATASETS, RealData, Split, load_real
from .errors import HabaError
from .factorized import FactorizedDataset
from .fileformat import write_file
from .nets import create_net
from .preprocessing import Preprocessing
from .progress import progress_bar
from .viz import new_figure, save_png

__all__ = [
    "EvaluationData", "Protocol", "Report", "RunResult", "SettingError", "accuracy", "as_dataset", "diverged", "evaluate",
    "load_evaluation_data", "real_eval_sets", "recorded_setting", "train_and_test", "train_epoch",
]


@dataclass(frozen=True)
class Protocol:
    """How networks are trained on distilled data (defaults: the literature's protocol)."""

    epochs: int = 1000
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_at: float = 0.5  # the lr is multiplied by 0.1 from this fraction of the epochs on
    dsa: bool = True
    curve_points: int = 10  # validation accuracy measured this many times per run

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {self}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``."""
        return self.lr * (0.1 if epoch >= int(self.epochs * self.decay_at) else 1.0)


@dataclass
class RunResult:
    seed: int
    test_accuracy: float
    val_accuracy: float | None
    curve: list[dict] = field(default_factory=list)  # per epoch: epoch, lr, loss, train_accuracy[, val_accuracy]
    diverged: bool = False  # the training loss turned non-finite or grew (see :func:`diverged`)


def diverged(losses: list[float]) -> bool:
    """Whether training failed: a non-finite loss, or a mean loss over the last 10% of the epochs
    above that of the first 5% (training on a fixed set should lower it; a learning rate too large
    for the network makes it grow instead)."""
    if not all(math.isfinite(x) for x in losses):
        return True
    head, tail = losses[: max(1, len(losses) // 20)], losses[-max(1, len(losses) // 10):]
    return len(losses) > 1 and statistics.fmean(tail) > statistics.fmean(head)


@dataclass
class Report:
    """Runs of one evaluation; ``mean``/``std`` (population, as in the literature) of the test
    accuracy of the runs that trained (diverged runs are listed, never averaged in; NaN when
    every run diverged)."""

    setting: dict
    runs: list[RunResult]
    seconds: float

    @property
    def accuracies(self) -> list[float]:
        """Test accuracy of every run that did not diverge."""
        return [r.test_accuracy for r in self.runs if not r.diverged]

    @property
    def diverged_seeds(self) -> list[int]:
        return [r.seed for r in self.runs if r.diverged]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies) if self.accuracies else math.nan

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if self.accuracies else math.nan

    def __str__(self) -> str:
        if not self.accuracies:
            return f"diverged in every one of {len(self.runs)} run(s) (lr {self.setting.get('protocol', {}).get('lr')})"
        note = f"; {len(self.diverged_seeds)} more diverged (seeds {self.diverged_seeds}), left out" if self.diverged_seeds else ""
        soft = ", trained on SOFT labels" if self.setting.get("labels") == "soft" else ""
        return f"test accuracy {100 * self.mean:.2f} +- {100 * self.std:.2f} % over {len(self.accuracies)} run(s){soft}{note}"

    def to_json(self) -> dict:
        vals = [r.val_accuracy for r in self.runs if r.val_accuracy is not None and not r.diverged]
        finite = bool(self.accuracies)
        return {
            **self.setting,
            "test_accuracy": {"mean": self.mean if finite else None, "std": self.std if finite else None,
                              "runs": self.accuracies, "diverged_seeds": self.diverged_seeds},  # fmt: skip
            "val_accuracy": {"mean": statistics.fmean(vals), "runs": vals} if vals else None,
            "seconds": self.seconds,
            "runs": [_finite(asdict(r)) for r in self.runs],
        }

    @classmethod
    def from_json(cls, data: dict) -> Report:
        """The report :meth:`to_json` wrote (null losses read back as NaN)."""
        setting = {k: v for k, v in data.items() if k not in ("test_accuracy", "val_accuracy", "seconds", "runs")}
        runs = [RunResult(**{**r, "curve": [{k: math.nan if v is None else v for k, v in p.items()} for p in r["curve"]]})
                for r in data["runs"]]  # fmt: skip
        return cls(setting, runs, data["seconds"])

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``report.json`` and ``curves.png`` (loss and validation accuracy per epoch)."""
        report = Path(folder) / "report.json"
        write_file(report, (json.dumps(self.to_json(), indent=2) + "\n").encode())
        return report, self._plot(report.parent / "curves.png")

    def _plot(self, path: Path) -> Path:
        fig = new_figure(figsize=(10, 4))
        ax_loss, ax_acc = fig.subplots(1, 2)
        for run in self.runs:
            epochs = [p["epoch"] for p in run.curve]
            window = max(1, len(epochs) // 50)  # running means: one small batch per epoch is noisy
            ax_loss.plot(epochs, _running_mean([p["loss"] for p in run.curve], window), label=f"seed {run.seed}", linewidth=1)
            ax_acc.plot(epochs, _running_mean([p["train_accuracy"] for p in run.curve], window), linewidth=0.5, alpha=0.5)
            val = [(p["epoch"], p["val_accuracy"]) for p in run.curve if "val_accuracy" in p]
            if val:
                ax_acc.plot(*zip(*val), marker="o", label=f"val, seed {run.seed}")
        ax_loss.set(xlabel="epoch", ylabel=f"training loss (running mean of {window})", yscale="log",
                    title=self.setting.get("train", ""))  # fmt: skip
        ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="train (thin, running mean) and validation accuracy")
        for ax in (ax_loss, ax_acc):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        return save_png(fig, path)


def _finite(record: dict) -> dict:
    """A run's record with non-finite losses as null (report.json is strict JSON)."""
    curve = [{k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in p.items()} for p in record["curve"]]
    return {**record, "curve": curve}


def _running_mean(values: list[float], window: int) -> list[float]:
    sums = torch.tensor([0.0, *values], dtype=torch.float64).cumsum(0)
    starts = torch.arange(len(values)).sub(window - 1).clamp(min=0)
    ends = torch.arange(1, len(values) + 1)
    return ((sums[ends] - sums[starts]) / (ends - starts)).tolist()


def as_dataset(split: Split, preprocessing: Preprocessing, batch: int = 2048) -> TensorDataset:
    """A real split as a ``TensorDataset`` of float images in ``preprocessing``'s space."""
    images = torch.cat([preprocessing(chunk.float().div(255)) for chunk in split.images.split(batch)]) if len(split) else split.images.float()
    return TensorDataset(images, split.labels)


def real_eval_sets(real: RealData, preprocessing: Preprocessing) -> tuple[TensorDataset, TensorDataset]:
    """The validation and test splits of ``real`` in ``preprocessing``'s space."""
    return as_dataset(real.val, preprocessing), as_dataset(real.test, preprocessing)


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    augment: DSA | None = None,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """One pass of cross-entropy training over ``loader`` (``augment`` applied to each batch);
    returns the mean loss and the training accuracy. Labels are class indices, or soft labels
    (rows of class probabilities: the soft cross-entropy, accuracy against their argmax)."""
    model.train()
    total, correct, count = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if augment is not None:
            images = augment(images, generator=generator)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * labels.shape[0]
        correct += (logits.argmax(1) == (labels if labels.dim() == 1 else labels.argmax(1))).sum().item()
        count += labels.shape[0]
    return total / max(count, 1), correct / max(count, 1)


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader, device: torch.device | str) -> float:
    """Fraction of correctly classified samples."""
    model.eval()
    correct, count = 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        correct += (model(images).argmax(1) == labels).sum().item()
        count += labels.shape[0]
    return correct / max(count, 1)


def train_and_test(
    train: Dataset,
    test: Dataset,
    *,
    num_classes: int,
    model: str = "ConvNet",
    protocol: Protocol = Protocol(),
    val: Dataset | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> RunResult:
    """Train a fresh ``model`` on ``train`` with ``protocol``; test on ``test`` after the last epoch.

    ``test`` and ``val`` hold real images already in the training data's preprocessing.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)  # network init and random pairing draws
    channels, height, _ = train[0][0].shape
    net = create_net(model, channels, num_classes, height).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)
    order = torch.Generator().manual_seed(seed)
    # Batch norm cannot normalise a batch of one image: when the last batch of an epoch would hold
    # a single image, that (shuffled, so each epoch another) image sits the epoch out.
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    if batch_norm and len(train) == 1:
        raise ValueError(f"{model} has batch norm, which cannot train on a single image")
    single_last = len(train) % protocol.batch_size == 1
    loader = DataLoader(train, batch_size=protocol.batch_size, shuffle=True, generator=order, drop_last=batch_norm and single_last)
    augment = DSA() if protocol.dsa else None
    draws = torch.Generator(device=device).manual_seed(seed)
    checks = {round(i * protocol.epochs / protocol.curve_points) - 1 for i in range(1, protocol.curve_points + 1)}
    curve, val_acc = [], None
    bar = progress_bar(range(protocol.epochs), desc=f"{model} seed {seed}", enabled=progress, leave=False)
    for epoch in bar:
        for group in optimizer.param_groups:
            group["lr"] = protocol.lr_at(epoch)
        loss, train_acc = train_epoch(net, loader, optimizer, device, augment, draws)
        point = {"epoch": epoch + 1, "lr": protocol.lr_at(epoch), "loss": loss, "train_accuracy": train_acc}
        if val is not None and epoch in checks:
            val_acc = point["val_accuracy"] = accuracy(net, DataLoader(val, batch_size=256), device)
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{val_acc:.3f}")
        curve.append(point)
        if not math.isfinite(loss):  # nothing more to learn: stop, report it
            break
    test_acc = accuracy(net, DataLoader(test, batch_size=256), device)  # faster than 1024 on CPU
    return RunResult(seed, test_acc, val_acc, curve, diverged([p["loss"] for p in curve]))


def evaluate(
    train: Dataset,
    test: Dataset,
    *,
    num_classes: int,
    model: str = "ConvNet",
    runs: int = 5,
    protocol: Protocol = Protocol(),
    val: Dataset | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    setting: dict | None = None,
    progress: bool = True,
) -> Report:
    """``runs`` independent :func:`train_and_test` runs (seeds ``seed .. seed + runs - 1``).

    The report's setting records ``labels``: ``"soft"`` when ``train`` has soft labels (its
    ``label_kind``), so soft-label results are never read as hard-label ones."""
    start = time.perf_counter()
    results = []
    for run in progress_bar(range(runs), desc="runs", enabled=progress):
        results.append(train_and_test(train, test, num_classes=num_classes, model=model, protocol=protocol,
                                      val=val, seed=seed + run, device=device, progress=progress))  # fmt: skip
    # CPU results are bit-identical across processes only for the same torch build and thread count
    environment = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    labels = getattr(train, "label_kind", "hard")
    info = {"model": model, "protocol": asdict(protocol), "seed": seed, "environment": environment, "labels": labels,
            **(setting or {})}  # fmt: skip
    return Report(info, results, time.perf_counter() - start)


class SettingError(HabaError, ValueError):
    """A setting that does not fit the data (``setting`` names it, e.g. ``"dataset"``)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


def recorded_setting(metrics, key: str) -> int | None:
    """A protocol setting (``runs``, ``epochs``) from a dataset's recorded metrics (downloaded JSON:
    checked), else None."""
    value = metrics.get(key) if isinstance(metrics, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100_000 else None


@dataclass
class EvaluationData:
    """What ``haba-datasets evaluate NAME`` trains on (``train``) and tests on, and what it knows of them."""

    name: str
    train: Dataset
    real: RealData
    preprocessing: Preprocessing
    val: Dataset
    test: Dataset
    setting: dict  # what the report records of the training data
    lr: float | None  # the lr asked for, else a factorized dataset's learned lr
    recorded: dict | None = None  # a factorized dataset's recorded metrics (downloaded JSON: unchecked)

    def runs(self, runs: int | None = None) -> int:
        """``runs`` if given, else the protocol recorded in the dataset's metrics, else 5."""
        return runs if runs is not None else recorded_setting(self.recorded, "runs") or 5

    def epochs(self, epochs: int | None = None) -> int:
        """``epochs`` if given, else the protocol recorded in the dataset's metrics, else 1000."""
        return epochs if epochs is not None else recorded_setting(self.recorded, "epochs") or 1000

    def evaluate(self, protocol: Protocol, *, runs: int | None = None, model: str = "ConvNet", seed: int = 0, device=None,
                 progress: bool = True) -> Report:  # fmt: skip
        """Train ``runs`` fresh ``model`` networks on :attr:`train` with ``protocol`` (see :func:`evaluate`)."""
        return evaluate(self.train, self.test, num_classes=len(self.real.classes), model=model, runs=self.runs(runs),
                        protocol=protocol, val=self.val, seed=seed, device=device, setting=self.setting,
                        progress=progress)  # fmt: skip

    def recorded_accuracy(self) -> str | None:
        """What the dataset's card records (``"56.31 +- 0.16 (3 runs x 500 epochs)"``), if anything."""
        recorded = self.recorded
        if not (isinstance(recorded, dict) and isinstance(recorded.get("test_accuracy"), (int, float))):
            return None
        std = recorded.get("test_accuracy_std")
        std = f" +- {100 * std:.2f}" if isinstance(std, (int, float)) else ""
        return f"{100 * recorded['test_accuracy']:.2f}{std} ({recorded.get('runs', '?')} runs x {recorded.get('epochs', '?')} epochs)"


def load_evaluation_data(name: str, *, dataset: str | None = None, ipc: int | None = None, preprocessing: str = "normalize",
                         seed: int = 0, lr: float | None = None, data_root: str | Path | None = None,
                         revision: str | None = None, device=None, pairing: str = "random",
                         soft_labels: bool = True) -> EvaluationData:  # fmt: skip
    """The training set ``name`` and the real data it is tested on.

    A real dataset's name (:data:`~haba_datasets.data.REAL_DATASETS`) trains on its whole training
    split, or on ``ipc`` random images per class, in ``preprocessing`` fitted on that split.
    Anything else is a factorized dataset (folder, Hub repo id or zoo name, ``revision``,
    ``pairing``, ``soft_labels``) tested on ``dataset`` (default: the real dataset its provenance
    names) in its own preprocessing, at ``lr`` or its learned lr. Raises :class:`SettingError` when
    no real dataset is known or its images have another shape.
    """
    recorded = None
    if name in REAL_DATASETS:
        real = load_real(name, data_root=data_root)
        prep = real.fit_preprocessing(preprocessing)
        train = as_dataset(real.train if ipc is None else real.subset(ipc, seed=seed), prep)
        what = f"{name} {'whole training split' if ipc is None else f'random real, IPC {ipc}'}"
        setting = {"train": what, "dataset": name, "ipc": ipc, "preprocessing": preprocessing}
    else:
        train = FactorizedDataset.from_pretrained(name, revision=revision, device=device, pairing=pairing,
                                                  soft_labels=soft_labels)  # fmt: skip
        dataset = dataset or train.provenance.get("dataset")
        if not isinstance(dataset, str):
            raise SettingError("dataset", "say which real dataset to test on (none recorded in the dataset)")
        real = load_real(dataset, data_root=data_root)
        if real.image_shape != train.hallucinators.image_shape:
            raise SettingError("dataset", f"{name} makes {train.hallucinators.image_shape} images, {dataset} has {real.image_shape}")
        prep = train.preprocessing
        setting = {"train": f"{name} ({len(train)} items, pairing {pairing})", "dataset": dataset,
                   "preprocessing": prep.kind, "learned_lr": train.learned_lr}  # fmt: skip
        lr = lr if lr is not None else train.learned_lr
        recorded = train.provenance.get("metrics")
    val, test = real_eval_sets(real, prep)
    return EvaluationData(name, train, real, prep, val, test, setting, lr, recorded)
