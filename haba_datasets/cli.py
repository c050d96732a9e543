"""The ``haba-datasets`` command line.

Every command checks its arguments before any work starts; an input mistake (an option out of
range, a damaged or missing file, an output folder that holds something else) ends in one line
``error: <file or option>: <what, how to fix>`` on stderr and exit status 2. An error during a run
that is not about the user's input keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import typing
from contextlib import contextmanager
from pathlib import Path

from .allocator import keep_freed_memory
from .cross_architecture import LR_GRID
from .distill.experts import KEEPS
from .factorized import Pairing
from .hub import HubError
from .interop import EXPORT_TARGETS, LAYOUTS
from .fileformat import FormatError
from .preprocessing import list_preprocessings
from .registry import UnknownNameError

__all__ = ["main"]

# Bounds on what an option may ask for (each run's work and memory grow with these).
MAX_RUNS = 1000
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
MAX_IPC = 100_000
MAX_EXPERTS = 10_000
MAX_WIDTH = 4096
MAX_DEPTH = 64
MAX_SCALE = 32
MAX_BASES_SHOWN = 1000
MAX_LR = 1e4
MAX_SEED = 2**63 - 1
MAX_ZCA_RANK = 1_000_000
#: OS errors about the user's paths: reported as one line, like the library's typed errors.
PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


class UsageError(Exception):
    """A command's input was wrong: printed as one ``error:`` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``error: --option: what`` (exit status 2)."""

    def error(self, message: str):
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _int(low: int, high: int):
    """An argparse type: a whole number in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a whole number from {low:,} to {high:,}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:,} to {high:,}, got {value:,}")
        return value

    return parse


def _float(accept, how: str, needed: str):
    """An argparse type: a finite number that ``accept`` takes (``how``: an example; ``needed``: the range)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes {how}, got {text!r}") from None
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"{needed}, got {text}")
        return value

    return parse


#: A learning rate; a momentum or weight decay.
_lr = _float(lambda v: 0 < v <= MAX_LR, "a positive number such as 0.01", f"must be a number above 0 and at most {MAX_LR:g}")
_fraction = _float(lambda v: 0 <= v < 1, "a number in [0, 1) such as 0.9", "takes a number in [0, 1)")


def _device(text: str) -> str:
    """An argparse type: a device this machine has (cpu, cuda, cuda:N, mps)."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a device name: {text!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text} asked for, but torch sees no GPU here; use --device cpu or leave it out")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text} asked for, but torch sees {count} GPU(s): cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError("mps asked for, but it is not available here; use --device cpu or leave it out")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text}: use cpu, cuda, cuda:N or mps")
    return text


def _repo_id(text: str) -> str:
    """An argparse type: a Hub repo id (user/name)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        raise argparse.ArgumentTypeError(f"not a Hub repo id: {text!r}; write user/name") from None
    return text


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="haba-datasets", description="Factorized (HaBa) distilled datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="summary and storage of a saved factorized dataset")
    p.add_argument("path", type=Path)
    p = sub.add_parser("preview", help="write a PNG grid of bases x hallucinators")
    p.add_argument("path", type=Path)
    p.add_argument("-o", "--output", type=Path, default=Path("grid.png"))
    p.add_argument("--max-bases-per-class", type=_int(1, MAX_BASES_SHOWN), default=10)
    p.add_argument("--scale", type=_int(1, MAX_SCALE), default=2)
    p = sub.add_parser("push", help="publish a saved dataset folder to a Hub dataset repo (one commit)")
    p.add_argument("path", type=Path)
    p.add_argument("repo_id", type=_repo_id, help="user/name")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="branch to commit to (created if needed)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    p = sub.add_parser("download", help="fetch a dataset (repo id, or zoo name with --revision) into the Hugging Face cache")
    p.add_argument("name")
    p.add_argument("--revision", help="branch, tag or commit")
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    p = sub.add_parser("evaluate", help="train fresh networks on a dataset (literature protocol), test on real data")
    p.add_argument("name", help="a factorized dataset (folder, Hub repo id or zoo name), or a real dataset name "
                                "(cifar10, fashion_mnist, ...) to evaluate a random real subset")  # fmt: skip
    p.add_argument("--dataset", help="real dataset to test on (default: the factorized dataset's provenance)")
    p.add_argument("--ipc", type=_int(1, MAX_IPC), help="real subsets: images per class (default: the whole training split)")
    p.add_argument("--model", default="ConvNet", help="network name (see haba_datasets.nets.list_nets)")
    p.add_argument("--models", help="comma-separated networks for a cross-architecture table (e.g. "
                                    "ConvNet,AlexNet,VGG11,ResNet18); each network other than the one the data was "
                                    "distilled for trains at an lr chosen on the validation split")  # fmt: skip
    p.add_argument("--baseline", choices=["random"], help="with --models: also train the networks on random real images "
                                                          "of the same storage, in the same preprocessing")  # fmt: skip
    p.add_argument("--lr-grid", default=",".join(map(str, LR_GRID)), help="with --models: candidate lrs (default: %(default)s)")
    p.add_argument("--lr-epochs", type=_int(1, MAX_EPOCHS), help="with --models: epochs of each candidate's run (default: epochs / 5)")
    p.add_argument("--resume", action="store_true", help="with --models: keep the networks a stopped run of the same "
                                                         "command finished (OUTPUT/progress.json), train the rest")  # fmt: skip
    p.add_argument("--runs", type=_int(1, MAX_RUNS), help="default: the protocol recorded in the dataset's metrics, else 5")
    p.add_argument("--epochs", type=_int(1, MAX_EPOCHS), help="default: the protocol recorded in the dataset's metrics, else 1000")
    p.add_argument("--batch-size", type=_int(1, MAX_BATCH), default=256)
    p.add_argument("--lr", type=_lr, help="default: the dataset's learned lr, else 0.01")
    p.add_argument("--no-dsa", action="store_true", help="train without DSA augmentation")
    p.add_argument("--curve-points", type=_int(0, MAX_EPOCHS), default=10, help="validation accuracy measurements per run")
    p.add_argument("--preprocessing", choices=list_preprocessings(), default="normalize",
                   help="real subsets: preprocessing fitted on the training split")  # fmt: skip
    p.add_argument("--pairing", choices=typing.get_args(Pairing), default="random",
                   help="factorized datasets: one random hallucinator per basis per epoch (reference), or all pairs")  # fmt: skip
    p.add_argument("--hard-labels", action="store_true",
                   help="a dataset with soft labels: train on the bases' classes instead (the report says which)")  # fmt: skip
    p.add_argument("--seed", type=_int(0, MAX_SEED), default=0)
    p.add_argument("--data-root", type=Path, help="local copies of real datasets (default: $HABA_DATA_ROOT)")
    p.add_argument("--device", type=_device, help="default: cuda when available")
    p.add_argument("--revision", help="Hub revision of a factorized dataset")
    p.add_argument("-o", "--output", type=Path, help="folder for report.json and curves.png")
    p = sub.add_parser("distill", help="run a recipe: real data -> experts (MTT) -> distillation -> evaluation -> folder")
    p.add_argument("recipe", type=Path, help="a recipe YAML file (see recipes/)")
    p.add_argument("--profile", help="named settings of the recipe, e.g. cpu (default: the paper-scale settings)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (YAML value), e.g. parameterization.kind=plain; repeatable")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, help="run folder (default: runs/<recipe name>[-<profile>])")
    p.add_argument("--experts-dir", type=Path, help="MTT expert trajectories (default: <output>/experts)")
    p.add_argument("--data-root", type=Path, help="local copies of real datasets (default: $HABA_DATA_ROOT)")
    p.add_argument("--device", type=_device, help="default: cuda when available")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--push", metavar="REPO_ID", type=_repo_id, help="publish the dataset to this Hub dataset repo")
    p = sub.add_parser("experts", help="train expert networks on real data: MTT's trajectories or DANCE's two ends "
                                       "(resumable; torchrun shares the experts)")  # fmt: skip
    p.add_argument("--dataset", required=True, help="real dataset: a name (cifar10, ...) or a local folder in the Hub layout")
    p.add_argument("--experts", type=_int(1, MAX_EXPERTS), required=True, help="number of experts (a larger number adds experts)")
    p.add_argument("--epochs", type=_int(1, MAX_EPOCHS), required=True, help="epochs per expert")
    p.add_argument("--data-root", type=Path, help="local copies of real datasets (default: $HABA_DATA_ROOT)")
    p.add_argument("--net", default="ConvNet", help="network name (see haba_datasets.nets.list_nets)")
    p.add_argument("--width", type=_int(1, MAX_WIDTH), help="network width option (default: the network's)")
    p.add_argument("--depth", type=_int(1, MAX_DEPTH), help="network depth option (default: the network's)")
    p.add_argument("--preprocessing", choices=list_preprocessings(), default="zca")
    p.add_argument("--lr", type=_lr, default=0.01)
    p.add_argument("--batch-size", type=_int(1, MAX_BATCH), default=256)
    p.add_argument("--no-dsa", action="store_true", help="train without DSA augmentation")
    p.add_argument("--momentum", type=_fraction, default=0.0, help="SGD momentum (MTT: 0; DANCE: 0.9)")
    p.add_argument("--weight-decay", type=_fraction, default=0.0, help="SGD weight decay (MTT: 0; DANCE: 5e-4)")
    p.add_argument("--lr-steps", action="store_true", help="lr x0.1 after 2/3 and again after 5/6 of the epochs (DANCE)")
    p.add_argument("--keep", choices=KEEPS, default="all",
                   help="every epoch (MTT, dm-trained) or only the initial and final parameters (dm-dance)")  # fmt: skip
    p.add_argument("--seed", type=_int(0, MAX_SEED), default=0)
    p.add_argument("--device", type=_device, help="default: cuda when available (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("-o", "--output", type=Path, help="experts folder (default: experts/<dataset>)")
    p = sub.add_parser("import", help="make a factorized dataset from another code's files (.pt or .safetensors)")
    p.add_argument("files", type=Path, nargs="+", help="haba-reference: IMAGES WEIGHTS; mtt: IMAGES LABELS [LR]; "
                                                       "tensors: IMAGES [LABELS]")  # fmt: skip
    p.add_argument("--from", dest="layout", required=True, choices=LAYOUTS.names())
    p.add_argument("--dataset", required=True, help="the real dataset the data was distilled from (e.g. cifar10)")
    p.add_argument("--zca", action="store_true", help="the images are ZCA-whitened (fitted on the training split)")
    p.add_argument("--preprocessing", choices=list_preprocessings(), help="the images' space (default: zca with --zca, "
                                                                           "else identity: pixels in [0, 1])")  # fmt: skip
    p.add_argument("--lr", type=_lr, help="the learned learning rate, if the files do not hold it")
    p.add_argument("--data-root", type=Path, help="local copies of real datasets (default: $HABA_DATA_ROOT)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder to save the dataset to")
    p = sub.add_parser("export", help="write a dataset's images as tensors or as an ImageFolder of PNGs")
    p.add_argument("name", help="a factorized dataset (folder, Hub repo id or zoo name)")
    p.add_argument("--to", required=True, choices=EXPORT_TARGETS)
    p.add_argument("-o", "--output", type=Path, required=True)
    _zoo_parsers(sub)
    p = sub.add_parser("keep-state", help="copy what an unfinished distillation run needs to continue elsewhere "
                                          "(checkpoint, log, selected dataset without its preprocessing)")  # fmt: skip
    p.add_argument("run", type=Path, help="a `distill` run folder")
    p.add_argument("state", type=Path, help="folder to keep it in (an older state there is replaced)")
    p = sub.add_parser("restore-state", help="write a kept state into a new run folder, to continue with `distill --resume`")
    p.add_argument("state", type=Path, help="a `keep-state` folder")
    p.add_argument("run", type=Path, help="the new run folder")
    p.add_argument("--experts-dir", type=Path, help="MTT: the preprocessing of these experts (default: fitted again on "
                                                    "the real data, as the run fitted it: DM)")  # fmt: skip
    p.add_argument("--data-root", type=Path, help="local copies of real datasets (default: $HABA_DATA_ROOT)")
    p = sub.add_parser("study", help="run a study file's named runs in order, resumably (see recipes/studies/)")
    p.add_argument("study", type=Path, help="a study YAML file")
    p.add_argument("runs", nargs="*", metavar="RUN", help="the runs to do, in this order (default: every run); "
                   "RUN:seeds evaluates RUN's dataset with 3 runs x 500 epochs, RUN:keep keeps what an unfinished RUN "
                   "needs to continue on another machine")  # fmt: skip
    p.add_argument("--list", action="store_true", help="print each run's name and the command it amounts to; run nothing")
    p.add_argument("--data-root", type=Path, help="local copies of real datasets (default: $HABA_DATA_ROOT)")
    p = sub.add_parser("keep-results", help="copy what a reader needs of a run or an evaluation: summary, validation "
                                            "records, loss means, reports with their curve points")  # fmt: skip
    p.add_argument("source", type=Path, help="a `distill` run folder or an `evaluate` output folder")
    p.add_argument("dest", type=Path, help="folder to keep them in")
    p = sub.add_parser("demo", help="tour on a toy task: build, save, load, train, draw, reject a corrupted copy")
    p.add_argument("-o", "--output", type=Path, default=Path("demo-output"))
    p.add_argument("--epochs", type=_int(1, MAX_EPOCHS), default=30)
    return parser


def _zoo_parsers(sub) -> None:
    """``zoo list``, ``zoo bundle``, ``zoo record`` and ``zoo record-cross`` (see haba_datasets.zoo)."""
    from .zoo import list_zoo

    zoo = sub.add_parser("zoo", help="the zoo: list its entries; bundle a run into it, record a measurement on a card")
    commands = zoo.add_subparsers(dest="zoo_command", required=True)
    commands.add_parser("list", help="each entry: recipe, profile, experts, run and results folders, test accuracy "
                                     "(tab-separated)")  # fmt: skip
    p = commands.add_parser("bundle", help="copy a run's dataset into haba_datasets/zoo/NAME (ZCA truncated)")
    p.add_argument("name", choices=list_zoo())
    p.add_argument("run", type=Path, help="a `haba-datasets distill` output folder")
    p.add_argument("--runs", type=_int(1, MAX_RUNS), help="runs the card will be measured with (default: the card's)")
    p.add_argument("--epochs", type=_int(1, MAX_EPOCHS), help="epochs the card will be measured with (default: the card's)")
    p.add_argument("--zca-rank", type=_int(1, MAX_ZCA_RANK), default=512, help="eigenvectors of the ZCA kept")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction,
                   help="turn the hallucinators' `normalize` option on (each image at its basis's mean and std; "
                        "default: as the bundled entry has it)")  # fmt: skip
    p = commands.add_parser("record", help="write an evaluation's test accuracy on NAME's card")
    p.add_argument("name", choices=list_zoo())
    p.add_argument("report", type=Path, help="report.json of `haba-datasets evaluate NAME`")
    p = commands.add_parser("record-cross", help="put a cross-architecture table on NAME's card")
    p.add_argument("name", choices=list_zoo())
    p.add_argument("report", type=Path, help="report.json of `haba-datasets evaluate NAME --models ...`")
    p.add_argument("--command", dest="command_line", required=True, help="the evaluate command that wrote the report")


def main(argv: list[str] | None = None) -> int:
    """Run ``haba-datasets`` with ``argv``; return the exit status (2: an input mistake, told in one line;
    argparse's own usage errors exit with 2 from the parser)."""
    args = _parser().parse_args(argv)
    try:
        _check(args)
        keep_freed_memory()  # large CPU tensors reuse freed memory (haba_datasets.allocator)
        return _run(args)
    except (FormatError, HubError, UsageError, UnknownNameError) as err:
        return _fail(str(err))
    except PATH_ERRORS as err:
        return _fail(f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err))


def _fail(message: str) -> int:
    """Print ``message`` as one ``error:`` line; exit status 2."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def _check(args: argparse.Namespace) -> None:
    """The checks of the arguments that need no data: paths of the right kind, names that exist."""
    from .nets import list_nets

    root, cache = args.__dict__.get("data_root"), args.__dict__.get("cache_dir")
    if root is not None and not root.is_dir():
        raise UsageError(f"--data-root: {root} is not a folder (name the folder holding the real datasets, or leave it out)")
    if cache is not None and cache.exists() and not cache.is_dir():
        raise UsageError(f"--cache-dir: {cache} is a file; name a folder (created if needed)")
    output = args.__dict__.get("output")
    if args.command == "preview":
        if output.is_dir():
            raise UsageError(f"--output: {output} is a folder; name the PNG file to write, e.g. {output / 'grid.png'}")
    elif output is not None and output.exists() and not output.is_dir():
        raise UsageError(f"--output: {output} is a file; name a folder (new, or one this command wrote)")
    if args.command == "distill" and args.experts_dir is not None and args.experts_dir.exists() and not args.experts_dir.is_dir():
        raise UsageError(f"--experts-dir: {args.experts_dir} is a file; name a folder of experts (new, or one written by `experts`)")
    for option, name in (("--model", args.__dict__.get("model")), ("--net", args.__dict__.get("net"))):
        if name is not None and name not in list_nets():
            raise UsageError(f"{option}: unknown network {name!r}; known: {', '.join(list_nets())}")
    if args.command == "evaluate":
        _check_evaluate(args)


def _check_evaluate(args: argparse.Namespace) -> None:
    from .data import REAL_DATASETS
    from .nets import list_nets

    if args.ipc is not None and args.name not in REAL_DATASETS:
        raise UsageError(f"--ipc: picks a random subset of a real dataset; {args.name} is not one of {', '.join(REAL_DATASETS)}")
    if args.models is None:
        for option, given in (("--baseline", args.baseline), ("--resume", args.resume), ("--lr-epochs", args.lr_epochs)):
            if given:
                raise UsageError(f"{option}: only with --models (a cross-architecture table); add --models or drop it")
        return
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models:
        raise UsageError("--models: name at least one network, e.g. --models ConvNet,AlexNet")
    if unknown := [m for m in args.models if m not in list_nets()]:
        raise UsageError(f"--models: unknown network(s) {unknown}; known: {', '.join(list_nets())}")
    try:
        args.lr_grid = tuple(float(x) for x in args.lr_grid.split(","))
    except ValueError:
        raise UsageError(f"--lr-grid: takes comma-separated numbers such as 0.001,0.01, got {args.lr_grid!r}") from None
    if not all(0 < g <= MAX_LR and math.isfinite(g) for g in args.lr_grid):
        raise UsageError(f"--lr-grid: takes positive numbers such as 0.001,0.01, got {args.lr_grid}")
    if args.baseline and args.name in REAL_DATASETS:
        raise UsageError("--baseline: compares a factorized dataset with random real images of its storage; "
                         f"{args.name} is a real dataset")  # fmt: skip


@contextmanager
def _input_errors(*names, where: object = None):
    """ValueErrors whose message starts with one of ``names`` (a user's file or folder, a recipe
    section) are input errors: one line, prefixed with ``where`` when it does not name it already."""
    try:
        yield
    except ValueError as err:
        message = str(err)
        if not message.startswith(tuple(str(n) for n in names)):
            raise
        if where is not None and not message.startswith(str(where)):
            message = f"{where}: {message}"
        raise UsageError(message) from None


def _run(args: argparse.Namespace) -> int:
    from .factorized import FactorizedDataset

    if args.command == "info":
        dataset = FactorizedDataset.from_pretrained(args.path, device="cpu")
        print(dataset)
        print(f"Preprocessing: {dataset.preprocessing.kind}; learned lr: {dataset.learned_lr}")
        print(f"Storage: {dataset.storage}")
        for key, value in dataset.provenance.items():
            print(f"{key}: {value}")
    elif args.command == "preview":
        dataset = FactorizedDataset.from_pretrained(args.path, device="cpu")
        path = dataset.save_grid(args.output, max_bases_per_class=args.max_bases_per_class, scale=args.scale)
        print(f"wrote {path}")
    elif args.command == "push":
        if not args.path.is_dir():
            raise HubError(f"{args.path}: not a folder (save the dataset with save_pretrained first)")
        dataset = FactorizedDataset.from_pretrained(args.path, device="cpu")
        info = dataset.push_to_hub(args.repo_id, private=args.private or None, token=args.token,
                                   revision=args.revision, commit_message=args.message)  # fmt: skip
        print(f"pushed {args.path} to {args.repo_id}: {info.commit_url}")
    elif args.command == "download":
        dataset = FactorizedDataset.from_pretrained(
            args.name, revision=args.revision, cache_dir=args.cache_dir, token=args.token, device="cpu"
        )
        print(f"{dataset}\\nPreprocessing: {dataset.preprocessing.kind} (fetched)")
    elif args.command == "evaluate":
        _evaluate(args)
    elif args.command == "distill":
        return _distill(args)
    elif args.command == "experts":
        return _experts(args)
    elif args.command == "import":
        _import(args)
    elif args.command == "export":
        from .interop import export_dataset

        dataset = FactorizedDataset.from_pretrained(args.name, device="cpu")
        with _input_errors("", where=args.output):  # what the export says of the folder
            paths = export_dataset(dataset, args.to, args.output)
        print(f"wrote {len(paths)} files under {args.output}")
    elif args.command == "zoo":
        _zoo(args)
    elif args.command == "keep-state":
        from .distill.state import keep_state

        keep_state(args.run, args.state)
        print(f"wrote {args.state}")
    elif args.command == "restore-state":
        _restore_state(args)
    elif args.command == "keep-results":
        from .distill.study import keep_results

        with _input_errors(args.source):  # neither a run nor an evaluation
            keep_results(args.source, args.dest)
        print(f"wrote {args.dest}")
    elif args.command == "study":
        _study(args)
    elif args.command == "demo":
        from .demo import run_demo

        run_demo(args.output, epochs=args.epochs)
    return 0


def _zoo(args: argparse.Namespace) -> None:
    from .zoo import list_zoo, zoo_entry
    from .zoo.bundling import bundle, record, record_cross

    if args.zoo_command == "list":
        print("\t".join(("# name", "recipe", "profile", "experts", "run", "results", "test accuracy %")))
        for entry in map(zoo_entry, list_zoo()):
            m = entry.metrics
            accuracy = f"{100 * m['test_accuracy']:.2f} +- {100 * m['test_accuracy_std']:.2f} ({m['runs']} x {m['epochs']})"
            print("\t".join((entry.name, entry.recipe, entry.profile, entry.experts or "-", entry.run, entry.results, accuracy)))
        return
    if args.zoo_command == "bundle":
        entry = zoo_entry(args.name)  # what an option left out takes from the bundled entry
        runs = args.runs if args.runs is not None else entry.protocol[0]
        epochs = args.epochs if args.epochs is not None else entry.protocol[1]
        normalize = args.normalize if args.normalize is not None else entry.normalize
        with _input_errors(args.run):  # a run of another entry
            path = bundle(args.name, args.run, runs=runs, epochs=epochs, zca_rank=args.zca_rank, normalize=normalize)
    else:
        with _input_errors(args.report):  # a report of another dataset or protocol
            path = record(args.name, args.report) if args.zoo_command == "record" else \
                record_cross(args.name, args.report, args.command_line)  # fmt: skip
    print(f"wrote {path}")


def _study(args: argparse.Namespace) -> None:
    from .distill.study import load_study

    with _input_errors(args.study):  # what the study file says wrong, or a run it does not have
        study = load_study(args.study)
        names = study.run_names(args.runs)
    for name in names:
        if args.list:
            print(f"{name}\t{study.command(name)}")
            continue
        with _input_errors(args.study, study.runs_dir, study.experts_dir, "parameterization.", "objective.",
                           "recipe section", *_NET_ERRORS):  # fmt: skip
            print(study.run(name, data_root=args.data_root))


def _restore_state(args: argparse.Namespace) -> None:
    from .distill.experts import Experts
    from .distill.state import refit_preprocessing, restore_state

    with _input_errors(args.state):  # a checkpoint that does not record what to fit
        preprocessing = Experts.open(args.experts_dir).preprocessing if args.experts_dir else \
            refit_preprocessing(args.state, args.data_root)  # fmt: skip
    with _input_errors(args.run):  # a folder that exists
        restore_state(args.state, args.run, preprocessing)
    print(f"wrote {args.run}")


def _import(args: argparse.Namespace) -> None:
    from .interop import import_dataset

    prep = args.preprocessing or ("zca" if args.zca else "identity")
    if args.zca and prep != "zca":
        raise UsageError(f"--zca: contradicts --preprocessing {prep}; give one of them")
    with _input_errors("", where=args.files[0]):  # what the import says of the files
        dataset = import_dataset(args.layout, args.files, dataset=args.dataset, preprocessing=prep, lr=args.lr,
                                 data_root=args.data_root)  # fmt: skip
    print(f"{dataset}\\nwrote {dataset.save_pretrained(args.output)}")


def _distill(args: argparse.Namespace) -> int:
    from .distill.loop import CHECKPOINT, LOG
    from .distill.recipe import load_recipe, parse_overrides, run_recipe

    try:
        recipe = load_recipe(args.recipe, profile=args.profile, overrides=parse_overrides(args.set))
    except ValueError as err:  # what load_recipe says of a bad recipe or --set
        raise UsageError(err) from None
    suffix = "".join(f"-{v}" for v in (args.profile, recipe["parameterization"]["kind"], recipe["objective"]["kind"]) if v)
    out = args.output or Path("runs") / f"{recipe['name']}{suffix}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output: {out} is a file; name a run folder (new, or an earlier run's with --resume)")
    if not args.resume and any((out / name).exists() for name in (CHECKPOINT, LOG)):
        raise UsageError(f"--output: {out} holds an earlier run; continue it with --resume, or choose another folder")
    experts = args.experts_dir or out / "experts"
    with _input_errors(out, experts, "parameterization.", "objective.", "recipe section", *_NET_ERRORS, where=args.recipe):
        dataset = run_recipe(recipe, out, data_root=args.data_root, experts_dir=args.experts_dir, device=args.device,
                             resume=args.resume, push=args.push)  # fmt: skip
    if os.environ.get("RANK", "0") != "0":  # torchrun: process 0 evaluated and reports
        return 0
    metrics = dataset.provenance["metrics"]
    if "test_accuracy" in metrics:
        measured = (f"test accuracy {100 * metrics['test_accuracy']:.2f} +- {100 * metrics['test_accuracy_std']:.2f} "
                    f"({metrics['runs']} runs x {metrics['epochs']} epochs)")  # fmt: skip
    else:  # evaluation.runs 0
        measured = f"validation accuracy {100 * metrics['val_accuracy']:.2f} (no final evaluation: evaluation.runs is 0)"
    print(f"{recipe['name']}: {measured}, selected iteration {dataset.provenance['selected_iteration']}")
    print(f"wrote {out / 'dataset'}")
    return 0


#: How :func:`haba_datasets.nets.create_net` refuses options (a recipe's or the command's).
_NET_ERRORS = ("bad options", "width must", "depth must")


def _experts(args: argparse.Namespace) -> int:
    import torch

    from .distill.experts import train_experts
    from .nets import create_net

    out = args.output or Path("experts") / Path(args.dataset).name
    options = {k: v for k, v in (("width", args.width), ("depth", args.depth)) if v is not None}
    try:
        with torch.device("meta"):  # the options, checked before any data is read
            create_net(args.net, 3, 10, 1024, **options)
    except ValueError as err:
        raise UsageError(f"--net {args.net} {' '.join(f'--{k} {v}' for k, v in options.items())}: {err}") from None
    with _input_errors(out, "need "):  # what train_experts says of bad settings or a folder of other experts
        train_experts(out, dataset=args.dataset, data_root=args.data_root, experts=args.experts, epochs=args.epochs,
                      net=args.net, net_options=options, preprocessing=args.preprocessing, lr=args.lr,
                      batch_size=args.batch_size, dsa=not args.no_dsa, momentum=args.momentum,
                      weight_decay=args.weight_decay, lr_steps=args.lr_steps, keep=args.keep, seed=args.seed,
                      device=args.device)  # fmt: skip
    if os.environ.get("RANK", "0") == "0":  # torchrun: one line, not one per process
        print(f"wrote {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluate import Protocol, SettingError, load_evaluation_data

    with _input_errors("", where=args.name):  # reading the data: every ValueError is about the user's input
        try:
            data = load_evaluation_data(args.name, dataset=args.dataset, ipc=args.ipc, preprocessing=args.preprocessing,
                                        seed=args.seed, lr=args.lr, data_root=args.data_root, revision=args.revision,
                                        device=args.device, pairing=args.pairing, soft_labels=not args.hard_labels)  # fmt: skip
        except SettingError as err:
            raise UsageError(f"--{err.setting}: {err}") from None
    args.runs, args.epochs = data.runs(args.runs), data.epochs(args.epochs)
    protocol = Protocol(epochs=args.epochs, batch_size=args.batch_size, lr=data.lr if data.lr is not None else 0.01,
                        dsa=not args.no_dsa, curve_points=args.curve_points)  # fmt: skip
    if args.models:
        return _cross_architecture(args, data, protocol)
    report = data.evaluate(protocol, runs=args.runs, model=args.model, seed=args.seed, device=args.device)
    paths = report.save(args.output or Path("evaluation") / f"{_stem(args)}-{args.model}")
    print(f"{data.setting['train']}, {args.model}, {args.epochs} epochs: {report}")
    if recorded := data.recorded_accuracy():
        print(f"the dataset's card records {recorded}")
    print("wrote " + ", ".join(map(str, paths)))


def _stem(args: argparse.Namespace) -> str:
    """The default output folder's name: the dataset's, and the real subset's size."""
    return Path(str(args.name)).name + (f"-ipc{args.ipc}" if args.ipc else "")


def _cross_architecture(args: argparse.Namespace, data, protocol) -> None:
    from .cross_architecture import evaluate_across_architectures
    from .evaluate import SettingError

    folder = args.output or Path("evaluation") / f"{_stem(args)}-cross-architecture"
    with _input_errors(folder):  # what it says of a progress.json from another setting
        try:
            report = evaluate_across_architectures(data, protocol, models=args.models, folder=folder, runs=args.runs,
                                                   grid=args.lr_grid, lr_epochs=args.lr_epochs, baseline=bool(args.baseline),
                                                   resume=args.resume, seed=args.seed, device=args.device)  # fmt: skip
        except SettingError as err:
            raise UsageError(f"--{err.setting}: {err}") from None
    grid, lr_epochs, scale = report.setting["lr_grid"], report.setting["lr_epochs"], report.setting["image_scale"]
    print(f"{data.setting['train']}: {args.runs} run(s) x {args.epochs} epochs per network; lr of the other networks chosen "
          f"on the validation split from {grid} ({lr_epochs} epochs each)")  # fmt: skip
    print(report.table())
    if not 0.1 <= scale <= 10:
        print(f"note: the images' standard deviation is {scale:.3g}x the real images'; networks without normalisation "
              "may diverge on them (a dataset whose hallucinators' scale drifted: see their option normalize)")  # fmt: skip
    print(f"wrote {folder}: report.json, table.md, chart.png and each network's report and curves")


if __name__ == "__main__":
    sys.exit(main())
