"""Dataset sources. Each module registers its loaders with ``register_loader`` on import."""

from salun.data.sources import idx_sources, synthetic  # noqa: F401
