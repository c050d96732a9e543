"""A self-contained tour on a toy task: build, save, load, train from a DataLoader, draw, reject.

Used by ``haba-datasets demo``; needs no downloads. The toy task: 10 classes of coloured
sinusoidal gratings (orientation and colour set by the class, random phase and noise).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from .evaluate import accuracy, train_epoch
from .factorized import FactorizedDataset
from .hallucinators import create_hallucinators
from .fileformat import FormatError
from .nets import ConvNet
from .preprocessing import Normalize

__all__ = ["run_demo", "toy_images"]

TOY_CLASSES = [f"grating-{i}" for i in range(10)]
#: What the demo writes into its folder; the marker tells a later demo the folder is its own.
DEMO_MARKER = ".haba-demo"
DEMO_OUTPUTS = (DEMO_MARKER, "toy-ipc2", "toy-ipc2-grid.png", "toy-ipc2-corrupted")


def toy_images(n_per_class: int, *, size: int = 32, noise: float = 0.15, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images in [0, 1], labels)`` of the toy task: ``n_per_class`` images of each class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(TOY_CLASSES)).repeat_interleave(n_per_class)
    angle = labels.float() * math.pi / len(TOY_CLASSES)
    phase = torch.rand(len(labels), generator=g) * 2 * math.pi
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    wave = torch.sin(0.6 * (xx * angle.cos().view(-1, 1, 1) + yy * angle.sin().view(-1, 1, 1)) + phase.view(-1, 1, 1))
    hue = labels.float().view(-1, 1) * 2 * math.pi / len(TOY_CLASSES) + torch.tensor([0.0, 2.1, 4.2])
    colour = 0.5 + 0.4 * hue.cos()
    images = 0.5 + 0.35 * wave.unsqueeze(1) * colour.view(-1, 3, 1, 1)
    images = images + noise * torch.randn(images.shape, generator=g)
    return images.clamp(0, 1), labels


def run_demo(out: Path, *, epochs: int = 30, seed: int = 0) -> dict:
    """Run the tour, writing into ``out`` (new, empty or an earlier demo's; anything else raises
    ``FileExistsError``); returns the measured numbers."""
    out = Path(out)
    _claim(out)
    torch.manual_seed(seed)
    real, real_labels = toy_images(100, seed=seed)
    test, test_labels = toy_images(100, seed=seed + 1)
    norm = Normalize(real.mean((0, 2, 3)).tolist(), real.std((0, 2, 3)).tolist())
    ipc = 2
    pick = torch.cat([torch.nonzero(real_labels == c).squeeze(1)[:ipc] for c in range(len(TOY_CLASSES))])
    bank = create_hallucinators("haba-conv", 5, (3, 32, 32), (3, 32, 32), init="identity")
    dataset = FactorizedDataset(
        norm(real[pick]), real_labels[pick], bank, TOY_CLASSES, preprocessing=norm, device="cpu",
        provenance={"name": "toy gratings demo", "objective": "none: bases are real images, hallucinators near-identity (untrained)"},
    )  # fmt: skip
    folder = dataset.save_pretrained(out / "toy-ipc2")
    loaded = FactorizedDataset.from_pretrained(folder, device="cpu")
    print(loaded)
    print("storage:", loaded.storage)
    grid = loaded.save_grid(out / "toy-ipc2-grid.png")
    print(f"grid of bases x hallucinators: {grid}")

    model = ConvNet(3, len(TOY_CLASSES), width=32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(loaded, batch_size=32, shuffle=True)
    for _ in range(epochs):
        train_epoch(model, loader, optimizer, "cpu")
    test_set = TensorDataset(loaded.preprocessing(test), test_labels)
    acc = accuracy(model, DataLoader(test_set, batch_size=256), "cpu")
    print(f"ConvNet trained {epochs} epochs on {len(loaded)} synthesised images: toy test accuracy {acc:.1%} (chance 10%)")

    broken = dataset.save_pretrained(out / "toy-ipc2-corrupted")
    with open(broken / "factors.safetensors", "r+b") as f:
        f.seek(-16, 2)
        f.write(b"\xff" * 16)
    try:
        FactorizedDataset.from_pretrained(broken)
        raise AssertionError("a corrupted folder was accepted")
    except FormatError as err:
        print(f"corrupted copy rejected: {err}")
    return {"test_accuracy": acc, "images": len(loaded), "storage_ratio": loaded.storage.ratio}


def _claim(out: Path) -> None:
    """Refuse a folder holding anything but an earlier demo's output; mark it as the demo's."""
    if out.is_dir() and any(out.iterdir()):
        names = {p.name for p in out.iterdir()}
        if DEMO_MARKER not in names or names - set(DEMO_OUTPUTS):
            raise FileExistsError(f"{out}: not empty and not an earlier demo's output; the demo writes only into a new "
                                  "or empty folder (choose one with -o)")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("written by `haba-datasets demo`, which may replace this folder's files\n")
