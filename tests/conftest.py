import os

import pytest
import torch

os.environ.setdefault("SALUN_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# tests use tiny models: one thread avoids oversubscribing a shared 2-core machine
torch.set_num_threads(1)


@pytest.fixture
def synthetic():
    from salun.data.sources.synthetic import synthetic_bundle

    return synthetic_bundle(n_train=240, n_test=80, num_classes=4, size=8, seed=0)
