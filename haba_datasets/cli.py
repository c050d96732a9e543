"""The ``haba-datasets`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .hub import HubError
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
    p = sub.add_parser("push", help="publish a saved dataset folder to a Hub dataset repo (one commit)")
    p.add_argument("path", type=Path)
    p.add_argument("repo_id", help="user/name")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="branch to commit to (created if needed)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    p = sub.add_parser("download", help="fetch a dataset (repo id or zoo name) into the Hugging Face cache")
    p.add_argument("name")
    p.add_argument("--revision", help="branch, tag or commit")
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    p = sub.add_parser("demo", help="tour on a toy task: build, save, load, train, draw, reject a corrupted copy")
    p.add_argument("-o", "--output", type=Path, default=Path("demo-output"))
    p.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (FormatError, HubError) as err:
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
        print(f"{dataset}\nPreprocessing: {dataset.preprocessing.kind} (fetched)")
    elif args.command == "demo":
        from .demo import run_demo

        run_demo(args.output, epochs=args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
