"""Networks used to train on and evaluate distilled data."""

from __future__ import annotations

from torch import nn


class ConvNet(nn.Module):
    """The "ConvNet-3" of the dataset-distillation literature.

    ``depth`` blocks of Conv3x3(``width``) -> instance norm (GroupNorm with one group per channel)
    -> ReLU -> AvgPool2, then a linear classifier. A 28x28 input gets padding 3 in the first conv
    (28 -> 32), as for Fashion-MNIST.
    """

    def __init__(self, channels: int, num_classes: int, image_size: int = 32, *, depth: int = 3, width: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size = image_size + 4 if image_size == 28 else image_size
        for i in range(depth):
            padding = 3 if i == 0 and image_size == 28 else 1
            layers += [
                nn.Conv2d(channels if i == 0 else width, width, 3, padding=padding),
                nn.GroupNorm(width, width, affine=True),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(2),
            ]
            size //= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(width * size * size, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))
