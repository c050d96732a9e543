"""2x2 average pooling with the values of ``nn.AvgPool2d(2)`` and a faster CPU path.

PyTorch's CPU kernel for ``avg_pool2d`` on NCHW tensors walks every window with index
arithmetic, so the ConvNet's first pooling layer costs a sixth of an evaluation epoch. Here the
forward pass adds the four strided quarters of the input in the kernel's order
(``((x00 + x01) + x10) + x11``, then times 1/4, which is exact: the same values), and the backward
pass writes ``g / 4`` into every window by two broadcast copies. Both maps are linear and each is
the other's adjoint, so the second derivative (trajectory matching) is the pooling itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AvgPool2x2"]


class AvgPool2x2(nn.Module):
    """``nn.AvgPool2d(2)``: the mean of each 2x2 window, stride 2.

    Contiguous 4-D inputs of even height and width take the fast path; others (an odd side, whose
    last row or column is dropped, or channels-last memory) use ``F.avg_pool2d``.

    Example::

        >>> AvgPool2x2()(torch.arange(16.0).view(1, 1, 4, 4))
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[2] % 2 or x.shape[3] % 2 or not x.is_contiguous():
            return F.avg_pool2d(x, 2)
        return _Pool.apply(x)


def _pool(x: Tensor) -> Tensor:
    y = x[:, :, 0::2, 0::2] + x[:, :, 0::2, 1::2]
    return y.add_(x[:, :, 1::2, 0::2]).add_(x[:, :, 1::2, 1::2]).mul_(0.25)


def _spread(g: Tensor) -> Tensor:
    """The adjoint of :func:`_pool`: ``g / 4`` at the four positions of every window."""
    n, c, h, w = g.shape
    rows = g.mul(0.25).unsqueeze(-1).expand(n, c, h, w, 2).reshape(n, c, h, 1, 2 * w)
    return rows.expand(n, c, h, 2, 2 * w).reshape(n, c, 2 * h, 2 * w)


class _Pool(torch.autograd.Function):
    """:func:`_pool` (``adjoint=False``) or :func:`_spread`; each one's derivative is the other."""

    @staticmethod
    def forward(ctx, x: Tensor, adjoint: bool = False) -> Tensor:
        ctx.adjoint = adjoint
        return _spread(x) if adjoint else _pool(x)

    @staticmethod
    def backward(ctx, g: Tensor):
        return _Pool.apply(g.contiguous() if ctx.adjoint else g, not ctx.adjoint), None
