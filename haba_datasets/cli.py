"""The ``haba-datasets`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .io import FormatError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="haba-datasets", description="Factorized (HaBa) distilled datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="summary and storage of a saved factorized dataset")
    p.add_argument("path", type=Path)
    p = sub.add_parser("preview", help="write a PNG grid of bases x hallucinators")
    p.add_argument("path", type=Path)
    p.add_argument("-o", "--output", type=Path, default=Path("grid.png"))
    p.add_argument("--max-bases-per-class", type=int, default=10)
    p.add_argument("--scale", type=int, default=2)
    p = sub.add_parser("demo", help="tour on a toy task: build, save, load, train, draw, reject a corrupted copy")
    p.add_argument("-o", "--output", type=Path, default=Path("demo-output"))
    p.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except FormatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


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
    elif args.command == "demo":
        from .demo import run_demo

        run_demo(args.output, epochs=args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
