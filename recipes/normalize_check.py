"""What the hallucinators' ``normalize`` option changes on a published dataset, with its factors as they are.

    python recipes/normalize_check.py NAME --models ConvNet,AlexNet --epochs 300 --data-root ../shared/data \
        -o recipes/results/normalize/NAME.json

NAME (a zoo name, Hub repo or folder) as stored, and the same factors with ``normalize`` on (every
image shifted and scaled to its basis's mean and std), each trained once (seed 0) per network with
the evaluation protocol for ``--epochs``: ConvNet at the dataset's learned lr, every other network
at ``--lr``. Prints and writes the standard deviation of the images (and of the real validation
images), each run's validation and test accuracy, whether its loss diverged, and its time; draws
both (``OUT-stored.png``, ``OUT-normalize.png``: 3 bases per class).
"""

import argparse
import json
import time
from pathlib import Path

from haba_datasets import FactorizedDataset
from haba_datasets.data import load_real
from haba_datasets.evaluate import Protocol, real_eval_sets, train_and_test
from haba_datasets.fileformat import write_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--models", default="ConvNet,AlexNet", help='comma-separated; "" for the pictures and the scale only')
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.01, help="of every network but ConvNet")
    parser.add_argument("--data-root")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    stored = FactorizedDataset.from_pretrained(args.name, device="cpu", pairing="random")
    real = load_real(stored.provenance["dataset"], data_root=args.data_root)
    val, test = real_eval_sets(real, stored.preprocessing)
    results = {"name": args.name, "epochs": args.epochs, "runs": 1, "seed": 0, "real_val_std": float(val.tensors[0].std())}
    rescaled = stored.replace(hallucinators=stored.hallucinators.with_options(normalize=True))
    for variant, dataset in (("stored", stored), ("normalize", rescaled)):
        record = {"image_std": float(dataset.materialize().tensors[0].std()), "networks": {}}
        dataset.save_grid(args.out.with_name(f"{args.out.stem}-{variant}.png"), max_bases_per_class=3)
        for model in filter(None, args.models.split(",")):
            lr = dataset.learned_lr if model == "ConvNet" and dataset.learned_lr else args.lr
            start = time.perf_counter()
            run = train_and_test(dataset, test, num_classes=len(dataset.classes), model=model, val=val, seed=0,
                                 protocol=Protocol(epochs=args.epochs, lr=lr, curve_points=1), device="cpu",
                                 progress=False)  # fmt: skip
            record["networks"][model] = {"lr": lr, "val_accuracy": run.val_accuracy, "test_accuracy": run.test_accuracy,
                                         "diverged": run.diverged, "seconds": round(time.perf_counter() - start)}  # fmt: skip
            print(variant, model, json.dumps(record["networks"][model]), flush=True)
        results[variant] = record
    write_file(args.out, (json.dumps(results, indent=1) + "\n").encode())
    print("wrote", args.out)


if __name__ == "__main__":
    main()
