import os

import pytest
import torch

os.environ.setdefault("SALUN_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# tests use tiny models: one thread avoids oversubscribing a shared 2-core machine
torch.set_num_threads(1)

# shared fixtures that live in their own module (tests/ is on sys.path under pytest)
pytest_plugins = ["sd_fixtures"]


def pytest_collection_modifyitems(config, items):
    # `cuda` tests need a GPU: without one they are skipped (and counted as skipped)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu/check.sh runs these)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def synthetic():
    from salun.data.sources.synthetic import synthetic_bundle

    return synthetic_bundle(n_train=240, n_test=80, num_classes=4, size=8, seed=0)
