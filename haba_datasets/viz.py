"""Pictures: model-space images made viewable, labelled image grids, and charts saved as PNG
without touching pyplot's global state (a user's open figures and backend stay as they are)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.v2.functional import to_pil_image
from torchvision.utils import make_grid

from .fileformat import write_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["factor_grid", "new_figure", "png_bytes", "save_png", "to_pil"]

_PAD = 2
_GAP = 12  # white space between two classes' panels


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """A ``(C, H, W)`` float image in [0, 1] as a PIL image (``L`` for one channel, else ``RGB``)."""
    return to_pil_image(pixels.clamp(0, 1).mul(255).round().to(torch.uint8))


def new_figure(**kwargs) -> Figure:
    """A matplotlib ``Figure(**kwargs)`` drawn by Agg, outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def png_bytes(picture: Figure | Image.Image, *, dpi: int = 100) -> bytes:
    """``picture`` encoded as PNG: a PIL image as it is, a figure laid out first."""
    png = io.BytesIO()
    if isinstance(picture, Image.Image):
        picture.save(png, format="PNG")
    else:
        picture.tight_layout()
        picture.savefig(png, format="png", dpi=dpi)
    return png.getvalue()


def save_png(picture: Figure | Image.Image, path: str | Path, *, dpi: int = 100) -> Path:
    """Write ``picture`` (see :func:`png_bytes`) to ``path`` atomically."""
    write_file(Path(path), png_bytes(picture, dpi=dpi))
    return Path(path)


def factor_grid(pixels: torch.Tensor, groups: list[tuple[str, int]], *, columns: int, scale: int = 2) -> Image.Image:
    """Tile ``pixels`` (``(rows * columns, C, H, W)`` in [0, 1], row-major) into labelled panels.

    ``groups`` splits the rows into blocks ``(name, number of rows)``, one per class. Each block
    is a panel of its rows (one basis each) by ``columns`` (one hallucinator each) under its name,
    and the panels are laid out side by side, as many to a line as keeps the picture closest to
    square, so a whole dataset reads at a glance.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    tiles = torch.nn.functional.interpolate(pixels, scale_factor=scale, mode="nearest") if scale > 1 else pixels
    tile_h, tile_w = tiles.shape[2] + _PAD, tiles.shape[3] + _PAD
    font = ImageFont.load_default()
    header = 14
    panels, start = [], 0
    for name, n_rows in groups:
        body = to_pil(make_grid(tiles[start : start + n_rows * columns], nrow=columns, padding=_PAD, pad_value=1.0))
        panels.append((name, body))
        start += n_rows * columns
    panel_w = columns * tile_w + _PAD + _GAP
    panel_h = max(n for _, n in groups) * tile_h + _PAD + header + _GAP
    per_line = min(range(1, len(groups) + 1), key=lambda p: (max(p * panel_w, -(-len(groups) // p) * panel_h), -p))
    lines = -(-len(groups) // per_line)
    canvas = Image.new("RGB", (per_line * panel_w, lines * panel_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, body) in enumerate(panels):
        x, y = (i % per_line) * panel_w, (i // per_line) * panel_h
        draw.text((x + _PAD, y + 1), _fit(draw, name, font, panel_w - 2 * _PAD), fill="black", font=font)
        canvas.paste(body, (x, y + header))
    return canvas


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…"
    return text
