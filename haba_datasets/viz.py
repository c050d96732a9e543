"""Pictures: model-space images made viewable, and labelled image grids."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.v2.functional import to_pil_image
from torchvision.utils import make_grid

_PAD = 2


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """A ``(C, H, W)`` float image in [0, 1] as a PIL image (``L`` for one channel, else ``RGB``)."""
    return to_pil_image(pixels.clamp(0, 1).mul(255).round().to(torch.uint8))


def factor_grid(pixels: torch.Tensor, groups: list[tuple[str, int]], *, columns: int, scale: int = 2) -> Image.Image:
    """Tile ``pixels`` (``(rows * columns, C, H, W)`` in [0, 1], row-major) into a grid.

    ``groups`` splits the rows into labelled blocks ``(name, number of rows)``; each block's name
    is written to the left of its first row.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    tiles = torch.nn.functional.interpolate(pixels, scale_factor=scale, mode="nearest") if scale > 1 else pixels
    body = to_pil(make_grid(tiles, nrow=columns, padding=_PAD, pad_value=1.0))
    font = ImageFont.load_default()
    margin = 8 + max(int(ImageDraw.Draw(body).textlength(name, font=font)) for name, _ in groups)
    canvas = Image.new("RGB", (body.width + margin, body.height), "white")
    canvas.paste(body, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = tiles.shape[2] + _PAD
    row = 0
    for name, n_rows in groups:
        draw.text((4, _PAD + row * row_height + tiles.shape[2] // 2 - 5), name, fill="black", font=font)
        row += n_rows
    return canvas
