"""Hallucinator architectures, registered by name.

A *hallucinator bank* holds ``count`` hallucinators of one architecture with their parameters
stacked along a leading dimension, so that a batch in which every sample uses a different
hallucinator is synthesised in a few tensor operations (one pair of convolutions per
hallucinator, never one call per sample).

The name under which an architecture is registered is what the file format stores, so a saved
dataset can be rebuilt without unpickling anything.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

__all__ = [
    "ConvHallucinators", "HallucinatorBank", "IdentityHallucinator", "UpsampledConvHallucinators",
    "create_hallucinators", "list_hallucinators", "register_hallucinators",
]

Shape = tuple[int, int, int]

#: Hallucinator architectures by the name the file format stores.
HALLUCINATORS = Registry("hallucinator architecture", name_attribute="architecture")
#: Class decorator registering a :class:`HallucinatorBank` subclass under a name (its ``architecture``).
register_hallucinators = HALLUCINATORS.register


def list_hallucinators() -> list[str]:
    """Names of the registered hallucinator architectures."""
    return HALLUCINATORS.names()


def create_hallucinators(
    architecture: str,
    count: int,
    basis_shape: Shape,
    image_shape: Shape,
    *,
    device: torch.device | str | None = None,
    **options,
) -> "HallucinatorBank":
    """Build ``count`` freshly initialised hallucinators of a registered architecture.

    ``basis_shape`` and ``image_shape`` are ``(channels, height, width)``; ``options`` are the
    architecture's own keyword arguments (stored in the file format's config).
    """
    return HALLUCINATORS[architecture](count, tuple(basis_shape), tuple(image_shape), device=device, **options)


class HallucinatorBank(nn.Module):
    """Base class: ``count`` hallucinators mapping bases ``basis_shape`` to images ``image_shape``.

    Subclasses implement :meth:`forward_one` (one hallucinator on a batch) and may override
    :meth:`options` (their JSON-serialisable constructor keywords).
    """

    architecture: str = ""

    def __init__(self, count: int, basis_shape: Shape, image_shape: Shape) -> None:
        super().__init__()
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive int, got {count!r}")
        for name, shape in (("basis_shape", basis_shape), ("image_shape", image_shape)):
            if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
                raise ValueError(f"{name} must be (channels, height, width) of positive ints, got {shape!r}")
        self.count = count
        self.basis_shape = tuple(basis_shape)
        self.image_shape = tuple(image_shape)

    def options(self) -> dict:
        """Constructor keywords beyond count and shapes (stored in the format's config)."""
        return {}

    def forward_one(self, bases: torch.Tensor, k: int) -> torch.Tensor:
        """Apply hallucinator ``k`` to every basis of a ``(B, *basis_shape)`` batch."""
        raise NotImplementedError

    def with_options(self, **changes) -> "HallucinatorBank":
        """A new bank of the same architecture and parameters (copied), ``changes`` to its :meth:`options`."""
        parameter = next(self.parameters(), None)
        bank = create_hallucinators(self.architecture, self.count, self.basis_shape, self.image_shape,
                                    device=None if parameter is None else parameter.device,
                                    **{**self.options(), **changes})  # fmt: skip
        bank.load_state_dict(self.state_dict())
        return bank

    def forward(self, bases: torch.Tensor, index: int | torch.Tensor) -> torch.Tensor:
        """Images ``h_index[i](bases[i])``, shape ``(B, *image_shape)``.

        ``index`` is one hallucinator for the whole batch (an int) or one per sample (a 1-D
        integer tensor). Per-sample indices cost one call of :meth:`forward_one` per distinct
        hallucinator. Differentiable with respect to the bases and the parameters.
        """
        if bases.dim() != 4 or tuple(bases.shape[1:]) != self.basis_shape:
            raise ValueError(f"expected bases of shape (B, {', '.join(map(str, self.basis_shape))}), got {tuple(bases.shape)}")
        if isinstance(index, int):
            if not 0 <= index < self.count:
                raise IndexError(f"hallucinator index {index} out of range [0, {self.count})")
            return self.forward_one(bases, index)
        index = torch.as_tensor(index, device=bases.device)
        if index.shape != bases.shape[:1]:
            raise ValueError(f"need one hallucinator index per basis, got {tuple(index.shape)} for {bases.shape[0]} bases")
        if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < self.count:
            raise IndexError(f"hallucinator indices must lie in [0, {self.count})")
        out = bases.new_empty((bases.shape[0], *self.image_shape))
        order = torch.argsort(index)
        counts = torch.bincount(index, minlength=self.count).tolist()
        for k, positions in enumerate(order.split(counts)):
            if positions.numel():
                out.index_copy_(0, positions, self.forward_one(bases.index_select(0, positions), k))
        return out


@register_hallucinators("haba-conv")
class ConvHallucinators(HallucinatorBank):
    """The HaBa reference hallucinator, without any non-linearity.

    ``encoder``: Conv2d(basis channels -> image channels, 3x3, no padding), shrinking H and W by 2;
    ``scale``/``shift``: per-element affine of the encoder's output (init 1 and 0);
    ``decoder``: ConvTranspose2d(image channels -> image channels, 3x3), restoring H and W.
    Weights are stored in the PyTorch layouts of those modules with a leading hallucinator dim.

    ``init="default"`` is PyTorch's default conv initialisation (as the reference);
    ``init="identity"`` starts every hallucinator near the identity map (identity kernels plus
    the default initialisation scaled by 0.1), so that ``h(b)`` starts close to ``b``.

    ``normalize=True`` shifts and scales every image to its basis's mean and standard deviation
    (one scalar each over channels and pixels). Distillation cannot see an image's scale when it
    trains instance-normalised ConvNets (MTT, DM), so without it the scale of the layers drifts
    freely: hundreds to hundreds of thousands of times the real data's, which networks without
    normalisation (AlexNet) cannot train on. Those ConvNets train on both alike.
    """

    def __init__(self, count: int, basis_shape: Shape, image_shape: Shape, *, device=None, init: str = "default",
                 normalize: bool = False) -> None:  # fmt: skip
        super().__init__(count, basis_shape, image_shape)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        self.normalize = normalize
        self.resize_in, self.resize_out, (h, w) = self._resizes()
        cb, c = basis_shape[0], image_shape[0]
        if h < 3 or w < 3:
            raise ValueError(f"{self.architecture} needs its layers to run at >= 3x3, got {(h, w)}")
        kw = {"device": device, "dtype": torch.float32}
        self.encoder_weight = nn.Parameter(torch.empty(count, c, cb, 3, 3, **kw))
        self.encoder_bias = nn.Parameter(torch.empty(count, c, **kw))
        self.scale = nn.Parameter(torch.ones(count, c, h - 2, w - 2, **kw))
        self.shift = nn.Parameter(torch.zeros(count, c, h - 2, w - 2, **kw))
        self.decoder_weight = nn.Parameter(torch.empty(count, c, c, 3, 3, **kw))
        self.decoder_bias = nn.Parameter(torch.empty(count, c, **kw))
        if init not in ("default", "identity"):
            raise ValueError(f"init must be 'default' or 'identity', got {init!r}")
        if self.encoder_weight.device.type != "meta":
            self.reset_parameters(init)

    @torch.no_grad()
    def reset_parameters(self, init: str = "default") -> None:
        """Initialise every hallucinator (``init``: see the class docstring)."""
        for weight, bias in ((self.encoder_weight, self.encoder_bias), (self.decoder_weight, self.decoder_bias)):
            fan_in = weight.shape[2] * 9  # what PyTorch computes for Conv2d and ConvTranspose2d
            for k in range(self.count):
                nn.init.kaiming_uniform_(weight[k], a=math.sqrt(5))
            bias.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        self.scale.fill_(1.0)
        self.shift.fill_(0.0)
        if init == "identity":
            for p in (self.encoder_weight, self.encoder_bias, self.decoder_weight, self.decoder_bias):
                p.mul_(0.1)
            c, cb = self.image_shape[0], self.basis_shape[0]
            self.encoder_weight[:, :, :, 1, 1] += torch.eye(c, cb) if c == cb else 1.0 / cb
            self.decoder_weight[:, :, :, 1, 1] += torch.eye(c)

    def _resizes(self) -> tuple[nn.Module, nn.Module, tuple[int, int]]:
        """What runs before and after the layers, and the size the layers run at (here: none, the image's)."""
        if self.basis_shape[1:] != self.image_shape[1:]:
            raise ValueError(f"haba-conv needs bases and images of the same size, got {self.basis_shape} -> "
                             f"{self.image_shape} (haba-conv-up takes smaller bases)")  # fmt: skip
        return nn.Identity(), nn.Identity(), self.image_shape[1:]

    def forward_one(self, bases: torch.Tensor, k: int) -> torch.Tensor:
        z = F.conv2d(self.resize_in(bases), self.encoder_weight[k], self.encoder_bias[k])
        z = torch.addcmul(self.shift[k], z, self.scale[k])
        # ConvTranspose2d(stride 1, no padding) == Conv2d with padding 2 and the kernel transposed
        # and flipped; PyTorch's CPU Conv2d is many times faster than its ConvTranspose2d.
        kernel = self.decoder_weight[k].transpose(0, 1).flip(-1, -2)
        images = self.resize_out(F.conv2d(z, kernel, self.decoder_bias[k], padding=2))
        return scaled_like(images, bases) if self.normalize else images

    def options(self) -> dict:
        return {"normalize": True} if self.normalize else {}  # absent: the datasets saved before the option

    def module(self, k: int) -> nn.Module:
        """Hallucinator ``k`` as a plain ``nn.Module`` (Conv2d, affine, ConvTranspose2d), a copy."""
        if not 0 <= k < self.count:
            raise IndexError(f"hallucinator index {k} out of range [0, {self.count})")
        return _SingleConvHallucinator(self, k)


class _SingleConvHallucinator(nn.Module):
    """One :class:`ConvHallucinators` member as standard modules (the reference's per-image call)."""

    def __init__(self, bank: ConvHallucinators, k: int) -> None:
        super().__init__()
        c, cb = bank.image_shape[0], bank.basis_shape[0]
        device = bank.scale.device
        self.encoder = nn.Conv2d(cb, c, 3, device=device)
        self.decoder = nn.ConvTranspose2d(c, c, 3, device=device)
        with torch.no_grad():
            self.encoder.weight.copy_(bank.encoder_weight[k])
            self.encoder.bias.copy_(bank.encoder_bias[k])
            self.decoder.weight.copy_(bank.decoder_weight[k])
            self.decoder.bias.copy_(bank.decoder_bias[k])
        self.scale = nn.Parameter(bank.scale[k].detach().clone().unsqueeze(0))
        self.shift = nn.Parameter(bank.shift[k].detach().clone().unsqueeze(0))
        self.resize_in, self.resize_out = bank.resize_in, bank.resize_out  # they hold no parameters
        self.normalize = bank.normalize

    def forward(self, bases: torch.Tensor) -> torch.Tensor:
        images = self.resize_out(self.decoder(self.scale * self.encoder(self.resize_in(bases)) + self.shift))
        return scaled_like(images, bases) if self.normalize else images


def scaled_like(images: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """``images`` shifted and scaled to the mean and standard deviation of their ``bases`` (one
    scalar each per sample, over channels and pixels); a constant image becomes its basis's mean."""
    dims = (1, 2, 3)
    centred = images - images.mean(dims, keepdim=True)
    ratio = bases.std(dims, keepdim=True) / centred.std(dims, keepdim=True).clamp_min(1e-12)
    return centred * ratio + bases.mean(dims, keepdim=True)


@register_hallucinators("haba-conv-up")
class UpsampledConvHallucinators(ConvHallucinators):
    """Multi-formation HaBa: bases stored at ``1 / factor`` of the image size and upsampled
    (``mode``: ``"bilinear"`` or ``"nearest"``), with the ``haba-conv`` layers run at the image's size
    after upsampling (``at="image"``) or at the basis's size before it (``at="basis"``, which
    stores about ``factor**2`` times fewer hallucinator values, the per-element affine included).

    With factor 2 a 32x32 image slot of storage holds four 16x16 bases (the multi-formation of
    IDC, Kim et al. 2022), each still seen through every hallucinator. The factor is
    ``image size / basis size``, an integer, the same for height and width (1 is ``haba-conv``).
    ``init="identity"`` starts every hallucinator near ``h(b) = upsample(b)``.
    """

    def __init__(self, count: int, basis_shape: Shape, image_shape: Shape, *, device=None, init: str = "default",
                 mode: str = "bilinear", at: str = "image", normalize: bool = False) -> None:  # fmt: skip
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
        if at not in ("image", "basis"):
            raise ValueError(f"at must be 'image' or 'basis', got {at!r}")
        self._mode, self._at = mode, at
        super().__init__(count, basis_shape, image_shape, device=device, init=init, normalize=normalize)

    def _resizes(self):
        (hb, wb), (h, w) = self.basis_shape[1:], self.image_shape[1:]
        if h % hb or w % wb or h // hb != w // wb:
            raise ValueError(f"haba-conv-up needs images an integer factor larger than the bases, the same for height "
                             f"and width, got {self.basis_shape} -> {self.image_shape}")  # fmt: skip
        upsample = nn.Upsample(size=(h, w), mode=self._mode)
        return (upsample, nn.Identity(), (h, w)) if self._at == "image" else (nn.Identity(), upsample, (hb, wb))

    @property
    def factor(self) -> int:
        """Image size over basis size."""
        return self.image_shape[1] // self.basis_shape[1]

    def options(self) -> dict:
        return {"mode": self._mode, "at": self._at, **super().options()}


@register_hallucinators("identity")
class IdentityHallucinator(HallucinatorBank):
    """One hallucinator that returns its basis unchanged: a plain-image dataset in this format.

    Stores no parameters, so a plain distilled set (the baseline) costs exactly its images.
    """

    def __init__(self, count: int, basis_shape: Shape, image_shape: Shape, *, device=None) -> None:
        super().__init__(count, basis_shape, image_shape)
        if count != 1 or tuple(basis_shape) != tuple(image_shape):
            raise ValueError(f"identity takes count 1 and bases shaped like the images, got {count} x {basis_shape} -> {image_shape}")

    def forward_one(self, bases: torch.Tensor, k: int) -> torch.Tensor:
        return bases
