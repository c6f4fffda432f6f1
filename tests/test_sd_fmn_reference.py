"""Forget-Me-Not against the reference's own arithmetic (SHI-Labs/Forget-Me-Not a4a81e8,
``src/train_attn.py`` with ``configs/attn.yaml``), on the tiny pipeline.

- which attention columns ``use_pooler`` re-steers: the reference's position loop, written
  out here, on an SD 2.1-style tokenizer (its model's, which pads with "!");
- the image stream: ``DataLoader(shuffle=True)`` over ``Resize(512, bilinear)`` +
  ``RandomCrop(512)``, recomputed here with PIL and torch's RNG as torchvision does it;
- ``max_grad_norm: 1`` that clips nothing, because the clip gets an exhausted generator.

These pin the re-steering stage alone (``use_ti`` false); the textual-inversion stage that
precedes it by default is pinned in tests/test_sd_fmn_ti.py.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import copy
import warnings
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from salun.generation.sd import fmn as fmn_mod  # noqa: E402
from salun.generation.sd.data import ImagePromptSet, from_tensors  # noqa: E402
from salun.generation.sd.fmn import FMNConfig, concept_token_weights, unlearn_fmn  # noqa: E402
from sd_fixtures import NUDE  # noqa: E402


def reference_positions(tokenizer, prompt: str, target: str, use_pooler: bool) -> list[int]:
    """ForgetMeNotDataset.__getitem__'s concept_positions, line by line."""
    prompt_ids = tokenizer(prompt, truncation=True, padding="max_length",
                           max_length=tokenizer.model_max_length).input_ids  # fmt: skip
    concept_ids = tokenizer(target, add_special_tokens=False).input_ids
    pooler_token_id = tokenizer("<|endoftext|>", add_special_tokens=False).input_ids[0]
    concept_positions = [0] * tokenizer.model_max_length
    for i, tok_id in enumerate(prompt_ids):
        if tok_id == concept_ids[0] and prompt_ids[i : i + len(concept_ids)] == concept_ids:
            concept_positions[i : i + len(concept_ids)] = [1] * len(concept_ids)
        if use_pooler and tok_id == pooler_token_id:
            concept_positions[i] = 1
    return concept_positions


def sd21_style(tokenizer):
    """The same vocabulary padded with "!", as SD 2.1-base's tokenizer pads."""
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = "!"
    ids = tok("a", padding="max_length", max_length=tok.model_max_length).input_ids
    assert ids[-1] == tok.convert_tokens_to_ids("!") != tok.eos_token_id
    return tok


@pytest.mark.parametrize("concept", ["nude", "person"])
@pytest.mark.parametrize("use_pooler", [True, False])
def test_pooler_selects_what_the_reference_selects_on_sd21(pipe, concept, use_pooler):
    want = reference_positions(sd21_style(pipe.tokenizer), NUDE, concept, use_pooler)
    # on a tokenizer that pads with end-of-text (SD v1's, the tiny one's) ...
    got = concept_token_weights(pipe, [NUDE], concept, use_pooler=use_pooler)
    assert got[0].tolist() == want
    # ... and on the SD 2.1-style one alike
    sd21 = SimpleNamespace(tokenizer=sd21_style(pipe.tokenizer))
    assert concept_token_weights(sd21, [NUDE], concept, use_pooler=use_pooler)[0].tolist() == want
    n_concept = len(pipe.tokenizer(concept, add_special_tokens=False).input_ids)
    assert sum(want) == n_concept + use_pooler  # one pooled column


def test_the_reference_loop_on_sd_v1_padding_would_select_every_pad_column(pipe):
    """Why salun does not run the loop on SD v1 as is: it marks ~70 padding columns."""
    n_prompt = len(pipe.tokenizer(NUDE).input_ids)  # with start and end tokens
    v1 = reference_positions(pipe.tokenizer, NUDE, "nude", use_pooler=True)
    assert sum(v1) == 1 + (77 - n_prompt + 1)


def torchvision_resize_random_crop(img: torch.Tensor, r: int, g: torch.Generator):
    """``Resize(r, BILINEAR)`` then ``RandomCrop(r)`` on a PIL image, as torchvision does:
    short side to r, long side int(r·long/short); top, then left, from torch.randint."""
    from PIL import Image

    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    w, h = pil.size
    if w <= h:
        size = (r, int(r * h / w))
    else:
        size = (int(r * w / h), r)
    pil = pil.resize(size, Image.BILINEAR)
    w, h = pil.size
    top = int(torch.randint(0, h - r + 1, size=(1,), generator=g).item())
    left = int(torch.randint(0, w - r + 1, size=(1,), generator=g).item())
    out = np.asarray(pil.crop((left, top, left + r, top + r)), dtype=np.uint8)
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float() / 127.5 - 1.0, (top, left)


def test_fmn_batches_are_shuffled_each_pass_and_randomly_cropped(pipe, monkeypatch):
    r, n, seed, steps = 16, 5, 11, 12  # 12 steps: two full passes and part of a third
    g = torch.Generator().manual_seed(0)
    wide = torch.randint(0, 256, (3, 3, 20, 28), generator=g, dtype=torch.uint8)
    tall = torch.randint(0, 256, (2, 3, 30, 18), generator=g, dtype=torch.uint8)
    forget = ImagePromptSet([*wide, *tall], [NUDE] * n, r)  # in-memory, not square
    seen = []
    real_loss = fmn_mod.concept_attention_loss

    def recording_loss(pipe_, unet, batch, *args, **kwargs):
        seen.append((batch["index"], batch["images"].clone()))
        return real_loss(pipe_, unet, batch, *args, **kwargs)

    monkeypatch.setattr(fmn_mod, "concept_attention_loss", recording_loss)
    cfg = FMNConfig(concept="nude", steps=steps, lr=1e-9, seed=seed, use_ti=False, quiet=True)
    unlearn_fmn(pipe, forget, cfg)
    assert len(seen) == steps
    # the reference: each epoch a fresh permutation, each image its own crop offsets
    g = torch.Generator().manual_seed(seed)
    orders, offsets, k = [], [], 0
    while k < steps:
        order = torch.randperm(n, generator=g).tolist()
        orders.append(order)
        for i in order:
            if k == steps:
                break
            want, off = torchvision_resize_random_crop(forget.sources[i], r, g)
            offsets.append(off)
            assert seen[k][0] == [i], k
            assert torch.equal(seen[k][1][0], want), k
            k += 1
    assert orders[0] != list(range(n)) and orders[0] != orders[1]  # shuffled, anew each pass
    assert len({o for o in offsets}) > 1  # the crops do move


def test_the_reference_clip_gets_an_exhausted_generator_so_fmn_does_not_clip(pipe, monkeypatch):
    """train_attn.py passes ``unet.parameters()`` (a generator) to AdamW, then clips that same
    generator: nothing is clipped. salun's default grad_clip None does the same."""
    net = torch.nn.Linear(3, 2)
    params_to_optimize = net.parameters()
    torch.optim.AdamW(params_to_optimize, lr=2e-6, weight_decay=0.01)
    (100 * net(torch.ones(1, 3)).sum()).backward()
    before = [p.grad.clone() for p in net.parameters()]
    assert torch.cat([b.flatten() for b in before]).norm() > 1
    with warnings.catch_warnings():  # recent torch warns that the generator is empty
        warnings.simplefilter("ignore")
        torch.nn.utils.clip_grad_norm_(params_to_optimize, 1.0)  # what the reference runs
    assert all(torch.equal(p.grad, b) for p, b in zip(net.parameters(), before))

    import accelerate

    clips = []
    real_clip = accelerate.Accelerator.clip_grad_norm_

    def recording_clip(self, parameters, max_norm, *args, **kwargs):
        clips.append(max_norm)
        return real_clip(self, parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(accelerate.Accelerator, "clip_grad_norm_", recording_clip)
    forget = from_tensors(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), [NUDE], 16)
    cfg = FMNConfig(concept="nude", steps=2, use_ti=False, quiet=True)
    unlearn_fmn(pipe, forget, cfg)
    assert clips == []
    unlearn_fmn(pipe, forget, replace(cfg, grad_clip=1.0))
    assert clips == [1.0, 1.0]  # the config's intent, when asked for
