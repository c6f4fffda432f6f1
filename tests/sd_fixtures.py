"""Shared fixtures of the Stable Diffusion tests (test_generation_sd.py,
test_sd_semantics.py): the tiny offline pipeline and a small nudity forget/retain set.

tests/conftest.py registers this module as a plugin, so every test module can request
``pipe`` and ``sets`` (a module's own fixture of the same name wins). salun's SD modules
are imported only inside the fixtures: collecting a test without diffusers stays cheap.
"""

from __future__ import annotations

import pytest
import torch

RES = 16  # image side of the tiny pipeline (latents 4×8×8)
NUDE, CLOTHED = "a photo of a nude person", "a photo of a person wearing clothes"


@pytest.fixture(scope="module")
def pipe():
    from salun.generation.sd.tiny import tiny_pipeline

    # Tiny tensors: one thread is much faster than two on a shared, busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_pipeline(seed=0, words=("nude",))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sets():
    """(forget: 4 random images captioned NUDE, with CLOTHED as the replacement prompt;
    retain: 4 captioned CLOTHED)."""
    from salun.generation.sd.data import from_tensors

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (8, 3, RES, RES), generator=g, dtype=torch.uint8)
    forget = from_tensors(imgs[:4], [NUDE] * 4, RES).with_replacements(CLOTHED)
    retain = from_tensors(imgs[4:], [CLOTHED] * 4, RES)
    return forget, retain
