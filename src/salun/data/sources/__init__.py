"""Dataset sources. Each module registers its loaders with ``register_loader`` on import."""

from salun.data.sources import (  # noqa: F401
    cifar,
    digits,
    idx_sources,
    imagefolder,
    npz,
    svhn,
    synthetic,
)
