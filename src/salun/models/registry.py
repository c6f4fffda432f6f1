"""Architectures by name. Every model is a :class:`Classifier` (normalise, features, head)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from salun.errors import SalunError
from salun.models.common import Classifier, Normalize
from salun.models.resnet import resnet18_features, resnet34_features
from salun.models.resnet_cifar import resnet20_features
from salun.models.small import cnn_features, mlp_features, vgg16_bn_features
from salun.validate import check_int, check_positive

# A channel multiplier outside these bounds is a typo, not an experiment: at 1e-9 every
# layer collapses to one channel (a model that cannot learn, trained without a word); at
# 1e6 ResNet-18 would have 10**19 weights.
WIDTH_MIN, WIDTH_MAX = 1 / 64, 64.0
MAX_IMAGE_SIZE = 4096  # pixels per side (model.json's image_size: 1e9 built a 10**18 input)
MAX_CHANNELS = 64
# architectures whose first layer is sized by image_size x image_size (non-square: wrong)
_FLATTENS = ("mlp",)

_FEATURES: dict[str, Callable[..., tuple[nn.Module, int]]] = {
    "resnet18": lambda c, s, w: resnet18_features(c, w),
    "resnet20": lambda c, s, w: resnet20_features(c, w),
    "resnet34": lambda c, s, w: resnet34_features(c, w),
    "vgg16_bn": vgg16_bn_features,
    "cnn": cnn_features,
    "mlp": mlp_features,
}


def list_archs() -> list[str]:
    return sorted(_FEATURES)


def build_model(
    arch: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    width: float = 1.0,
) -> Classifier:
    """Build an architecture for a dataset's shape (channels, size, classes, statistics).

    Example:
        >>> model = build_model("cnn", in_channels=1, num_classes=10, image_size=28,
        ...                     mean=(0.286,), std=(0.353,))
    """
    if arch not in _FEATURES:
        raise SalunError(f"unknown architecture {arch!r}; choose one of: {', '.join(list_archs())}")
    check_positive("width", width)  # NaN too: `width <= 0` lets it through
    if not WIDTH_MIN <= width <= WIDTH_MAX:
        raise SalunError(f"width must lie in [1/64, 64] (a channel multiplier), got {width:g}")
    check_int("image_size", image_size, 1, MAX_IMAGE_SIZE)
    check_int("in_channels", in_channels, 1, MAX_CHANNELS)
    check_int("num_classes", num_classes, 1)
    if len(mean) != in_channels or len(std) != in_channels:
        raise SalunError(f"mean/std need {in_channels} channel values, got {len(mean)}/{len(std)}")
    features, dim = _FEATURES[arch](in_channels, image_size, width)
    return Classifier(Normalize(mean, std), features, nn.Linear(dim, num_classes))


def model_kwargs_for(bundle, arch: str, width: float = 1.0) -> dict:
    """The keyword arguments of :func:`build_model` for a :class:`DataBundle`; stored in
    every model's ``model.json`` so the model can be rebuilt exactly."""
    height, width_px = (int(n) for n in bundle.train.images.shape[-2:])
    if arch in _FLATTENS and height != width_px:
        raise SalunError(
            f"{arch} needs square images (it is sized by one image side); {bundle.name} has "
            f"{height}x{width_px} images: use --arch cnn, or crop/pad them to a square"
        )
    return {
        "arch": arch,
        "in_channels": bundle.in_channels,
        "num_classes": bundle.num_classes,
        "image_size": bundle.image_size,
        "mean": list(bundle.mean),
        "std": list(bundle.std),
        "width": width,
    }


def build_from_kwargs(kwargs: dict) -> Classifier:
    k = dict(kwargs)
    arch = k.pop("arch")
    return build_model(arch, **{**k, "mean": tuple(k["mean"]), "std": tuple(k["std"])})
