from __future__ import annotations

import pytest
import torch
from torch import nn

from haba_datasets import nets
from haba_datasets.instance_norm import InstanceNorm
from haba_datasets.nets import AlexNet, ConvNet, ResNet18, VGG11, create_net, list_nets, register_net
from haba_datasets.registry import Registry


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def norm(c: int) -> int:  # affine GroupNorm and BatchNorm alike: a weight and a bias per channel
    return 2 * c


def linear(fin: int, fout: int) -> int:
    return fin * fout + fout


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def convnet(cin: int, depth: int = 3, width: int = 128, norms: bool = True, classes: int = 10) -> int:
    """Hand count for a ConvNet on a 32x32 (or padded-to-32 28x28) input with pooling after each block."""
    blocks = conv(cin, width, 3) + (depth - 1) * conv(width, width, 3) + (depth * norm(width) if norms else 0)
    side = 32 // 2**depth
    return blocks + linear(width * side * side, classes)


def test_convnet_parameter_counts():
    assert convnet(3) == 320_010
    assert n_params(ConvNet(3, 10)) == 320_010
    assert n_params(ConvNet(1, 10, 28)) == convnet(1) == 317_706
    assert ConvNet(1, 10, 28).classifier.in_features == ConvNet(3, 10).classifier.in_features == 128 * 4 * 4
    assert n_params(create_net("ConvNetD1", 3, 10)) == convnet(3, depth=1) == 331_530
    assert n_params(create_net("ConvNetW32", 3, 10)) == convnet(3, width=32) == 24_714
    assert n_params(create_net("ConvNetBN", 3, 10)) == convnet(3) == 320_010  # BatchNorm: same weight + bias
    assert n_params(create_net("ConvNetNN", 3, 10)) == convnet(3, norms=False) == 319_242
    # no pooling keeps 32x32: the classifier sees 128 * 32 * 32 features
    assert ConvNet(3, 10, pooling="none").classifier.in_features == 128 * 32 * 32


def test_alexnet_parameter_count():
    expected = (conv(3, 128, 5) + conv(128, 192, 5) + conv(192, 256, 3) + conv(256, 192, 3) + conv(192, 192, 3)
                + linear(192 * 4 * 4, 10))  # fmt: skip
    assert n_params(AlexNet(3, 10)) == expected == 1_872_202
    assert n_params(create_net("AlexNetBN", 3, 10)) == expected + norm(128) + norm(192) + norm(256) + 2 * norm(192)


def test_alexnet_kaiming_init_keeps_the_signal_scale():
    """Without a norm, PyTorch's init shrinks the signal through the five convs (logits near zero: the chance
    plateau of the cross-architecture tables); He init keeps it at the input's order of magnitude."""
    x = torch.randn(16, 3, 32, 32)
    torch.manual_seed(0)
    kaiming = AlexNet(3, 10)
    torch.manual_seed(0)
    default = AlexNet(3, 10, init="default")
    with torch.no_grad():
        assert 0.3 < kaiming(x).std() < 10
        assert default(x).std() < 0.1
    assert all(not m.bias.any() for m in kaiming.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_vgg11_parameter_count():
    widths = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    expected = sum(conv(a, b, 3) + norm(b) for a, b in zip(widths, widths[1:])) + linear(512, 10)
    assert n_params(VGG11(3, 10)) == n_params(create_net("VGG11BN", 3, 10)) == expected == 9_231_114


def test_resnet18_parameter_count():
    def block(cin: int, cout: int) -> int:
        shortcut = conv(cin, cout, 1, bias=False) + norm(cout) if cin != cout else 0
        return conv(cin, cout, 3, bias=False) + norm(cout) + conv(cout, cout, 3, bias=False) + norm(cout) + shortcut

    stem = conv(3, 64, 3, bias=False) + norm(64)
    stages = sum(block(cin, cout) + block(cout, cout) for cin, cout in [(64, 64), (64, 128), (128, 256), (256, 512)])
    expected = stem + stages + linear(512, 10)
    assert n_params(ResNet18(3, 10)) == n_params(create_net("ResNet18BN", 3, 10)) == expected == 11_173_962


def test_registry_names():
    expected = {"ConvNet", "ConvNetD1", "ConvNetD2", "ConvNetD4", "ConvNetW32", "ConvNetW64", "ConvNetW256",
                "ConvNetBN", "ConvNetNN", "ConvNetMP", "AlexNet", "AlexNetBN", "VGG11", "VGG11BN", "ResNet18",
                "ResNet18BN"}  # fmt: skip
    assert expected <= set(list_nets())
    assert isinstance(create_net("ConvNetBN", 3, 10).features[1], nn.BatchNorm2d)
    assert isinstance(create_net("ResNet18", 3, 10).features[1], InstanceNorm)
    assert isinstance(create_net("ConvNetMP", 3, 10).features[3], nn.MaxPool2d)


@pytest.mark.parametrize("name", list_nets())
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 28, 28)], ids=["3x32x32", "1x28x28"])
def test_forward_embed_backward(name, shape):
    torch.manual_seed(0)
    model = create_net(name, shape[1], 7, shape[-1])
    x = torch.randn(shape)
    logits = model(x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    features = model.embed(x)
    assert features.shape == (2, model.classifier.in_features)
    assert torch.equal(model.classifier(features), logits)
    logits.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "options",
    [{"norm": "layer"}, {"norm": "none", "pooling": "none", "depth": 1}, {"activation": "leakyrelu"},
     {"activation": "sigmoid", "pooling": "max"}, {"depth": 5, "width": 8}],  # fmt: skip
)
def test_convnet_options_feature_size(options):
    model = create_net("ConvNet", 3, 4, **options)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown network 'ConvNet9'.*ConvNetBN.*ResNet18"):
        create_net("ConvNet9", 3, 10)


@pytest.mark.parametrize(
    ("name", "image_size", "options", "message"),
    [("ConvNet", 32, {"norm": "group"}, "norm must be one of"),
     ("ConvNet", 32, {"pooling": "stride"}, "pooling must be one of"),
     ("ConvNet", 32, {"activation": "gelu"}, "activation must be one of"),
     ("ConvNet", 32, {"depth": 6}, "depth must be an int in 1..5"),
     ("ConvNet", 32, {"width": 0}, "width must be a positive int"),
     ("ConvNet", 4, {}, "image_size 4 is too small"),
     ("VGG11", 32, {"norm": "layer"}, "norm must be one of"),
     ("ResNet18", 32, {"norm": "none"}, "norm must be one of"),
     ("AlexNet", 32, {"depth": 2}, "bad options .*'AlexNet'.*depth"),
     ("AlexNet", 32, {"init": "xavier"}, "init must be one of")],  # fmt: skip
)
def test_bad_options(name, image_size, options, message):
    with pytest.raises(ValueError, match=message):
        create_net(name, 3, 10, image_size, **options)


def test_register_net(monkeypatch):
    monkeypatch.setattr(nets, "NETS", Registry("network", nets.NETS))

    @register_net("Tiny")
    def tiny(channels: int, num_classes: int, image_size: int = 32) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size * image_size, num_classes))

    assert "Tiny" in list_nets()
    assert create_net("Tiny", 1, 3, 4)(torch.zeros(2, 1, 4, 4)).shape == (2, 3)
    with pytest.raises(ValueError, match="'Tiny' is already registered"):
        register_net("Tiny")(tiny)
    with pytest.raises(ValueError, match="already registered"):
        register_net("ConvNet")(ConvNet)


def test_training_is_bit_identical_with_torchs_own_layers(monkeypatch):
    """The evaluation protocol's numerics: SGD on a ConvNet with this package's instance norm and
    pooling gives the very losses and weights of nn.GroupNorm and nn.AvgPool2d."""

    def train():
        torch.manual_seed(0)
        net = create_net("ConvNet", 3, 4, 16, width=16)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        x, y = torch.randn(12, 3, 16, 16), torch.arange(12) % 4
        losses = []
        for _ in range(5):
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, [p.detach().clone() for p in net.parameters()]

    ours = train()
    monkeypatch.setattr(nets, "InstanceNorm", lambda channels: nn.GroupNorm(channels, channels))
    monkeypatch.setattr(nets, "AvgPool2x2", lambda: nn.AvgPool2d(2))
    theirs = train()
    assert ours[0] == theirs[0] and ours[0][-1] < ours[0][0]
    assert all(torch.equal(a, b) for a, b in zip(ours[1], theirs[1]))


def test_every_registry_names_the_known_and_suggests_the_closest():
    from haba_datasets.data import REAL_DATASETS
    from haba_datasets.distill.recipe import OBJECTIVES
    from haba_datasets.hallucinators import HALLUCINATORS
    from haba_datasets.hub import ZOO
    from haba_datasets.preprocessing import PREPROCESSINGS
    from haba_datasets.registry import UnknownNameError

    for registry, typo, close in [(nets.NETS, "ResNet-18", "ResNet18"), (HALLUCINATORS, "haba_conv", "haba-conv"),
                                  (PREPROCESSINGS, "zcaa", "zca"), (OBJECTIVES, "dm_trained", "dm-trained"),
                                  (REAL_DATASETS, "cifar-10", "cifar10"), (ZOO, "cifar10_ipc10", "cifar10-ipc10")]:  # fmt: skip
        with pytest.raises(UnknownNameError, match=f"unknown {registry.kind} '{typo}'; did you mean '{close}'\\? \\(known: "):
            registry[typo]
        assert registry.get(typo) is None and registry.names() == sorted(registry)
    with pytest.raises(UnknownNameError, match=r"unknown network 'xyz' \(known: AlexNet, "):
        nets.NETS["xyz"]  # nothing close: no suggestion
