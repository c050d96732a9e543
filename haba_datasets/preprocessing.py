"""The transform between real pixels and the space a distilled dataset lives in.

Distilled images are produced in the space their objective used (for trajectory matching on
CIFAR: pixels in [0, 1], then ZCA whitening). A :class:`Preprocessing` carries that transform:
``forward`` maps real pixels in [0, 1] to model space (apply it to a real test set), ``inverse``
maps model space back to displayable pixels. Each kind is registered under the name the file
format stores; its parameters are JSON numbers (:meth:`Preprocessing.config`) or tensors
(:meth:`Preprocessing.tensors`, stored in their own safetensors file).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from .registry import Registry

__all__ = [
    "ZCA", "Identity", "Normalize", "Preprocessing", "create_preprocessing", "list_preprocessings",
    "preprocessing_class", "register_preprocessing",
]

#: Preprocessing kinds by the name the file format stores.
PREPROCESSINGS = Registry("preprocessing kind", name_attribute="kind")
#: Class decorator registering a :class:`Preprocessing` subclass under a name (its ``kind``).
register_preprocessing = PREPROCESSINGS.register


def list_preprocessings() -> list[str]:
    """Names of the known preprocessing kinds."""
    return PREPROCESSINGS.names()


def preprocessing_class(kind: str) -> type["Preprocessing"]:
    """The :class:`Preprocessing` subclass registered as ``kind``."""
    return PREPROCESSINGS[kind]


def create_preprocessing(kind: str, images: torch.Tensor | None, *, eps: float = 0.1) -> "Preprocessing":
    """A preprocessing of the registered ``kind`` fitted on ``images`` (``(N, C, H, W)`` in [0, 1];
    None for a kind that reads none, see :attr:`Preprocessing.fits_images`); ``eps``: ZCA's."""
    return PREPROCESSINGS[kind].fit(images, eps=eps)


_F32 = torch.finfo(torch.float32)


def finite_in_float32(value, *, positive: bool = False) -> bool:
    """Whether a JSON value is a number that stays finite in float32 (with ``positive``: at least
    float32's smallest normal number, so that dividing by it stays finite too)."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
        return False
    return abs(value) <= _F32.max and (not positive or value >= _F32.tiny)


def _check_keys(config: dict, expected: set[str]) -> None:
    if set(config) != expected:
        raise ValueError(f"preprocessing {config.get('kind')!r} takes keys {sorted(expected)}, got {sorted(config)}")


class Preprocessing(nn.Module):
    """Base class. Works on ``(C, H, W)`` images or ``(B, C, H, W)`` batches (a torchvision-style
    tensor transform: ``Compose([ToImage(), ToDtype(torch.float32, scale=True), preprocessing])``).
    """

    kind: ClassVar[str]
    #: Whether :meth:`fit` reads the images it is given (identity reads none).
    fits_images: ClassVar[bool] = True

    @classmethod
    def fit(cls, images: torch.Tensor | None, eps: float = 0.1) -> "Preprocessing":
        """Fit on ``(N, C, H, W)`` images in [0, 1]; ``eps`` regularises the fits that have it (ZCA's).
        The base class has no parameters to fit."""
        return cls()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real pixels in [0, 1] -> model space."""
        raise NotImplementedError

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Model space -> pixels (about [0, 1]; not clamped)."""
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-serialisable parameters, including ``kind``."""
        return {"kind": self.kind}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Tensor parameters, stored in a separate file (empty for most kinds)."""
        return {}

    @classmethod
    def check_config(cls, config: dict, image_shape: tuple[int, int, int]) -> None:
        """Raise ``ValueError`` unless ``config`` (from JSON) is valid for ``image_shape``."""
        _check_keys(config, {"kind"})

    @classmethod
    def tensor_shapes(cls, config: dict, image_shape: tuple[int, int, int]) -> dict[str, tuple[int | None, ...]]:
        """Shapes that :meth:`tensors` must have for ``config`` and ``image_shape`` (None: any size; for validation)."""
        return {}

    @classmethod
    def from_config(cls, config: dict, tensors: dict[str, torch.Tensor]) -> "Preprocessing":
        """Rebuild from :meth:`config` and :meth:`tensors` output (already validated)."""
        return cls()


@register_preprocessing("identity")
class Identity(Preprocessing):
    """Model space is pixel space."""

    fits_images = False


    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z


@register_preprocessing("normalize")
class Normalize(Preprocessing):
    """Per-channel ``(x - mean) / std``."""


    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    @classmethod
    def fit(cls, images: torch.Tensor, eps: float = 0.1) -> "Normalize":
        """Each channel's mean and std over ``images`` (``eps`` is not used)."""
        return cls(images.mean((0, 2, 3)).tolist(), images.std((0, 2, 3)).tolist())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean

    def config(self) -> dict:
        return {"kind": self.kind, "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    @classmethod
    def check_config(cls, config: dict, image_shape: tuple[int, int, int]) -> None:
        _check_keys(config, {"kind", "mean", "std"})
        for key in ("mean", "std"):
            values = config[key]
            if not (isinstance(values, list) and len(values) == image_shape[0]
                    and all(finite_in_float32(v, positive=key == "std") for v in values)):
                raise ValueError(f"preprocessing {key!r} must be a list of {image_shape[0]} numbers finite in float32"
                                 f"{' and positive' if key == 'std' else ''}, got {values!r}")  # fmt: skip
        if not all(finite_in_float32((x - m) / s) for m, s in zip(config["mean"], config["std"]) for x in (0, 1)):
            raise ValueError("preprocessing 'mean' and 'std' map pixels in [0, 1] beyond float32's range")

    @classmethod
    def from_config(cls, config: dict, tensors: dict[str, torch.Tensor]) -> "Normalize":
        return cls(config["mean"], config["std"])


@register_preprocessing("zca")
class ZCA(Preprocessing):
    """ZCA whitening of flattened images: ``W (x - mean)`` with ``W = U diag((S + eps)^-1/2) U^T``.

    ``S, U`` are the eigenvalues and eigenvectors of the unbiased covariance of the training
    images; ``eps`` regularises small eigenvalues. The inverse is ``U diag((S + eps)^1/2) U^T z + mean``.
    ``U`` may keep only the top ``K <= D`` eigenvectors (:meth:`truncated`): the other directions
    count as eigenvalue 0, so ``W = eps^-1/2 I + U (diag((S + eps)^-1/2) - eps^-1/2) U^T``, which is
    the formula above when ``K = D``. Applying it takes O(D K) memory, never D x D when K is well below D.
    """


    def __init__(self, mean: torch.Tensor, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, eps: float) -> None:
        super().__init__()
        d, k = mean.numel(), eigenvalues.numel()
        if mean.dim() != 1 or eigenvalues.dim() != 1 or eigenvectors.shape != (d, k) or not 1 <= k <= d:
            raise ValueError(
                f"ZCA needs mean (D,), eigenvalues (K,), eigenvectors (D, K) with 1 <= K <= D; got "
                f"{tuple(mean.shape)}, {tuple(eigenvalues.shape)}, {tuple(eigenvectors.shape)}"
            )
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        if float(eigenvalues.min()) < 0:
            raise ValueError("ZCA eigenvalues must be non-negative")
        self.eps = float(eps)
        self.register_buffer("mean", mean.float())
        self.register_buffer("eigenvalues", eigenvalues.float())
        self.register_buffer("eigenvectors", eigenvectors.float())
        self._cache: tuple | None = None

    @classmethod
    def fit(cls, images: torch.Tensor, eps: float = 0.1) -> "ZCA":
        """Fit on ``(N, C, H, W)`` images in [0, 1] (mean subtracted, unbiased covariance)."""
        if images.dim() != 4 or images.shape[0] < 2:
            raise ValueError(f"need a (N >= 2, C, H, W) batch of images, got {tuple(images.shape)}")
        flat = images.reshape(images.shape[0], -1).double()
        mean = flat.mean(0)
        centred = flat - mean
        cov = centred.T @ centred / (flat.shape[0] - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        return cls(mean, eigenvalues.clamp_min(0), eigenvectors, eps)

    def truncated(self, rank: int) -> "ZCA":
        """The same whitening with only the ``rank`` largest eigenvalues kept (the rest count as 0).

        Storage falls from ``D x D`` to ``D x rank`` values; a dropped eigenvalue ``s`` changes the
        gain of its direction by a factor ``(1 + s / eps)^1/2`` (e.g. 0.5% for ``s = eps / 100``).
        """
        if not 1 <= rank <= self.eigenvalues.numel():
            raise ValueError(f"rank must be in [1, {self.eigenvalues.numel()}], got {rank}")
        top = self.eigenvalues.argsort(descending=True)[:rank].sort().values  # keep eigh's ascending order
        return ZCA(self.mean, self.eigenvalues[top], self.eigenvectors[:, top], self.eps)

    def _maps(self) -> tuple[torch.Tensor | tuple[float, torch.Tensor], ...]:
        """Whitening and unwhitening, derived in float64 on first use: a dense D x D matrix when K
        is near D; otherwise ``(rest, gain - rest)`` of ``rest I + U diag(gain - rest) U^T``,
        applied without forming any D x D matrix (a truncated ZCA costs O(D K) memory)."""
        if self._cache is None:  # reset by _apply when buffers move or change dtype
            u = self.eigenvectors.double()
            s = self.eigenvalues.double() + self.eps
            pairs = ((s.rsqrt(), self.eps**-0.5), (s.sqrt(), self.eps**0.5))
            d, k = u.shape
            if 2 * k > d:
                eye = torch.eye(d, dtype=u.dtype, device=u.device)
                self._cache = tuple((rest * eye + (u * (gain - rest)) @ u.T).to(self.mean.dtype) for gain, rest in pairs)
            else:
                self._cache = tuple((rest, (gain - rest).to(self.mean.dtype)) for gain, rest in pairs)
        return self._cache

    def _map(self, flat: torch.Tensor, which: int) -> torch.Tensor:
        m = self._maps()[which]
        if isinstance(m, torch.Tensor):
            return flat @ m
        rest, delta = m
        return rest * flat + ((flat @ self.eigenvectors) * delta) @ self.eigenvectors.T

    def _apply(self, fn, recurse=True):  # moving buffers invalidates the cached maps
        self._cache = None
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._map(x.reshape(-1, self.mean.numel()) - self.mean, 0).reshape(x.shape)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return (self._map(z.reshape(-1, self.mean.numel()), 1) + self.mean).reshape(z.shape)

    def config(self) -> dict:
        return {"kind": self.kind, "eps": self.eps}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "eigenvalues": self.eigenvalues, "eigenvectors": self.eigenvectors}

    @classmethod
    def check_config(cls, config: dict, image_shape: tuple[int, int, int]) -> None:
        _check_keys(config, {"kind", "eps"})
        if not finite_in_float32(config["eps"], positive=True):
            raise ValueError(f"preprocessing 'eps' must be a positive number in float32's range, got {config['eps']!r}")

    @classmethod
    def tensor_shapes(cls, config: dict, image_shape: tuple[int, int, int]) -> dict[str, tuple[int | None, ...]]:
        d = image_shape[0] * image_shape[1] * image_shape[2]
        return {"mean": (d,), "eigenvalues": (None,), "eigenvectors": (d, None)}  # K checked by the constructor

    @classmethod
    def from_config(cls, config: dict, tensors: dict[str, torch.Tensor]) -> "ZCA":
        return cls(tensors["mean"], tensors["eigenvalues"], tensors["eigenvectors"], config["eps"])
