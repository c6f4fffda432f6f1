"""Small architectures for CPU work: a VGG-16 with BatchNorm, a 3-block CNN and an MLP."""

from __future__ import annotations

from torch import nn

from salun.models.common import scaled

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16_bn_features(in_channels: int, image_size: int, width: float = 1.0):
    """VGG-16 with BatchNorm; max-pools stop once the feature map is 1×1 (small images)."""
    layers: list[nn.Module] = []
    cin, size = in_channels, image_size
    for v in _VGG16:
        if v == "M":
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            continue
        cout = scaled(v, width)
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), cin


def cnn_features(in_channels: int, image_size: int, width: float = 1.0):
    """Three conv-BN-ReLU-maxpool blocks (32/64/128 channels × width), then global pooling."""
    layers: list[nn.Module] = []
    cin = in_channels
    for c in (32, 64, 128):
        cout = scaled(c, width)
        layers += [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), cin


def mlp_features(in_channels: int, image_size: int, width: float = 1.0):
    """Flatten, then two hidden layers (512, 256 × width) with ReLU."""
    d_in = in_channels * image_size * image_size
    h1, h2 = scaled(512, width), scaled(256, width)
    body = nn.Sequential(
        nn.Flatten(),
        nn.Linear(d_in, h1),
        nn.ReLU(inplace=True),
        nn.Linear(h1, h2),
        nn.ReLU(inplace=True),
    )
    return body, h2
