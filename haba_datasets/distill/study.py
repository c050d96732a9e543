"""Studies: named runs of recipes (and evaluations) written as data, run resumably.

A study file (``recipes/studies/*.yaml``; paths in it are relative to the current folder)::

    folders: {runs: runs/study, results: recipes/results/study, experts: runs/experts}
    threads: 1                      # torch threads of each run unless OMP_NUM_THREADS is set (optional)
    set: [evaluation.runs=1]        # settings of every distillation, before the run's own (optional)
    groups:                         # named lists of settings a run's `set` may name (optional)
      mf: [parameterization.haba.architecture=haba-conv-up, parameterization.haba.basis_factor=2]
    experts:                        # options of a shared experts folder (optional)
      cifar10-e16: {starts_from: cifar10-ipc10-cpu, record: cifar10-e16}
    runs:
      steps-40:                     # a distillation: `haba-datasets distill` of a recipe
        why: 40 inner steps instead of 20
        recipe: recipes/cifar10-ipc10.yaml
        profile: cpu
        experts: cifar10-ipc10-cpu  # a folder under folders.experts, shared; none for DM
        set: [objective.mtt.syn_steps=40]
        continues: OTHER            # starts as a copy of OTHER's checkpoint, log and selected dataset
      cifar10-ipc10:                # an evaluation: `haba-datasets evaluate` of a real dataset or of a run's dataset
        evaluate: {dataset: cifar10, ipc: 10, runs: 5, epochs: 1000, curve_points: 4}

Runs go in order to ``folders.runs/NAME``; what a reader needs of each (:func:`keep_results`) to
``folders.results/NAME``. A finished run is kept again, an interrupted one resumes from its
checkpoint, and one whose results are kept but whose run folder is gone (a fresh clone) is skipped.
An experts folder is trained before its first run and timed (``NAME.timing.json`` beside it, and
``folders.results/experts/RECORD.json``, the first measurement); the time goes with each run's
results as ``experts.json`` (the study's record where this machine did not train them).
``RUN:seeds`` evaluates RUN's dataset with 3 runs x 500 epochs (``seeds/RUN``); ``RUN:keep`` keeps
what an unfinished RUN needs to continue on another machine (``folders.results/RUN/state``, see
:mod:`.state`), written back when its run folder is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import list_real_datasets
from ..evaluate import Protocol, load_evaluation_data
from .experts import Experts
from .loop import BEST, CHECKPOINT, LOG
from .recipe import _read_yaml, load_recipe, needs_experts, parse_overrides, recipe_experts, run_recipe
from .state import keep_state, refit_preprocessing, restore_state

__all__ = ["Distillation", "Evaluation", "Study", "keep_results", "load_study"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_KEYS = {"folders", "threads", "set", "groups", "experts", "runs"}
_DISTILL_KEYS = {"why", "recipe", "profile", "experts", "set", "continues"}
_EVALUATE_KEYS = {"dataset", "run", "ipc", "preprocessing", "runs", "epochs", "curve_points", "dsa"}
MAX_COUNT = 100_000  # largest ipc, runs, epochs or threads a study may ask for
SEEDS = {"runs": 3, "epochs": 500}  # RUN:seeds: the cards' protocol


@dataclass(frozen=True)
class Distillation:
    """A run of a recipe: ``haba-datasets distill RECIPE --profile PROFILE --set ...``."""

    name: str
    recipe: Path
    profile: str | None
    settings: tuple[str, ...]
    experts: str | None = None
    continues: str | None = None
    why: str = ""


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """``haba-datasets evaluate`` of a real dataset (``dataset``, ``ipc`` random images per class, or its whole
    training split) or of the dataset a distillation of the study selected (``run``)."""

    name: str
    dataset: str | None = None
    ipc: int | None = None
    run: str | None = None
    runs: int
    epochs: int
    preprocessing: str = "normalize"
    curve_points: int = 10
    dsa: bool = True
    why: str = ""


@dataclass
class Study:
    """A study file, loaded and checked (see :func:`load_study`)."""

    path: Path
    runs_dir: Path
    results: Path
    experts_dir: Path
    runs: dict[str, Distillation | Evaluation]
    experts: dict[str, dict]
    threads: int | None = None

    def run_names(self, names: list[str]) -> list[str]:
        """``names`` (every run when empty), each checked: a run, ``RUN:seeds`` or ``RUN:keep``."""
        for name in names:
            run, _, mode = name.partition(":")
            if run not in self.runs or mode not in ("", "seeds", "keep") or (mode and isinstance(self.runs[run], Evaluation)):
                known = "a distillation's name with :seeds or :keep" if run in self.runs else "`--list` lists the runs"
                raise ValueError(f"{self.path}: no run {name!r} ({known})")
        return names or list(self.runs)

    def command(self, name: str) -> str:
        """The ``haba-datasets`` command a run amounts to (without its experts' timing and kept results)."""
        run = self._run(name)
        out = self.runs_dir / run.name
        if name.endswith(":keep"):
            return f"haba-datasets keep-state {out} {self.results / run.name / 'state'}"
        if isinstance(run, Evaluation):
            source = run.dataset or self.runs_dir / run.run / "dataset"
            options = [f"--ipc {run.ipc}" if run.ipc else "", f"--preprocessing {run.preprocessing}"
                       if run.dataset and run.preprocessing != "normalize" else "", f"--runs {run.runs} --epochs {run.epochs}",
                       "" if run.dsa else "--no-dsa", f"--curve-points {run.curve_points}" if run.curve_points != 10 else ""]  # fmt: skip
            return " ".join(["haba-datasets evaluate", str(source), *filter(None, options), f"-o {out}"])
        profile = f" --profile {run.profile}" if run.profile else ""
        sets = "".join(f" --set {s}" for s in run.settings)
        experts = f" --experts-dir {self.experts_dir / run.experts}" if run.experts else ""
        return f"haba-datasets distill {run.recipe}{profile}{sets}{experts} -o {out} --resume"

    def recipe(self, run: Distillation) -> dict:
        """The run's recipe, resolved as ``haba-datasets distill`` resolves it."""
        return load_recipe(run.recipe, profile=run.profile, overrides=parse_overrides(list(run.settings)))

    def run(self, name: str, *, data_root: str | Path | None = None, progress: bool = True) -> str:
        """Run ``name`` (a run, ``RUN:seeds`` or ``RUN:keep``); return a line saying what was written."""
        if self.threads and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(self.threads)
        run = self._run(name)
        if name.endswith(":keep"):
            keep_state(self.runs_dir / run.name, self.results / run.name / "state")
            return f"{name}: wrote {self.results / run.name / 'state'}"
        out, kept = self.runs_dir / run.name, self.results / run.name
        result = "report.json" if isinstance(run, Evaluation) else "summary.json"
        if not (out / result).is_file():
            if (kept / result).is_file() and not out.exists():
                return f"{name}: kept in {kept} (its run folder {out} is gone; remove {kept} to run it again)"
            if isinstance(run, Evaluation):
                self._evaluate(run, data_root, progress)
            else:
                self._distill(run, data_root, progress)
        keep_results(out, kept)
        if isinstance(run, Distillation) and run.experts:  # the experts' time here, else the study's record
            if timing := next((t for t in (self._timing(run.experts), self._record(run.experts)) if t.is_file()), None):
                shutil.copyfile(timing, kept / "experts.json")
        return f"{name}: wrote {kept}"

    def _run(self, name: str) -> Distillation | Evaluation:
        run, _, mode = name.partition(":")
        if mode == "seeds":
            return Evaluation(name=f"seeds/{run}", run=run, **SEEDS)
        return self.runs[run]

    def _timing(self, folder: str) -> Path:
        return self.experts_dir / f"{folder}.timing.json"

    def _record(self, folder: str) -> Path:
        return self.results / "experts" / f"{self.experts.get(folder, {}).get('record', folder)}.json"

    def _distill(self, run: Distillation, data_root, progress: bool) -> None:
        recipe, out = self.recipe(run), self.runs_dir / run.name
        source = self.runs_dir / run.continues if run.continues else None
        if source and not out.exists() and not (source / CHECKPOINT).is_file() and \
                not (self.results / run.continues / "state").is_dir():  # fmt: skip
            raise ValueError(f"{self.path}: {run.name} continues {run.continues}: run {run.continues} first "
                             f"({source} holds no {CHECKPOINT})")  # fmt: skip
        experts = self._train_experts(run.experts, recipe, data_root, progress) if run.experts else None
        self._restore(run, data_root)
        if source and not out.exists():  # its folder starts as a copy of the run it continues
            self._restore(self.runs[run.continues], data_root)
            partial = out.with_name(out.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            for item in (CHECKPOINT, LOG, BEST, "grids"):
                if (source / item).is_dir():
                    shutil.copytree(source / item, partial / item)
                elif (source / item).is_file():
                    shutil.copy2(source / item, partial / item)
            partial.rename(out)
        run_recipe(recipe, out, data_root=data_root, experts_dir=experts, resume=True, progress=progress)

    def _restore(self, run: Distillation, data_root) -> None:
        """A run missing here whose state was kept (``RUN:keep``) is written back from it."""
        state, out = self.results / run.name / "state", self.runs_dir / run.name
        if out.exists() or not state.is_dir():
            return
        preprocessing = Experts.open(self.experts_dir / run.experts).preprocessing if run.experts else \
            refit_preprocessing(state, data_root)  # fmt: skip
        restore_state(state, out, preprocessing)

    def _train_experts(self, name: str, recipe: dict, data_root, progress: bool) -> Path:
        """The experts folder ``name``, trained first (and timed) when it lacks experts ``recipe`` needs."""
        folder, timing, options = self.experts_dir / name, self._timing(name), self.experts.get(name, {})
        source = self.experts_dir / options.get("starts_from", name)
        if not folder.exists() and source != folder and source.is_dir():  # an expert depends on (seed, index) only
            shutil.copytree(source, folder)
            if self._timing(source.name).is_file():  # the copied experts count with their own training time
                shutil.copyfile(self._timing(source.name), timing)
        try:
            finished = len(Experts.open(folder).ids)
        except (OSError, ValueError):
            finished = 0
        settings = recipe["experts"]
        if finished >= settings["count"]:
            return folder
        began = time.perf_counter()
        recipe_experts(recipe, folder, data_root=data_root, progress=progress)
        spent = json.loads(timing.read_text())["seconds"] if finished and timing.is_file() else 0
        record = {"experts": settings["count"], "epochs": settings["epochs"],
                  "width": settings.get("net_options", {}).get("width", 128), "threads": torch.get_num_threads(),
                  "seconds": spent + round(time.perf_counter() - began)}  # fmt: skip
        timing.write_text(json.dumps(record) + "\n")
        shared = self._record(name)  # the first measurement stays
        if not shared.exists():
            shared.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(timing, shared)
        return folder

    def _evaluate(self, run: Evaluation, data_root, progress: bool) -> None:
        source = run.dataset
        if run.run is not None:
            source = self.runs_dir / run.run / "dataset"
            if not source.is_dir():
                raise ValueError(f"{self.path}: {run.name} evaluates the dataset of {run.run}: run {run.run} first "
                                 f"(no {source})")  # fmt: skip
        data = load_evaluation_data(str(source), ipc=run.ipc, preprocessing=run.preprocessing, data_root=data_root)
        protocol = Protocol(epochs=run.epochs, lr=data.lr if data.lr is not None else 0.01, dsa=run.dsa,
                            curve_points=run.curve_points)  # fmt: skip
        data.evaluate(protocol, runs=run.runs, progress=progress).save(self.runs_dir / run.name)


def load_study(path: str | Path) -> Study:
    """Read and check a study file: keys, types, names, and each distillation's recipe, profile and settings
    (resolved as ``haba-datasets distill`` resolves them); any mistake is one ValueError naming the file."""
    path = Path(path)
    raw = _read_yaml(path, "study")

    def fail(where: str, what: str):
        raise ValueError(f"{path}: {where}: {what}")

    def mapping(value, where: str, keys: set[str], required: set[str] = frozenset()) -> dict:
        if not isinstance(value, dict):
            fail(where, f"a mapping of {', '.join(sorted(keys))}")
        if unknown := sorted(map(str, set(value) - keys)):
            fail(where, f"unknown keys {unknown} (known: {', '.join(sorted(keys))})")
        if missing := sorted(required - set(value)):
            fail(where, f"missing keys {missing}")
        return value

    def text(value, where: str, pattern: re.Pattern | None = None) -> str:
        if not isinstance(value, str) or not value or (pattern is not None and not pattern.fullmatch(value)):
            fail(where, f"takes a name such as cifar10-ipc10-cpu, got {value!r}" if pattern else f"takes text, got {value!r}")
        return value

    def count(value, where: str, low: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_COUNT:
            fail(where, f"takes a whole number from {low} to {MAX_COUNT:,}, got {value!r}")
        return value

    def settings(value, where: str, groups: dict) -> tuple[str, ...]:
        if not isinstance(value, list):
            fail(where, f"takes a list of KEY=VALUE settings (or group names), got {value!r}")
        flat = []
        for item in value:
            if isinstance(item, str) and "=" not in item and item in groups:
                flat += groups[item]
            elif isinstance(item, str) and "=" in item:
                flat.append(item)
            else:
                fail(where, f"{item!r} is neither KEY=VALUE nor a group ({', '.join(groups) or 'none defined'})")
        try:
            parse_overrides(flat)
        except ValueError as err:
            fail(where, str(err))
        return tuple(flat)

    study = mapping(raw, "the study", _KEYS, {"folders", "runs"})
    folders = mapping(study["folders"], "folders", {"runs", "results", "experts"}, {"runs", "results"})
    runs_dir, results = (Path(text(folders[k], f"folders.{k}")) for k in ("runs", "results"))
    experts_dir = Path(text(folders.get("experts", "runs/experts"), "folders.experts"))
    threads = None if study.get("threads") is None else count(study["threads"], "threads")
    groups = study.get("groups") or {}
    if not isinstance(groups, dict):
        fail("groups", "maps names to lists of KEY=VALUE settings")
    groups = {text(k, "groups", _FOLDER): settings(v, f"groups.{k}", {}) for k, v in groups.items()}
    common = settings(study.get("set") or [], "set", groups)
    experts = study.get("experts") or {}
    if not isinstance(experts, dict):
        fail("experts", "maps experts folders to their options (starts_from, record)")
    for folder, options in experts.items():
        text(folder, "experts", _FOLDER)
        for key, value in mapping(options, f"experts.{folder}", {"starts_from", "record", "why"}).items():
            text(value, f"experts.{folder}.{key}", None if key == "why" else _FOLDER)
    if not isinstance(study["runs"], dict) or not study["runs"]:
        fail("runs", "maps run names to runs (recipe, profile, ... or evaluate)")
    runs: dict[str, Distillation | Evaluation] = {}
    for name, spec in study["runs"].items():
        where = f"runs.{name}"
        text(name, "runs", _NAME)
        if isinstance(spec, dict) and "evaluate" in spec:
            mapping(spec, where, {"why", "evaluate"})
            ev = mapping(spec["evaluate"], f"{where}.evaluate", _EVALUATE_KEYS, {"runs", "epochs"})
            if ("dataset" in ev) == ("run" in ev):
                fail(f"{where}.evaluate", "names either a real dataset (dataset) or a run of this study (run)")
            if "dataset" in ev and ev["dataset"] not in list_real_datasets():
                fail(f"{where}.evaluate.dataset", f"unknown real dataset {ev['dataset']!r}; known: {', '.join(list_real_datasets())}")
            if not isinstance(ev.get("dsa", True), bool):
                fail(f"{where}.evaluate.dsa", f"takes true or false, got {ev['dsa']!r}")
            numbers = {k: count(ev[k], f"{where}.evaluate.{k}", 0 if k == "curve_points" else 1)
                       for k in ("runs", "epochs", "ipc", "curve_points") if k in ev}  # fmt: skip
            strings = {k: text(ev[k], f"{where}.evaluate.{k}") for k in ("dataset", "run", "preprocessing") if k in ev}
            runs[name] = Evaluation(name=name, **numbers, **strings, dsa=ev.get("dsa", True), why=_why(spec, where, fail))
            continue
        spec = mapping(spec, where, _DISTILL_KEYS, {"recipe"})
        run = Distillation(name, Path(text(spec["recipe"], f"{where}.recipe")),
                           None if spec.get("profile") is None else text(spec["profile"], f"{where}.profile"),
                           common + settings(spec.get("set") or [], f"{where}.set", groups),
                           None if spec.get("experts") is None else text(spec["experts"], f"{where}.experts", _FOLDER),
                           None if spec.get("continues") is None else text(spec["continues"], f"{where}.continues", _NAME),
                           _why(spec, where, fail))  # fmt: skip
        try:
            recipe = load_recipe(run.recipe, profile=run.profile, overrides=parse_overrides(list(run.settings)))
        except ValueError as err:
            fail(where, " ".join(str(err).split()))
        if needs_experts(recipe) != (run.experts is not None):
            kind = recipe["objective"]["kind"]
            fail(f"{where}.experts", f"a {kind} run needs an experts folder" if run.experts is None else
                 f"a {kind} run reads no experts; leave experts out")  # fmt: skip
        runs[name] = run
    for name, run in runs.items():
        source = run.continues if isinstance(run, Distillation) else run.run
        if source is not None and (source == name or not isinstance(runs.get(source), Distillation)):
            key = "continues" if isinstance(run, Distillation) else "evaluate.run"
            fail(f"runs.{name}.{key}", f"{source!r} is not another distillation of this study")
    for name in runs:
        seen = [name]
        while isinstance(runs[seen[-1]], Distillation) and runs[seen[-1]].continues:
            seen.append(runs[seen[-1]].continues)
            if seen[-1] in seen[:-1]:
                fail(f"runs.{name}.continues", f"runs continue each other in a cycle: {' -> '.join(seen)}")
    return Study(path, runs_dir, results, experts_dir, runs, experts, threads)


def _why(spec: dict, where: str, fail) -> str:
    why = spec.get("why", "")
    if not isinstance(why, str):
        fail(f"{where}.why", f"takes text, got {why!r}")
    return why


def curve_points(report):
    """``report`` with every ``curve`` cut to its validation points and its last epoch."""
    if isinstance(report, list):
        return [curve_points(value) for value in report]
    if not isinstance(report, dict):
        return report
    return {key: [p for i, p in enumerate(value) if "val_accuracy" in p or i == len(value) - 1]
            if key == "curve" and isinstance(value, list) else curve_points(value) for key, value in report.items()}  # fmt: skip


def _keep_report(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(curve_points(json.loads(source.read_text())), indent=2) + "\n")


def _validation_records(log: Path) -> str:
    """The lines of a loop's ``log.jsonl`` that carry a validation accuracy."""
    return "".join(line + "\n" for line in log.read_text().splitlines() if '"val_accuracy"' in line)


def _loss_records(log: Path) -> str:
    """One line per stretch of iterations ending at a validation point: the mean of each loss term."""
    lines, terms, first = [], {}, None
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record["iteration"] == 0:
            continue
        first = first or record["iteration"]
        for key, value in record.items():
            if key not in ("iteration", "val_accuracy") and isinstance(value, (int, float)):
                terms.setdefault(key, []).append(value)
        if "val_accuracy" in record:
            means = {key: round(sum(v) / len(v), 6) for key, v in terms.items()}
            lines.append(json.dumps({"iterations": [first, record["iteration"]], **means}) + "\n")
            terms, first = {}, None
    return "".join(lines)


def keep_results(source: str | Path, dest: str | Path) -> None:
    """Copy what a reader needs of a run or an evaluation from ``source`` to ``dest``: no logs, grids or pictures.

    A distillation run (``summary.json``) keeps its summary, the validation records of its log
    (``validation.jsonl``), the mean of each loss term between validation points (``losses.jsonl``)
    and its final evaluation's report; an evaluation (``report.json``, also a cross-architecture
    one) keeps its report. Reports keep each training run's curve points (the epochs with a
    validation accuracy, and the last), not every epoch: a chart can be redrawn from them.
    """
    source, dest = Path(source), Path(dest)
    if (source / "summary.json").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "summary.json", dest / "summary.json")
        (dest / "validation.jsonl").write_text(_validation_records(source / LOG))
        (dest / "losses.jsonl").write_text(_loss_records(source / LOG))
        if (source / "evaluation" / "report.json").is_file():
            _keep_report(source / "evaluation" / "report.json", dest / "evaluation" / "report.json")
    elif (source / "report.json").is_file():
        _keep_report(source / "report.json", dest / "report.json")
    else:
        raise ValueError(f"{source}: holds neither summary.json (a run) nor report.json (an evaluation)")
