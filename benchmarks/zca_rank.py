"""How much a truncated ZCA (top K eigenvectors, ``ZCA.truncated``) changes whitened real images,
against the bytes its preprocessing.safetensors takes: the trade-off behind the zoo's K = 512.

Fits the full ZCA (eps 0.1) on the CIFAR-10 training split, whitens the first 2,000 test images
with the full and the truncated transform, and reports the relative L2 change of the whitened
images and of the inverse of random model-space images.

    python benchmarks/zca_rank.py [--data-root ../shared/data] [--write benchmarks/README.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import save

from haba_datasets import load_real

sys.path.insert(0, str(Path(__file__).parent))
from _report import write_section  # noqa: E402


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--ranks", type=int, nargs="+", default=[256, 512, 768, 1024, 3072])
    parser.add_argument("--write", type=Path, help="also write the table into this markdown file")
    args = parser.parse_args()
    real = load_real("cifar10", data_root=args.data_root)
    full = real.fit_preprocessing("zca")
    images = real.test.floats()[:2000]
    syn = torch.randn(100, *real.image_shape, generator=torch.Generator().manual_seed(0))
    white, back = full(images), full.inverse(syn)
    rows = ["| K (eigenvectors kept) | preprocessing.safetensors | whitened test images: relative change | inverse: relative change |",
            "|---|---|---|---|"]  # fmt: skip
    for k in args.ranks:
        zca = full.truncated(k)
        size = len(save({name: t.contiguous() for name, t in zca.tensors().items()}))
        rows.append(f"| {k} | {size:,} bytes | {100 * relative(zca(images), white):.3f}% | {100 * relative(zca.inverse(syn), back):.3f}% |")
    text = (
        "CIFAR-10, ZCA eps 0.1 fitted on the 45,000 training images; 2,000 real test images; 100 random\n"
        "model-space images for the inverse. `python benchmarks/zca_rank.py --data-root ../shared/data`\n\n"
        + "\n".join(rows)
    )
    print(text)
    if args.write:
        write_section(args.write, "Truncated ZCA (`benchmarks/zca_rank.py`)", text)


if __name__ == "__main__":
    main()
