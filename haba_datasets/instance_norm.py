"""Instance normalisation whose second derivative is cheap.

Trajectory matching differentiates through the student's training steps, so it needs the
derivative of every layer's backward pass. For ``nn.GroupNorm`` autograd builds that backward
from dozens of small element-wise operations and then differentiates each of them. Here the
forward and the first backward are PyTorch's fused group-norm kernels (so values and first-order
gradients are bit-identical to ``nn.GroupNorm(C, C)``), and the derivative of the backward is one
closed formula: five per-channel reductions and a few fused element-wise passes.

For one sample and channel with ``M`` pixels, ``xh = (x - mean) * r`` with ``r = (var + eps)^-1/2``
and ``y = w * xh + b``, the backward maps the output gradient ``g`` to

    dx = r * P(w g),   dw = sum g * xh,   db = sum g,   where P(v) = v - mean(v) - xh * mean(v * xh)

and :class:`_InstanceNormBackward` differentiates those three outputs w.r.t. ``g``, ``x`` and ``w``
(derivation in ``docs/instance_norm.md``; checked against autograd by gradgradcheck).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["InstanceNorm"]


class InstanceNorm(nn.Module):
    """Instance norm with affine ``weight``/``bias`` of shape ``(channels,)``: ``nn.GroupNorm(channels, channels)``
    with the same parameters, values and gradients, and a fused second derivative.

    Example::

        >>> norm = InstanceNorm(128)
        >>> norm(torch.randn(4, 128, 32, 32)).shape
        torch.Size([4, 128, 32, 32])
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected (N, {self.channels}, ...) input, got shape {tuple(x.shape)}")
        return _InstanceNorm.apply(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"


def _layout(x: Tensor) -> torch.memory_format:
    """Channels-last where ``x`` is stored so (as ATen's suggest_memory_format), else contiguous."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _sizes(x: Tensor) -> tuple[int, int, int]:
    return x.shape[0], x.shape[1], x[0, 0].numel()


class _InstanceNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        x = x.contiguous(memory_format=_layout(x))
        n, c, hw = _sizes(x)
        y, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, hw, c, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = _InstanceNormBackward.apply(g, x, weight, mean, rstd, ctx.needs_input_grad[:3])
        return dx, dw, db, None


class _InstanceNormBackward(torch.autograd.Function):
    """``(g, x, w) -> (dx, dw, db)`` by the fused kernel; its own backward is the closed formula."""

    @staticmethod
    def forward(ctx, g, x, weight, mean, rstd, mask):
        n, c, hw = _sizes(x)
        g = g.contiguous(memory_format=_layout(x))
        dx, dw, db = torch.ops.aten.native_group_norm_backward(g, x, mean, rstd, weight, n, c, hw, c, list(mask))
        ctx.save_for_backward(g, x, weight, mean, rstd)
        return dx, dw, db

    @staticmethod
    @once_differentiable
    def backward(ctx, ggx, ggw, ggb):
        g, x, weight, mean, rstd = ctx.saved_tensors
        n, c, hw = _sizes(x)
        shape = (n, c) + (1,) * (x.ndim - 2)  # per (sample, channel), broadcast over the pixels
        rows = (n * c, hw)
        if ggx is None:
            ggx = torch.zeros_like(g)
        # Per (sample, channel): means of g, ggx and of their products with xh = (x - mean) r (and
        # g * ggx), each a row-wise dot product (vecdot) over the pixels.
        r, mu = rstd.view(shape), mean.view(shape)
        gf, xf, ggf = g.reshape(rows), x.reshape(rows), ggx.reshape(rows)

        def dot(a: Tensor, b: Tensor) -> Tensor:
            return torch.linalg.vecdot(a, b, dim=1).view(shape) / hw

        g_mean, ggx_mean = gf.mean(1).view(shape), ggf.mean(1).view(shape)
        g_xh, ggx_xh = r * (dot(gf, xf) - mu * g_mean), r * (dot(ggf, xf) - mu * ggx_mean)
        ggx_g = dot(ggf, gf)
        w = weight.view(1, c, *shape[2:])
        ggw = torch.zeros_like(w) if ggw is None else ggw.view_as(w)
        ggb = torch.zeros_like(w) if ggb is None else ggb.view_as(w)
        wr = w * r
        grad_g = grad_x = grad_w = None
        if ctx.needs_input_grad[0]:  # ggb + ggw xh + w r P(ggx), with xh = r x - r mean
            coef_xh = ggw - wr * ggx_xh
            grad_g = torch.addcmul(ggb - wr * ggx_mean - coef_xh * r * mu, x, coef_xh * r)
            grad_g.addcmul_(ggx, wr)
        if ctx.needs_input_grad[2]:  # sum over samples and pixels of g r P(ggx)
            grad_w = (hw * r * (ggx_g - ggx_mean * g_mean - ggx_xh * g_xh)).sum(0).flatten()
        if ctx.needs_input_grad[1]:
            # u = ggw g - r (m2 ggx + mean(ggx xh) w g) is the gradient reaching xh, m2 = w mean(g xh);
            # grad_x = r P(u) - r mean(ggx dx) xh = coef_g g + coef_ggx ggx + coef_xh xh + const
            m2 = w * g_xh
            coef_g = ggw - r * ggx_xh * w
            u_mean = coef_g * g_mean - r * m2 * ggx_mean
            u_xh = coef_g * g_xh - r * m2 * ggx_xh
            ggx_dx = r * (w * ggx_g - w * g_mean * ggx_mean - m2 * ggx_xh)
            coef_xh = -r * (u_xh + ggx_dx)
            grad_x = torch.addcmul(-r * u_mean - coef_xh * r * mu, g, r * coef_g)
            grad_x.addcmul_(x, coef_xh * r).addcmul_(ggx, -r * r * m2)
        return grad_g, grad_x, grad_w, None, None, None
