"""Put a recipe run's dataset into the package zoo, then record the zoo measurement on its card.

    python recipes/zoo.py bundle NAME RUN_DIR --runs 3 --epochs 500 [--zca-rank 512] [--normalize]
    haba-datasets evaluate NAME --data-root ../shared/data -o recipes/results/zoo/NAME
    python recipes/zoo.py record NAME recipes/results/zoo/NAME/report.json
    python recipes/zoo.py record-cross NAME REPORT --command "haba-datasets evaluate NAME --models ..."

``bundle`` copies ``RUN_DIR/dataset`` to ``haba_datasets/zoo/NAME``: the same factors, the ZCA
(if any) truncated to its top ``--zca-rank`` eigenvectors (3072 x 3072 floats are 38 MB; see
``ZCA.truncated``), with ``--normalize`` the hallucinators' ``normalize`` option turned on (each
image shifted and scaled to its basis's mean and std; recorded in the provenance), the recipe's
published numbers, and the protocol the card will be measured with (``haba-datasets evaluate NAME``
then uses it by default). The test accuracy the recipe run measured
before truncation is dropped: the card states only what is measured on the bundled files.
``record`` writes the evaluation report's mean +- std into the card, after checking that the report
is about NAME with that protocol. ``record-cross`` puts a cross-architecture table (with its
random-real baseline and budget) on the card.
"""

import argparse
import json
from pathlib import Path

from haba_datasets import FactorizedDataset
from haba_datasets.cross_architecture import card_summary
from haba_datasets.distill.recipe import load_recipe
from haba_datasets.hub import ZOO, ZOO_DIR
from haba_datasets.preprocessing import ZCA

RECIPES = Path(__file__).parent


def bundle(name: str, run: Path, runs: int, epochs: int, zca_rank: int | None, normalize: bool) -> Path:
    dataset = FactorizedDataset.from_pretrained(run / "dataset", device="cpu")
    if dataset.provenance.get("name") != name:
        raise SystemExit(f"error: {run} holds {dataset.provenance.get('name')!r}, not {name!r}")
    if isinstance(dataset.preprocessing, ZCA) and zca_rank:
        dataset = dataset.replace(preprocessing=dataset.preprocessing.truncated(zca_rank),
                                  provenance={**dataset.provenance, "zca_rank": zca_rank})  # fmt: skip
    if normalize and not dataset.hallucinators.options().get("normalize"):
        dataset = dataset.replace(hallucinators=dataset.hallucinators.with_options(normalize=True),
                                  provenance={**dataset.provenance, "normalize_added_at_bundle": True})  # fmt: skip
    metrics = dataset.provenance["metrics"]
    dataset.provenance["metrics"] = {"val_accuracy": metrics["val_accuracy"], "runs": runs, "epochs": epochs,
                                     "model": metrics["model"]}  # fmt: skip
    dataset.provenance["reference"] = load_recipe(RECIPES / f"{name}.yaml").get("reference", {})
    return dataset.save_pretrained(ZOO_DIR / name)


def record(name: str, report_path: Path) -> Path:
    dataset = FactorizedDataset.from_pretrained(ZOO_DIR / name, device="cpu")
    report = json.loads(report_path.read_text())
    metrics = dataset.provenance["metrics"]
    accuracy = report["test_accuracy"]
    measured = (len(accuracy["runs"]), report["protocol"]["epochs"], report["model"])
    if not report["train"].startswith(f"{name} ") or measured != (metrics["runs"], metrics["epochs"], metrics["model"]):
        raise SystemExit(f"error: {report_path} measured {report['train']!r} with {measured}, "
                         f"the card asks for {name} with {(metrics['runs'], metrics['epochs'], metrics['model'])}")  # fmt: skip
    metrics.update(test_accuracy=accuracy["mean"], test_accuracy_std=accuracy["std"], torch_threads=report["environment"]["threads"],
                   command=f"haba-datasets evaluate {name} --data-root ../shared/data")  # fmt: skip
    return dataset.save_pretrained(ZOO_DIR / name)


def record_cross(name: str, report_path: Path, command: str) -> Path:
    """Put a cross-architecture report of NAME (``haba-datasets evaluate NAME --models ...``) on its card."""
    dataset = FactorizedDataset.from_pretrained(ZOO_DIR / name, device="cpu")
    report = json.loads(report_path.read_text())
    if not report["train"].startswith(f"{name} ") or f"evaluate {name} " not in command:
        raise SystemExit(f"error: {report_path} measured {report['train']!r}, not {name}, or the command is not its")
    dataset.provenance["cross_architecture"] = card_summary(report, command)
    return dataset.save_pretrained(ZOO_DIR / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("bundle")
    p.add_argument("name", choices=sorted(ZOO))
    p.add_argument("run", type=Path, help="a `haba-datasets distill` output folder")
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--zca-rank", type=int, default=512)
    p.add_argument("--normalize", action="store_true",
                   help="turn the hallucinators' `normalize` option on (each image at its basis's mean and std)")
    p = sub.add_parser("record")
    p.add_argument("name", choices=sorted(ZOO))
    p.add_argument("report", type=Path, help="report.json of `haba-datasets evaluate NAME`")
    p = sub.add_parser("record-cross")
    p.add_argument("name", choices=sorted(ZOO))
    p.add_argument("report", type=Path, help="report.json of `haba-datasets evaluate NAME --models ...`")
    p.add_argument("--command", dest="command_line", required=True, help="the evaluate command that wrote the report")
    args = parser.parse_args()
    if args.command == "bundle":
        print("wrote", bundle(args.name, args.run, args.runs, args.epochs, args.zca_rank, args.normalize))
    elif args.command == "record":
        print("wrote", record(args.name, args.report))
    else:
        print("wrote", record_cross(args.name, args.report, args.command_line))


if __name__ == "__main__":
    main()
