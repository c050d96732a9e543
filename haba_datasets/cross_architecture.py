"""Cross-architecture evaluation: one training set, several networks, each at a fitting learning rate.

A learned learning rate belongs to the network the data was distilled with; every other network
gets its own, chosen on the VALIDATION split from :data:`LR_GRID` (one short run per candidate;
runs that diverge are out). The same networks can be trained on random real images of the same
storage (:func:`random_real_baseline`), so the table shows the gain over real data side by side.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .data import RealData
from .evaluate import EvaluationData, Protocol, Report, SettingError, as_dataset, evaluate, train_and_test
from .fileformat import FormatError, read_json, write_file
from .preprocessing import Preprocessing
from .viz import new_figure, save_png

__all__ = [
    "LR_GRID", "CrossArchitectureReport", "NetworkResult", "card_summary", "choose_lr", "evaluate_across_architectures",
    "evaluate_networks", "evaluate_table", "image_scale", "random_real_baseline",
]

#: Learning rates tried on the validation split for a network that has none of its own.
LR_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)


@dataclass
class NetworkResult:
    """One network's evaluation and how its learning rate was chosen."""

    model: str
    lr: float | None  # None: it diverged at every candidate
    lr_source: str  # "learned" (the distillation's), "given" or "validation"
    lr_scores: dict[str, float | None]  # validation accuracy per candidate lr (None: diverged)
    report: Report | None

    @property
    def mean(self) -> float:
        return self.report.mean if self.report is not None else math.nan

    def to_json(self) -> dict:
        return {"model": self.model, "lr": self.lr, "lr_source": self.lr_source, "lr_scores": self.lr_scores,
                "report": None if self.report is None else self.report.to_json()}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> NetworkResult:
        report = None if data["report"] is None else Report.from_json(data["report"])
        return cls(data["model"], data["lr"], data["lr_source"], data["lr_scores"], report)


@dataclass
class CrossArchitectureReport:
    """Per-network results on the data, and on the random real baseline when asked for."""

    setting: dict
    distilled_with: str | None
    networks: list[NetworkResult]
    baseline: list[NetworkResult] | None = None

    def transfer_mean(self, results: list[NetworkResult] | None = None) -> float:
        """Mean accuracy over the networks other than the one the data was distilled with (NaN
        if one of them diverged everywhere)."""
        others = [r.mean for r in (results or self.networks) if r.model != self.distilled_with]
        return statistics.fmean(others) if others else math.nan

    def table(self) -> str:
        """A Markdown table: accuracy per network (and of the baseline, and the gain)."""
        head = "| network | lr | this dataset, test % |"
        rule = "|---|---|---|"
        if self.baseline is not None:
            head += " random real of the same storage, test % (lr) | gain |"
            rule += "---|---|"
        rows = [head, rule]
        base = {r.model: r for r in self.baseline or []}
        for r in self.networks:
            row = f"| {r.model}{' (distilled with)' if r.model == self.distilled_with else ''} | {_lr(r)} | {_cell(r)} |"
            if self.baseline is not None:
                b = base[r.model]
                row += f" {_cell(b)} ({_lr(b)}) | {_signed(r.mean - b.mean)} |"
            rows.append(row)
        if self.distilled_with is not None and len(self.networks) > 1:
            row = f"| mean of the other networks | | {_percent(self.transfer_mean())} |"
            if self.baseline is not None:
                other = self.transfer_mean(self.baseline)
                row += f" {_percent(other)} | {_signed(self.transfer_mean() - other)} |"
            rows.append(row)
        return "\n".join(rows)

    def to_json(self) -> dict:
        return {
            **self.setting,
            "distilled_with": self.distilled_with,
            "networks": [r.to_json() for r in self.networks],
            "baseline": None if self.baseline is None else [r.to_json() for r in self.baseline],
            "transfer_mean": _finite(self.transfer_mean()),
            "baseline_transfer_mean": None if self.baseline is None else _finite(self.transfer_mean(self.baseline)),
        }

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``report.json``, ``table.md``, ``chart.png`` and each network's own report and
        curves (``<model>/``, the baseline's under ``baseline/<model>/``)."""
        folder = Path(folder)
        paths = [folder / "report.json", folder / "table.md"]
        write_file(paths[0], (json.dumps(self.to_json(), indent=2) + "\n").encode())
        write_file(paths[1], (self.table() + "\n").encode())
        for where, results in (("", self.networks), ("baseline", self.baseline or [])):
            for r in results:
                if r.report is not None:
                    r.report.save(folder / where / r.model)
        paths.append(self._chart(folder / "chart.png"))
        return paths

    def _chart(self, path: Path) -> Path:
        names = [r.model for r in self.networks]
        series = [("this dataset", self.networks)] + ([("random real, same storage", self.baseline)] if self.baseline else [])
        width = 0.8 / len(series)
        fig = new_figure(figsize=(1.6 + 1.3 * len(names), 3.8))
        ax = fig.subplots()
        for i, (label, results) in enumerate(series):
            by_model = {r.model: r for r in results}
            means = [100 * by_model[n].mean if math.isfinite(by_model[n].mean) else 0 for n in names]
            stds = [100 * by_model[n].report.std if by_model[n].report and math.isfinite(by_model[n].mean) else 0 for n in names]
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=label)
            for x, r in zip(xs, (by_model[n] for n in names)):
                if not math.isfinite(r.mean):
                    ax.text(x, 1, "diverged", rotation=90, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), names)
        ax.set(ylabel="test accuracy %", title=self.setting.get("train", ""))
        ax.legend(fontsize=8)
        return save_png(fig, path)


def card_summary(report: dict, command: str) -> dict:
    """What a dataset card records of a cross-architecture ``report.json``: per network the mean,
    std, lr and how it was chosen, the baseline's, the protocol and the command that measured it."""
    def entry(r: dict) -> dict:
        acc = (r["report"] or {}).get("test_accuracy") or {}
        return {"test_accuracy": acc.get("mean"), "test_accuracy_std": acc.get("std"), "lr": r["lr"],
                "lr_source": r["lr_source"], "diverged_seeds": acc.get("diverged_seeds", [])}  # fmt: skip

    base = {r["model"]: entry(r) for r in report["baseline"] or []}
    return {
        "command": command,
        "runs": report["runs"], "epochs": report["protocol"]["epochs"], "dsa": report["protocol"]["dsa"],
        "lr_grid": report["lr_grid"], "lr_epochs": report["lr_epochs"],
        "distilled_with": report["distilled_with"], "baseline": report.get("baseline_data"),
        "networks": {r["model"]: {**entry(r), "baseline": base.get(r["model"])} for r in report["networks"]},
        "transfer_mean": report["transfer_mean"], "baseline_transfer_mean": report["baseline_transfer_mean"],
    }  # fmt: skip


def choose_lr(train: Dataset, val: Dataset, *, num_classes: int, model: str, protocol: Protocol,
              grid: tuple[float, ...] = LR_GRID, epochs: int | None = None, seed: int = 0,
              device: torch.device | str | None = None) -> tuple[float | None, dict[str, float | None]]:  # fmt: skip
    """The lr of ``grid`` whose one run of ``epochs`` (default: the protocol's) scores best on
    ``val``; returns it (None if every candidate diverged) and every candidate's score."""
    short = replace(protocol, epochs=epochs or protocol.epochs, curve_points=0)
    scores: dict[str, float | None] = {}
    for lr in grid:
        run = train_and_test(train, val, num_classes=num_classes, model=model, protocol=replace(short, lr=lr), seed=seed,
                             device=device, progress=False)  # fmt: skip
        scores[repr(lr)] = None if run.diverged else run.test_accuracy  # ``val`` stood in for the test set
    valid = {lr: s for lr, s in scores.items() if s is not None}
    return (float(max(valid, key=valid.get)) if valid else None), scores


def evaluate_networks(train: Dataset, test: Dataset, val: Dataset, *, num_classes: int, models: list[str], runs: int,
                      protocol: Protocol, own: dict[str, float] | None = None, grid: tuple[float, ...] = LR_GRID,
                      lr_epochs: int | None = None, seed: int = 0, device: torch.device | str | None = None,
                      setting: dict | None = None, progress: bool = True, done: dict[str, NetworkResult] | None = None,
                      on_result: Callable[[NetworkResult], None] | None = None) -> list[NetworkResult]:  # fmt: skip
    """Train ``runs`` fresh networks of every model on ``train`` and test them. A model in ``own``
    trains at that lr (``"learned"``); every other one at the lr :func:`choose_lr` picks. A model in
    ``done`` is not trained again (its result is taken as it is); ``on_result`` sees each result."""
    results = []
    for model in models:
        if model in (done or {}):
            result = done[model]
        else:
            if model in (own or {}):
                lr, source, scores = own[model], "learned", {}
            else:
                lr, scores = choose_lr(train, val, num_classes=num_classes, model=model, protocol=protocol, grid=grid,
                                       epochs=lr_epochs, seed=seed, device=device)  # fmt: skip
                source = "validation"
            report = None
            if lr is not None:
                report = evaluate(train, test, num_classes=num_classes, model=model, runs=runs, protocol=replace(protocol, lr=lr),
                                  val=val, seed=seed, device=device, progress=progress,
                                  setting={**(setting or {}), "lr_source": source, "lr_scores": scores})  # fmt: skip
            result = NetworkResult(model, lr, source, scores, report)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def evaluate_table(train: Dataset, test: Dataset, val: Dataset, *, folder: str | Path, setting: dict, table: dict,
                   distilled_with: str | None = None, own: dict[str, float] | None = None,
                   baseline: tuple[Dataset, str] | None = None, resume: bool = False, **common) -> CrossArchitectureReport:  # fmt: skip
    """:func:`evaluate_networks` on ``train`` (and on ``baseline``, a dataset and its name), saved to
    ``folder`` as a :class:`CrossArchitectureReport` whose setting is ``setting`` and ``table``.

    After each network ``folder/progress.json`` records the finished ones; with ``resume`` a run
    stopped part-way takes them from there (raises ``ValueError`` if they were measured in another
    setting) and trains only the rest. The file goes once the table is saved.
    """
    folder = Path(folder)
    progress = folder / "progress.json"
    report = CrossArchitectureReport({**setting, **table}, distilled_with, [], [] if baseline is not None else None)
    key = json.loads(json.dumps(report.setting))  # as the file records it
    done: dict = {"networks": {}, "baseline": {}}
    if progress.exists() and not progress.is_file():
        raise FormatError(f"{progress}: not a file; remove it (the table's record of finished networks goes there)")
    if resume and progress.is_file():
        saved = read_json(folder, progress.name, _check_progress, what="a record of finished networks")
        if saved["setting"] != key:
            changed = sorted(k for k in {*key, *saved["setting"]} if key.get(k) != saved["setting"].get(k))
            raise ValueError(f"{progress} holds results of another setting (differs in {changed}); remove it to start over")
        done = {part: {r["model"]: NetworkResult.from_json(r) for r in saved[part]} for part in done}

    def keeping(results: list[NetworkResult]) -> Callable[[NetworkResult], None]:
        def keep(result: NetworkResult) -> None:
            results.append(result)
            record = {"setting": key, "networks": [r.to_json() for r in report.networks],
                      "baseline": [r.to_json() for r in report.baseline or []]}  # fmt: skip
            write_file(progress, (json.dumps(record) + "\n").encode())

        return keep

    evaluate_networks(train, test, val, own=own, setting=setting, done=done["networks"],
                      on_result=keeping(report.networks), **common)  # fmt: skip
    if baseline is not None:
        data, name = baseline
        evaluate_networks(data, test, val, setting={**setting, "train": name}, done=done["baseline"],
                          on_result=keeping(report.baseline), **common)  # fmt: skip
    report.save(folder)
    progress.unlink(missing_ok=True)
    return report


def _check_progress(saved) -> None:
    """Raise ``ValueError`` unless ``saved`` is what :func:`evaluate_table` writes to progress.json."""
    if not (isinstance(saved, dict) and isinstance(saved.get("setting"), dict)
            and all(isinstance(saved.get(part), list) for part in ("networks", "baseline"))):  # fmt: skip
        raise ValueError("expected {setting, networks, baseline}; remove the file to start the table over")
    try:
        for record in saved["networks"] + saved["baseline"]:
            result = NetworkResult.from_json(record)
            if not (isinstance(result.model, str) and isinstance(result.lr_scores, dict)
                    and (result.lr is None or isinstance(result.lr, (int, float)))):  # fmt: skip
                raise TypeError("model, lr or lr_scores of the wrong type")
            float(result.mean), float(result.report.std if result.report is not None else 0)  # numbers, as table() needs
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(f"a network's record is damaged ({type(err).__name__}: {err}); remove the file to start the "
                         "table over") from None


def random_real_baseline(real: RealData, preprocessing: Preprocessing, images_per_class: int, *, seed: int = 0) -> TensorDataset:
    """``images_per_class`` random real training images per class in ``preprocessing``'s space."""
    if images_per_class < 1:
        raise ValueError(f"the storage buys {images_per_class} real images per class; the baseline needs at least 1")
    return as_dataset(real.subset(images_per_class, seed=seed), preprocessing)


def image_scale(train: Dataset, real: TensorDataset, *, items: int = 1024) -> float:
    """The standard deviation of (the first ``items`` of) ``train``'s images over that of the real
    images ``real``. Far from 1, networks without normalisation may diverge on ``train``: see the
    hallucinators' ``normalize`` option."""
    images = next(iter(DataLoader(train, batch_size=min(len(train), items))))[0]
    return float(images.std() / real.tensors[0].std())


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _percent(x: float) -> str:
    return f"{100 * x:.2f}" if math.isfinite(x) else "diverged"


def _signed(x: float) -> str:
    return f"{100 * x:+.2f}" if math.isfinite(x) else "-"


def _cell(r: NetworkResult) -> str:
    if r.report is None or not math.isfinite(r.mean):
        return "diverged"
    note = f" ({len(r.report.diverged_seeds)} diverged)" if r.report.diverged_seeds else ""
    return f"{100 * r.mean:.2f} +- {100 * r.report.std:.2f}{note}"


def _lr(r: NetworkResult) -> str:
    return "-" if r.lr is None else f"{r.lr:g} ({r.lr_source})"


def evaluate_across_architectures(data: EvaluationData, protocol: Protocol, *, models: list[str], folder: str | Path,
                                  runs: int, grid: tuple[float, ...] = LR_GRID, lr_epochs: int | None = None,
                                  baseline: bool = False, resume: bool = False, seed: int = 0,
                                  device: torch.device | str | None = None) -> CrossArchitectureReport:  # fmt: skip
    """``haba-datasets evaluate NAME --models ...``: :func:`evaluate_table` on ``data``.

    The network the data was distilled for (the one its card was measured with, else ConvNet when
    ``data`` has an lr) trains at ``data.lr``; the others at the lr of ``grid`` best on the
    validation split after ``lr_epochs`` (default: a fifth of the protocol's epochs). With
    ``baseline`` the networks also train on random real images of the same storage (a factorized
    dataset's; :class:`~haba_datasets.evaluate.SettingError` if it stores less than one image per
    class). The report's setting records the lr search and the images' scale (:func:`image_scale`).
    """
    recorded, lr = data.recorded, data.lr
    own_model = recorded.get("model") if isinstance(recorded, dict) and recorded.get("model") in models else None
    own_model = own_model or ("ConvNet" if lr is not None and "ConvNet" in models else None)
    own = {own_model: lr} if own_model is not None and lr is not None else {}
    lr_epochs = lr_epochs if lr_epochs is not None else max(1, protocol.epochs // 5)
    table = {"protocol": {**asdict(protocol), "lr": None}, "lr_grid": list(grid), "lr_epochs": lr_epochs, "runs": runs,
             "seed": seed, "image_scale": image_scale(data.train, data.val)}  # fmt: skip
    control = None
    if baseline:
        storage = data.train.storage
        ipc = math.floor(storage.equivalent_ipc + 1e-9)
        if ipc < 1:
            raise SettingError("baseline", f"{data.name} stores less than one real image per class; no baseline to compare")
        control = (random_real_baseline(data.real, data.preprocessing, ipc, seed=seed), f"random real, IPC {ipc}")
        table["baseline_data"] = {"kind": "random real", "images_per_class": ipc, "equivalent_ipc": storage.equivalent_ipc}
    return evaluate_table(data.train, data.test, data.val, folder=folder, setting=data.setting, table=table,
                          distilled_with=own_model, own=own, baseline=control, resume=resume,
                          num_classes=len(data.real.classes), models=models, runs=runs, protocol=protocol, grid=grid,
                          lr_epochs=lr_epochs, seed=seed, device=device)  # fmt: skip
