import os

import pytest
import torch

os.environ.setdefault("SALUN_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def synthetic():
    from salun.data.sources.synthetic import synthetic_bundle

    return synthetic_bundle(n_train=240, n_test=80, num_classes=4, size=8, seed=0)
