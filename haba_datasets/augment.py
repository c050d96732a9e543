"""Differentiable siamese augmentation (DSA) for dataset distillation.

DSA (Zhao & Bilen, 2021) as used by DM, MTT and HaBa, in its "single" mode: each call picks ONE
family at random from ``color, crop, cutout, flip, scale, rotate`` and applies it with random
parameters drawn per sample. Every family is differentiable w.r.t. the images, so gradients reach
synthetic images through the augmentation. It is "siamese" because a :class:`Draw` (the family and
its parameters) can be applied to several batches, e.g. a real and a synthetic one::

    dsa = DSA()
    draw = dsa.draw(len(real), real.shape[-2:], device=real.device, generator=g)
    loss = distance(net(dsa(real, draw)), net(dsa(syn, draw)))  # same transform per sample

A per-sample draw for N samples applies to batches of N samples only; a shared draw
(``shared=True``: one parameter set for every sample) applies to batches of any size.
Everything is vectorised over the batch and runs on the images' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["DSA", "Draw", "FAMILIES"]

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")

_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)
_DTYPE_CHECKS: dict[str, tuple[str, Callable[[torch.Tensor], bool]]] = {
    "float": ("a floating point", torch.Tensor.is_floating_point),
    "int": ("a signed integer", lambda t: t.dtype in _INTEGER_DTYPES),
    "bool": ("a bool", lambda t: t.dtype == torch.bool),
}
# The parameters of each family: name -> (shape of one sample's value, kind of dtype).
_PARAMS: dict[str, dict[str, tuple[tuple[int, ...], str]]] = {
    "color": {"brightness": ((), "float"), "saturation": ((), "float"), "contrast": ((), "float")},
    "crop": {"shift": ((2,), "int")},
    "cutout": {"box": ((4,), "int")},
    "flip": {"flip": ((), "bool")},
    "scale": {"scale": ((2,), "float")},
    "rotate": {"angle": ((), "float")},
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown augmentation family {family!r}; known: {', '.join(FAMILIES)}")


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"expected a (N, C, H, W) batch of images, got shape {tuple(getattr(x, 'shape', ()))}")


@dataclass(frozen=True, eq=False)
class Draw:
    """One random draw: a family and its parameters, to apply identically to several batches.

    ``params`` maps names to tensors whose first dimension is the batch size N (one row per
    sample) or 1 (one row shared by every sample). Build one by hand to choose the parameters:

    - ``color``: ``brightness`` (N,) added to every pixel, then ``saturation`` (N,) scales the
      deviation from the per-pixel channel mean, then ``contrast`` (N,) scales the deviation from
      the per-sample mean over (C, H, W). ``0, 1, 1`` is the identity.
    - ``crop``: ``shift`` (N, 2) integer ``(dy, dx)``: the content moves down by dy and right by dx
      pixels (a translation); pixels it uncovers are 0.
    - ``cutout``: ``box`` (N, 4) integer ``(y0, x0, y1, x1)``: pixels with ``y0 <= y < y1`` and
      ``x0 <= x < x1`` are set to 0 (the box may reach outside the image).
    - ``flip``: ``flip`` (N,) bool: flip horizontally where true.
    - ``scale``: ``scale`` (N, 2) ``(sy, sx)``: factors on the sampling grid, about the centre
      (> 1 shrinks the content; 1 is the identity).
    - ``rotate``: ``angle`` (N,) degrees, about the centre; positive turns the content counter-clockwise
      (90 degrees is ``torch.rot90(x, 1, dims=(2, 3))``).
    """

    family: str
    params: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        _check_family(self.family)
        expected = _PARAMS[self.family]
        if set(self.params) != set(expected):
            raise ValueError(f"{self.family!r} draw takes params {sorted(expected)}, got {sorted(self.params)}")
        sizes = set()
        for name, (shape, kind) in expected.items():
            value = self.params[name]
            what, is_kind = _DTYPE_CHECKS[kind]
            if not isinstance(value, torch.Tensor) or not is_kind(value):
                raise ValueError(f"param {name!r} of a {self.family!r} draw must be {what} tensor")
            if value.ndim != 1 + len(shape) or tuple(value.shape[1:]) != shape or value.shape[0] < 1:
                want = ", ".join(["N", *map(str, shape)])
                raise ValueError(f"param {name!r} of a {self.family!r} draw must have shape ({want}) with N >= 1, "
                                 f"got {tuple(value.shape)}")  # fmt: skip
            sizes.add(value.shape[0])
        if len(sizes) > 1:
            raise ValueError(f"params of a {self.family!r} draw disagree on the batch size: {sorted(sizes)}")

    @property
    def batch_size(self) -> int:
        """Number of parameter rows: the batch size it applies to, or 1 for a draw shared by all samples."""
        return next(iter(self.params.values())).shape[0]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Apply this draw to a ``(N, C, H, W)`` batch (differentiable w.r.t. ``x``)."""
        _check_images(x)
        if self.batch_size not in (1, x.shape[0]):
            raise ValueError(f"a draw for {self.batch_size} samples cannot be applied to a batch of {x.shape[0]}; "
                             "draw with shared=True to reuse it across batch sizes")  # fmt: skip
        return _APPLY[self.family](x, **{name: value.to(x.device) for name, value in self.params.items()})


def _color(x: torch.Tensor, brightness: torch.Tensor, saturation: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    b, s, c = (v.to(x.dtype).view(-1, 1, 1, 1) for v in (brightness, saturation, contrast))
    x = x + b
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * s + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean


def _crop(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))  # a 1-pixel zero border: out-of-range sources are clamped onto it
    shift = shift.long()
    rows = (torch.arange(h, device=x.device) - shift[:, :1]).clamp(-1, h) + 1  # (N or 1, H) rows of `padded`
    cols = (torch.arange(w, device=x.device) - shift[:, 1:]).clamp(-1, w) + 1
    padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2))
    return padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _cutout(x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.arange(x.shape[2], device=x.device), torch.arange(x.shape[3], device=x.device)
    in_rows = (ys >= box[:, 0:1]) & (ys < box[:, 2:3])  # (N or 1, H)
    in_cols = (xs >= box[:, 1:2]) & (xs < box[:, 3:4])
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def _affine(x: torch.Tensor, rows: list[list[torch.Tensor]]) -> torch.Tensor:
    """Resample ``x`` through the affine maps whose 2x3 matrices have the given (N or 1,) entries."""
    theta = torch.stack([torch.stack(row, dim=1) for row in rows], dim=1).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _scale(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    sy, sx = scale.to(x.dtype).unbind(1)
    zero = torch.zeros_like(sx)
    return _affine(x, [[sx, zero, zero], [zero, sy, zero]])


def _rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    radians = torch.deg2rad(angle.to(x.dtype))
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    return _affine(x, [[cos, -sin, zero], [sin, cos, zero]])


_APPLY: dict[str, Callable[..., torch.Tensor]] = {
    "color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip, "scale": _scale, "rotate": _rotate,
}  # fmt: skip


class _Random:
    """Random tensors made with ``generator`` (on its device) and moved to ``device``."""

    def __init__(self, device: torch.device, generator: torch.Generator | None) -> None:
        self.device, self.generator = device, generator
        self.source = generator.device if generator is not None else device

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        u = torch.rand(shape, generator=self.generator, device=self.source)
        return (u * (high - low) + low).to(self.device)

    def integers(self, low: int, high: int, *shape: int) -> torch.Tensor:
        """Integers in ``[low, high]`` (both included)."""
        return torch.randint(low, high + 1, shape, generator=self.generator, device=self.source).to(self.device)


class DSA:
    """Differentiable siamese augmentation (one random family per call).

    ``families`` are the ones a call picks from, uniformly. The strengths follow the reference DSA:
    ``crop`` (max translation, fraction of the size), ``cutout`` (side of the square, fraction of
    the size), ``scale`` (x and y factors in ``[1/scale, scale]``), ``rotate`` (max angle in
    degrees), ``brightness`` (offset in ``[-b/2, b/2]``), ``saturation`` (factor in
    ``[0, saturation]``) and ``contrast`` (factor in ``[contrast, contrast + 1]``).
    """

    def __init__(self, families: tuple[str, ...] = FAMILIES, *, crop: float = 0.125, cutout: float = 0.5,
                 scale: float = 1.2, rotate: float = 15.0, brightness: float = 1.0, saturation: float = 2.0,
                 contrast: float = 0.5) -> None:  # fmt: skip
        self.families = tuple(families)
        if not self.families:
            raise ValueError("DSA needs at least one family")
        for family in self.families:
            _check_family(family)
        if scale < 1:
            raise ValueError(f"scale must be >= 1 (factors are drawn in [1/scale, scale]), got {scale}")
        self.crop, self.cutout, self.scale, self.rotate = crop, cutout, scale, rotate
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast

    def draw(self, batch_size: int, size: tuple[int, int], *, device: torch.device | str | None = None,
             generator: torch.Generator | None = None, family: str | None = None, shared: bool = False
             ) -> Draw:  # fmt: skip
        """Pick a family (at random from ``self.families`` unless ``family`` is given) and its parameters.

        ``size`` is the images' ``(H, W)`` (crop and cutout draw whole pixels). ``shared`` draws one
        parameter set for all samples (tensors of batch size 1), so the draw applies to a batch of
        any size; otherwise one set per sample for a batch of ``batch_size``. The tensors are made
        with ``generator`` (on its device) and put on ``device`` (default: the generator's, or CPU).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        h, w = size
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        rnd = _Random(torch.device(device), generator)
        if family is None:
            family = self.families[int(rnd.integers(0, len(self.families) - 1, 1))]
        _check_family(family)
        n = 1 if shared else batch_size
        if family == "color":
            params = {
                "brightness": rnd.uniform(n, low=-self.brightness / 2, high=self.brightness / 2),
                "saturation": rnd.uniform(n, high=self.saturation),
                "contrast": rnd.uniform(n, low=self.contrast, high=self.contrast + 1),
            }
        elif family == "crop":
            dy, dx = int(h * self.crop + 0.5), int(w * self.crop + 0.5)
            params = {"shift": torch.stack([rnd.integers(-dy, dy, n), rnd.integers(-dx, dx, n)], dim=1)}
        elif family == "cutout":
            sy, sx = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
            # Centres as in the reference: in [0, H] for an even side, [0, H - 1] for an odd one.
            y0 = rnd.integers(0, h - sy % 2, n) - sy // 2
            x0 = rnd.integers(0, w - sx % 2, n) - sx // 2
            params = {"box": torch.stack([y0, x0, y0 + sy, x0 + sx], dim=1)}
        elif family == "flip":
            params = {"flip": rnd.uniform(n) < 0.5}
        elif family == "scale":
            params = {"scale": rnd.uniform(n, 2, low=1 / self.scale, high=self.scale)}
        else:
            params = {"angle": rnd.uniform(n, low=-self.rotate, high=self.rotate)}
        return Draw(family, params)

    def __call__(self, x: torch.Tensor, draw: Draw | None = None, *, generator: torch.Generator | None = None
                 ) -> torch.Tensor:  # fmt: skip
        """Augment a ``(N, C, H, W)`` batch with ``draw``, or with a fresh one made with ``generator``."""
        _check_images(x)
        if draw is None:
            draw = self.draw(x.shape[0], (x.shape[2], x.shape[3]), device=x.device, generator=generator)
        elif generator is not None:
            raise ValueError("give either a draw or a generator to draw one with, not both")
        return draw.apply(x)
