"""The fused instance norm: GroupNorm's values and gradients, a correct and cheap second derivative."""

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

from haba_datasets import nets
from haba_datasets.instance_norm import InstanceNorm
from haba_datasets.nets import create_net


def inputs(shape=(3, 4, 5, 6), dtype=torch.float64, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype) * 2 + 1  # a mean away from 0
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = torch.randn(shape[1], generator=g, dtype=dtype)
    b = torch.randn(shape[1], generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (x, w, b)]


def functional(x, w, b):
    norm = InstanceNorm(x.shape[1]).to(x.dtype)
    return torch.func.functional_call(norm, {"weight": w, "bias": b}, (x,))


@pytest.mark.parametrize("channels_last", [False, True])
def test_first_and_second_derivatives_match_finite_differences(channels_last):
    x, w, b = inputs(channels_last=channels_last)
    assert gradcheck(functional, (x, w, b))
    assert gradgradcheck(functional, (x, w, b))


def test_second_derivative_when_only_some_first_gradients_are_used():
    x, w, b = inputs()
    for used in ([0], [1], [0, 2], [1, 2]):

        def grads(x, w, b, used=used):
            gx, gw, gb = torch.autograd.grad((functional(x, w, b) * torch.arange(6.0, dtype=x.dtype)).sum(), (x, w, b),
                                             create_graph=True)  # fmt: skip
            return sum(((gx, gw, gb)[i] ** 2).sum() for i in used)

        assert gradcheck(grads, (x, w, b))


def test_values_and_first_gradients_are_group_norms_bit_for_bit():
    x, w, b = (t.detach().float() for t in inputs((4, 8, 7, 7)))
    ours, theirs = InstanceNorm(8), nn.GroupNorm(8, 8)
    with torch.no_grad():
        for m in (ours, theirs):
            m.weight.copy_(w)
            m.bias.copy_(b)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias"]
    results = []
    for m in (ours, theirs):
        xi = x.clone().requires_grad_()
        y = m(xi)
        (y * torch.linspace(-1, 1, 7)).sum().backward()
        results.append([y, xi.grad, m.weight.grad, m.bias.grad])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_mtt_style_second_order_gradients_match_torchs_layers(monkeypatch):
    """Gradient of a loss on one SGD step's parameters w.r.t. the images, through a ConvNet, with
    this package's instance norm and pooling against nn.GroupNorm and nn.AvgPool2d."""

    def meta_gradient():
        torch.manual_seed(0)
        net = create_net("ConvNet", 3, 4, 16, width=8, depth=2)
        params = dict(net.named_parameters())
        images = torch.randn(6, 3, 16, 16, requires_grad=True)
        labels = torch.arange(6) % 4
        loss = nn.functional.cross_entropy(torch.func.functional_call(net, params, (images,)), labels)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        stepped = sum((p - 0.1 * g).pow(2).sum() for p, g in zip(params.values(), grads))
        return torch.autograd.grad(stepped, images)[0]

    fused = meta_gradient()
    monkeypatch.setattr(nets, "InstanceNorm", lambda channels: nn.GroupNorm(channels, channels))
    monkeypatch.setattr(nets, "AvgPool2x2", lambda: nn.AvgPool2d(2))
    reference = meta_gradient()
    assert reference.abs().max() > 0
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-6)


def test_third_derivative_is_refused_and_bad_input_is_named():
    x, w, b = inputs((2, 3, 4, 4))
    (gx,) = torch.autograd.grad(functional(x, w, b).pow(3).sum(), x, create_graph=True)
    (ggx,) = torch.autograd.grad(gx.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        ggx.sum().backward()
    with pytest.raises(ValueError, match=r"\(N, 5, \.\.\.\)"):
        InstanceNorm(5)(torch.randn(2, 3, 4, 4))
