"""AvgPool2x2: nn.AvgPool2d(2)'s values and gradients, and a correct second derivative."""

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

from haba_datasets.nets import create_net
from haba_datasets.pooling import AvgPool2x2


@pytest.mark.parametrize("shape", [(3, 5, 32, 32), (2, 4, 16, 8), (1, 1, 2, 2), (2, 3, 7, 6), (3, 8, 8)])
def test_values_and_gradients_are_avg_pool2ds(shape):
    x = torch.randn(*shape) * 3
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = AvgPool2x2()(ours)
    reference = nn.AvgPool2d(2)(theirs)
    assert torch.equal(y, reference)
    g = torch.randn_like(y)
    y.backward(g)
    reference.backward(g)
    assert torch.equal(ours.grad, theirs.grad)


def test_channels_last_input_takes_the_general_kernel():
    x = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
    assert torch.equal(AvgPool2x2()(x), nn.AvgPool2d(2)(x))


def test_second_derivative():
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64, requires_grad=True)
    assert gradcheck(AvgPool2x2(), (x,))
    assert gradgradcheck(AvgPool2x2(), (x,))


def test_the_convnet_pools_with_it():
    net = create_net("ConvNet", 3, 10, 32)
    assert sum(isinstance(m, AvgPool2x2) for m in net.modules()) == 3
