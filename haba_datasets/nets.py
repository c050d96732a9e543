"""Networks used to train on and evaluate distilled data, registered by name.

Every network is built as ``factory(channels, num_classes, image_size=32, **options)``, exposes a feature
extractor ``features`` (an ``nn.Sequential`` ending in ``Flatten``) and a linear ``classifier``, and has
``embed(x)`` (the flat features, as used for distribution matching) and ``forward(x)`` (the logits).

The architectures are sized for 32x32 inputs. A 28x28 input (MNIST, Fashion-MNIST) gets two extra pixels of
padding a side in the first conv, which makes it 32x32 from there on; ResNet18 pools globally instead.

Registered names: ``ConvNet`` (depth 3, width 128, instance norm, average pooling) and its presets
``ConvNetD1/D2/D4`` (depth), ``ConvNetW32/W64/W256`` (width), ``ConvNetBN`` (batch norm), ``ConvNetNN`` (no
norm), ``ConvNetMP`` (max pooling); ``AlexNet`` (no norm, He init), ``VGG11`` and ``ResNet18`` (instance norm). The
suffix ``BN`` always means batch norm: ``AlexNetBN``, ``VGG11BN``, ``ResNet18BN``.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Callable, Sequence

from torch import Tensor, nn

from .instance_norm import InstanceNorm
from .pooling import AvgPool2x2
from .registry import Registry

__all__ = ["AlexNet", "ConvNet", "ResNet18", "VGG11", "create_net", "list_nets", "register_net"]

NetFactory = Callable[..., nn.Module]
#: Networks by name: classes or factories ``(channels, num_classes, image_size=32, **options)``.
NETS = Registry("network")

NORMS = ("instance", "batch", "layer", "none")
POOLINGS = ("avg", "max", "none")
ACTIVATIONS = ("relu", "leakyrelu", "sigmoid")


def register_net(name: str) -> Callable[[NetFactory], NetFactory]:
    """Decorator registering a network class or factory ``(channels, num_classes, image_size=32, **options)``."""
    return NETS.register(name)


def list_nets() -> list[str]:
    """Names of the registered networks."""
    return NETS.names()


def create_net(name: str, channels: int, num_classes: int, image_size: int = 32, **options) -> nn.Module:
    """Build a freshly initialised registered network; unknown names and options raise ``ValueError``."""
    factory = NETS[name]
    try:
        inspect.signature(factory).bind(channels, num_classes, image_size, **options)
    except TypeError as e:
        raise ValueError(f"bad options {sorted(options)} for network {name!r}: {e}") from None
    return factory(channels, num_classes, image_size, **options)


def _choice(option: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def _norm(kind: str, channels: int) -> nn.Module | None:
    """Normalisation layer by name; ``"instance"`` is GroupNorm with one group per channel, as
    :class:`~haba_datasets.instance_norm.InstanceNorm` (same values, cheap second derivative)."""
    return {
        "instance": lambda: InstanceNorm(channels),
        "batch": lambda: nn.BatchNorm2d(channels),
        "layer": lambda: nn.GroupNorm(1, channels, affine=True),
        "none": lambda: None,
    }[_choice("norm", kind, NORMS)]()


def _activation(kind: str) -> nn.Module:
    return {
        "relu": lambda: nn.ReLU(inplace=True),
        "leakyrelu": lambda: nn.LeakyReLU(0.01, inplace=True),
        "sigmoid": nn.Sigmoid,
    }[_choice("activation", kind, ACTIVATIONS)]()


def _conv_block(cin: int, cout: int, kernel: int, padding: int, norm: str, activation: str = "relu") -> list[nn.Module]:
    """Conv (with bias) -> optional norm -> activation."""
    layers = [nn.Conv2d(cin, cout, kernel, padding=padding), _norm(norm, cout), _activation(activation)]
    return [layer for layer in layers if layer is not None]


def _input_size(image_size: int) -> int:
    """Side length after the first conv, whose padding grows a 28x28 input to 32x32 (see :func:`_first_padding`)."""
    return image_size + 4 if image_size == 28 else image_size


def _first_padding(image_size: int, padding: int) -> int:
    return padding + 2 if image_size == 28 else padding


def _feature_size(name: str, image_size: int, pools: int) -> int:
    size = _input_size(image_size) >> pools
    if size < 1:
        raise ValueError(f"{name}: image_size {image_size} is too small for {pools} halvings")
    return size


def _kaiming_init(net: nn.Module) -> None:
    """He normal weights (fan in; gain for ReLU on convs, 1 on linear layers) and zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu" if isinstance(m, nn.Conv2d) else "linear")
            nn.init.zeros_(m.bias)


class _Net(nn.Module):
    """A feature extractor ``features`` (ending in Flatten) followed by a linear ``classifier``."""

    features: nn.Sequential
    classifier: nn.Linear

    def embed(self, x: Tensor) -> Tensor:
        """Flat features, shape ``(N, classifier.in_features)``."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


@register_net("ConvNet")
class ConvNet(_Net):
    """The "ConvNet-3" of the dataset-distillation literature, with its ablation options.

    ``depth`` (1..5) blocks of Conv3x3(``width``) -> ``norm`` -> ``activation`` -> ``pooling`` (2x2), then a
    linear classifier. ``norm``: "instance" (GroupNorm with one group per channel), "batch", "layer" (GroupNorm
    with one group) or "none"; ``pooling``: "avg", "max" or "none"; ``activation``: "relu", "leakyrelu" or "sigmoid".
    """

    def __init__(self, channels: int, num_classes: int, image_size: int = 32, *, depth: int = 3, width: int = 128,
                 norm: str = "instance", pooling: str = "avg", activation: str = "relu") -> None:  # fmt: skip
        super().__init__()
        if not (isinstance(depth, int) and 1 <= depth <= 5):
            raise ValueError(f"depth must be an int in 1..5; got {depth!r}")
        if not (isinstance(width, int) and width > 0):
            raise ValueError(f"width must be a positive int; got {width!r}")
        _choice("pooling", pooling, POOLINGS)
        layers: list[nn.Module] = []
        for i in range(depth):
            padding = _first_padding(image_size, 1) if i == 0 else 1
            layers += _conv_block(channels if i == 0 else width, width, 3, padding, norm, activation)
            if pooling != "none":
                layers.append(AvgPool2x2() if pooling == "avg" else nn.MaxPool2d(2))
        size = _feature_size("ConvNet", image_size, 0 if pooling == "none" else depth)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(width * size * size, num_classes)


@register_net("AlexNet")
class AlexNet(_Net):
    """The AlexNet variant of the dataset-distillation literature: five convs, three max pools, one linear layer.

    ``norm`` ("none", "instance" or "batch") goes after every conv. ``init``: "kaiming" (default: He normal
    weights, zero biases, so the signal keeps its scale through the five convs) or "default" (PyTorch's, as the
    literature's code). Without a norm, PyTorch's init shrinks the signal at every layer, the logits start near
    zero, and 200 epochs on 100 distilled CIFAR-10 images stay at chance where He init trains
    (docs/what-we-learned.md, "Across architectures").
    """

    def __init__(self, channels: int, num_classes: int, image_size: int = 32, *, norm: str = "none",
                 init: str = "kaiming") -> None:  # fmt: skip
        super().__init__()
        _choice("norm", norm, ("none", "instance", "batch"))
        _choice("init", init, ("kaiming", "default"))
        pool = partial(nn.MaxPool2d, 2)
        self.features = nn.Sequential(
            *_conv_block(channels, 128, 5, _first_padding(image_size, 2), norm), pool(),
            *_conv_block(128, 192, 5, 2, norm), pool(),
            *_conv_block(192, 256, 3, 1, norm),
            *_conv_block(256, 192, 3, 1, norm),
            *_conv_block(192, 192, 3, 1, norm), pool(),
            nn.Flatten(),
        )  # fmt: skip
        size = _feature_size("AlexNet", image_size, 3)
        self.classifier = nn.Linear(192 * size * size, num_classes)
        if init == "kaiming":
            _kaiming_init(self)


VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


@register_net("VGG11")
class VGG11(_Net):
    """VGG-11 for 32x32 inputs: Conv3x3 -> ``norm`` ("instance" or "batch") -> ReLU blocks, max pools, linear layer."""

    def __init__(self, channels: int, num_classes: int, image_size: int = 32, *, norm: str = "instance") -> None:
        super().__init__()
        _choice("norm", norm, ("instance", "batch"))
        layers: list[nn.Module] = []
        cin = channels
        for item in VGG11_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers += _conv_block(cin, item, 3, 1 if layers else _first_padding(image_size, 1), norm)
            cin = item
        size = _feature_size("VGG11", image_size, VGG11_CFG.count("M"))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(cin * size * size, num_classes)


class _BasicBlock(nn.Module):
    """Two Conv3x3 (no bias) + norm, with a Conv1x1 + norm shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _norm(norm, cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _norm(norm, cout),
        )  # fmt: skip
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


@register_net("ResNet18")
class ResNet18(_Net):
    """CIFAR-style ResNet-18: 3x3 stem (stride 1, no max pool), BasicBlocks [2, 2, 2, 2], global average pooling.

    ``norm`` is "instance" (default, as for the other registered nets) or "batch". Global pooling makes any
    ``image_size`` work; the argument is accepted for the common signature.
    """

    def __init__(self, channels: int, num_classes: int, image_size: int = 32, *, norm: str = "instance") -> None:
        super().__init__()
        _choice("norm", norm, ("instance", "batch"))
        layers: list[nn.Module] = [nn.Conv2d(channels, 64, 3, 1, 1, bias=False), _norm(norm, 64), nn.ReLU(inplace=True)]
        cin = 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [_BasicBlock(cin, cout, stride, norm), _BasicBlock(cout, cout, 1, norm)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(cin, num_classes)


for _name, _factory, _options in [
    ("ConvNetD1", ConvNet, {"depth": 1}),
    ("ConvNetD2", ConvNet, {"depth": 2}),
    ("ConvNetD4", ConvNet, {"depth": 4}),
    ("ConvNetW32", ConvNet, {"width": 32}),
    ("ConvNetW64", ConvNet, {"width": 64}),
    ("ConvNetW256", ConvNet, {"width": 256}),
    ("ConvNetBN", ConvNet, {"norm": "batch"}),
    ("ConvNetNN", ConvNet, {"norm": "none"}),
    ("ConvNetMP", ConvNet, {"pooling": "max"}),
    ("AlexNetBN", AlexNet, {"norm": "batch"}),
    ("VGG11BN", VGG11, {"norm": "batch"}),
    ("ResNet18BN", ResNet18, {"norm": "batch"}),
]:
    register_net(_name)(partial(_factory, **_options))
