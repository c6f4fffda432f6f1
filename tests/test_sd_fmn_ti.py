"""Forget-Me-Not's textual-inversion stage against the reference's own arithmetic
(SHI-Labs/Forget-Me-Not a4a81e8: ``src/train_ti.py`` with ``configs/ti.yaml`` and
``src/dataset.py``; ``src/train_attn.py`` with ``use_ti: true``), on the tiny pipeline.

Every expected value is recomputed here from the reference's steps, written out: the new
tokens and their initial rows (``get_models``), the image stream (``DataLoader(shuffle=True)``,
``Resize`` without a crop, ``h_flip``), the LDM loss with the forward process
√ᾱ_t·z_0 + √(1−ᾱ_t)·ε from the scheduler's ``alphas_cumprod``, AdamW's first step, the norm
decay towards 0.4, the restore of every other row, and the attention loss of the second stage
on the learned tokens.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from salun.errors import SalunError  # noqa: E402
from salun.generation.sd import fmn as fmn_mod  # noqa: E402
from salun.generation.sd import fmn_ti  # noqa: E402
from salun.generation.sd.data import FMN_TRANSFORM, ImagePromptSet  # noqa: E402
from salun.generation.sd.fmn import FMNConfig, unlearn_fmn  # noqa: E402
from salun.generation.sd.fmn_ti import learn_concept_tokens  # noqa: E402
from salun.generation.sd.train import SDTrainer  # noqa: E402
from sd_fixtures import NUDE, RES  # noqa: E402

SEED = 5
PROMPT = "a photo of <s1><s2><s3><s4>"  # ti.yaml use_template object, attn.yaml type object


@pytest.fixture(scope="module")
def forget():
    """Three images of the concept; the first is 32×24 (tall), so ``Resize(16)`` makes it
    21×16 and the reference keeps it whole (no crop)."""
    g = torch.Generator().manual_seed(3)
    tall = torch.randint(0, 256, (1, 3, 32, 24), generator=g, dtype=torch.uint8)
    square = torch.randint(0, 256, (2, 3, RES, RES), generator=g, dtype=torch.uint8)
    return ImagePromptSet([*tall, *square], [NUDE] * 3, RES)


def cfg_(**kw) -> FMNConfig:
    return FMNConfig(**{"concept": "nude", "seed": SEED, "quiet": True, **kw})


def snapshot(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.state_dict().items()}


def reference_models(pipe, concept: str, n: int, g: torch.Generator, std: float = 1.0):
    """train_ti.py ``get_models``: <s1>…<sn> added to (copies of) the tokenizer and text
    encoder; the rows start as the concept's tokens (ti.yaml ``elon|musk``), then
    ``<rand-std>``: randn·std, one row after another."""
    tok, te = copy.deepcopy(pipe.tokenizer), copy.deepcopy(pipe.text_encoder)
    inits = pipe.tokenizer(concept, add_special_tokens=False).input_ids
    names = [f"<s{i + 1}>" for i in range(n)]
    for name in names:
        assert tok.add_tokens(name) == 1
    te.resize_token_embeddings(len(tok))
    w = te.get_input_embeddings().weight.data
    ids = tok.convert_tokens_to_ids(names)
    for k, tid in enumerate(ids):
        w[tid] = w[inits[k]] if k < len(inits) else torch.randn(w.shape[1], generator=g) * std
    return tok, te, ids


def reference_image(src: torch.Tensor, r: int, flip: bool) -> torch.Tensor:
    """dataset.py: ``Resize(r, BILINEAR)`` on the PIL image (short side r, long side
    int(r·long/short), no crop), ToTensor, Normalize(0.5, 0.5), then the flip."""
    from PIL import Image

    pil = Image.fromarray(src.permute(1, 2, 0).numpy())
    w, h = pil.size
    size = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
    if size != (w, h):
        pil = pil.resize(size, Image.BILINEAR)
    x = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1)
    x = x.float() / 127.5 - 1.0
    return x.flip(-1) if flip else x


def ldm_loss(pipe, unet, te, tok, image: torch.Tensor, g: torch.Generator):
    """train_ti.py ``loss_step`` with the forward process written out: z_0 from the VAE
    (× scaling factor), t ~ U{0..T−1}, ε ~ N(0, I), z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε,
    mean((ε_θ(z_t, t, c) − ε)²) with c = text_encoder("a photo of <s1><s2><s3><s4>")."""
    with torch.no_grad():
        z0 = pipe.vae.encode(image[None]).latent_dist.sample(generator=g)
    z0 = z0 * pipe.vae.config.scaling_factor
    t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (1,), generator=g)
    eps = torch.randn(z0.shape, generator=g)
    ab = pipe.scheduler.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    zt = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
    ids = tok([PROMPT], padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids  # fmt: skip
    ctx = te(ids)[0]
    pred = unet(zt, t, encoder_hidden_states=ctx).sample
    return ((pred - eps) ** 2).mean()


def reference_first_step(pipe, forget, std: float = 1.0):
    """Replays the seed's draws (new rows, the first pass's order, the flip, VAE sample,
    t, ε) and returns (loss at step 1, the text encoder, the placeholder ids)."""
    g = torch.Generator().manual_seed(SEED)
    tok, te, ids = reference_models(pipe, "nude", 4, g, std)
    i = torch.randperm(len(forget), generator=g).tolist()[0]
    flip = float(torch.rand((), generator=g)) > 0.5  # random.random() > 0.5
    image = reference_image(forget.sources[i], forget.resolution, flip)
    unet = copy.deepcopy(pipe.unet).requires_grad_(False)
    te.requires_grad_(False)
    te.get_input_embeddings().weight.requires_grad_(True)
    return ldm_loss(pipe, unet, te, tok, image, g), te, ids


def test_ti_loss_at_step_1_is_the_noise_prediction_mse_with_add_noise_written_out(pipe, forget):
    ti = learn_concept_tokens(pipe, forget, cfg_(ti_steps=1))
    want, _, ids = reference_first_step(pipe, forget)
    assert ti.tokens == ["<s1>", "<s2>", "<s3>", "<s4>"] and ti.ids == ids
    assert ti.prompt == PROMPT
    assert ti.history[0] == pytest.approx(float(want.detach()), rel=1e-5)


@pytest.mark.parametrize("decay", [True, False])
def test_ti_step_1_is_adamw_on_the_new_rows_then_the_norm_pulled_towards_0_4(pipe, forget, decay):
    """AdamW (lr 1e-3, wd 0.1, β 0.9/0.999, eps 1e-8), first step: w·(1 − lr·wd) −
    lr·g/(|g| + eps); then clip_ti_decay: direction kept, norm n → n + min(1, 100·lr)·(0.4 − n)."""
    ti = learn_concept_tokens(pipe, forget, cfg_(ti_steps=1, ti_norm_decay=decay))
    loss, te, ids = reference_first_step(pipe, forget)
    loss.backward()
    w = te.get_input_embeddings().weight
    w0, grad = w.detach()[ids], w.grad[ids]
    lr, wd = 1e-3, 0.1
    w1 = w0 * (1 - lr * wd) - lr * grad / (grad.abs() + 1e-8)
    if decay:
        n = w1.norm(dim=-1, keepdim=True)
        w1 = w1 / n * (n + min(1.0, 100 * lr) * (0.4 - n))
    assert not torch.allclose(w1, w0)
    torch.testing.assert_close(ti.embeddings, w1, rtol=1e-5, atol=1e-7)


def test_ti_changes_only_the_new_rows_every_other_weight_bit_identical_at_step_3(
    pipe, forget, monkeypatch
):
    before = {k: snapshot(getattr(pipe, k)) for k in ("unet", "vae", "text_encoder")}
    flags = [p.requires_grad for p in pipe.unet.parameters()]
    n_vocab = len(pipe.tokenizer)
    seen = []  # the embedding matrix each step starts from, and the UNet's state then
    real = fmn_ti.inversion_loss

    def spy(view, unet, *args, **kwargs):
        seen.append(view.text_encoder.get_input_embeddings().weight.detach().clone())
        assert not unet.training and not any(p.requires_grad for p in unet.parameters())
        return real(view, unet, *args, **kwargs)

    monkeypatch.setattr(fmn_ti, "inversion_loss", spy)
    ti = learn_concept_tokens(pipe, forget, cfg_(ti_steps=3))
    assert len(seen) == 3 and len(ti.history) == 3
    final = ti.text_encoder.get_input_embeddings().weight.detach()
    original = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    assert final.shape[0] == n_vocab + 4 and ti.ids == list(range(n_vocab, n_vocab + 4))
    for k, w in enumerate([*seen[1:], final], start=1):  # after steps 1, 2, 3
        assert torch.equal(w[:n_vocab], original), k  # AdamW's decay undone, row by row
        assert all(not torch.equal(w[i], seen[k - 1][i]) for i in ti.ids), k  # each new row moves
    assert torch.equal(ti.embeddings, final[ti.ids])
    # every other text-encoder weight is the pipeline's
    emb = ti.text_encoder.get_input_embeddings().weight
    for (name, p), (_, q) in zip(
        ti.text_encoder.named_parameters(), pipe.text_encoder.named_parameters(), strict=True
    ):
        if p is not emb:
            assert torch.equal(p, q), name
    # the pipeline itself: untouched weights, vocabulary, flags, no stray gradients
    for k in before:
        now = getattr(pipe, k).state_dict()
        assert all(torch.equal(now[n], v) for n, v in before[k].items()), k
    assert len(pipe.tokenizer) == n_vocab
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == n_vocab
    assert [p.requires_grad for p in pipe.unet.parameters()] == flags
    assert all(p.grad is None for p in pipe.unet.parameters())


def test_ti_images_come_shuffled_each_pass_resized_without_crop_and_flipped(
    pipe, forget, monkeypatch
):
    steps = 7  # 3 images: two full passes and one image of a third
    seen = []
    real = fmn_ti.inversion_loss

    def spy(view, unet, images, prompts, generator=None):
        seen.append((images.clone(), list(prompts)))
        return real(view, unet, images, prompts, generator)

    monkeypatch.setattr(fmn_ti, "inversion_loss", spy)
    learn_concept_tokens(pipe, forget, cfg_(ti_steps=steps))
    assert len(seen) == steps
    # replay: the rows' draws, then per pass a permutation, per image a flip draw, and the
    # loss's own draws (VAE sample, t, ε) between images
    g = torch.Generator().manual_seed(SEED)
    reference_models(pipe, "nude", 4, g)
    orders, flips, k = [], [], 0
    while k < steps:
        order = torch.randperm(len(forget), generator=g).tolist()
        orders.append(order)
        for i in order:
            if k == steps:
                break
            flip = float(torch.rand((), generator=g)) > 0.5
            flips.append(flip)
            want = reference_image(forget.sources[i], RES, flip)
            assert torch.equal(seen[k][0][0], want), k
            assert seen[k][1] == [PROMPT]
            z = pipe.vae.encode(want[None]).latent_dist.sample(generator=g)
            torch.randint(0, 1000, (1,), generator=g)
            torch.randn(z.shape, generator=g)
            k += 1
    assert orders[0] != orders[1]  # a fresh order each pass
    assert True in flips and False in flips
    assert {tuple(s[0].shape[-2:]) for s in seen} == {(RES, RES), (21, RES)}  # not cropped


def attention_l2(pipe, tok, te, unet, image, prompt, target_ids, g):
    """train_attn.py's loss on one batch, written out: forward hooks capture each attn2
    layer's inputs; the probabilities softmax(q·kᵀ·scale) are recomputed here; the positions
    are the target tokens and, with use_pooler, the first end-of-text token."""
    captured = []
    hooks = [
        m.register_forward_hook(
            lambda mod, args, kwargs, out: captured.append((mod, args, kwargs)), with_kwargs=True
        )  # fmt: skip
        for n, m in unet.named_modules()
        if n.endswith("attn2")
    ]
    with torch.no_grad():
        z0 = pipe.vae.encode(image).latent_dist.sample(generator=g) * pipe.vae.config.scaling_factor
        t = torch.randint(0, 1000, (1,), generator=g)
        eps = torch.randn(z0.shape, generator=g)
        ab = pipe.scheduler.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        zt = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
        ids = tok([prompt], padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids  # fmt: skip
        ctx = te(ids)[0]
        try:
            unet(zt, t, encoder_hidden_states=ctx)
        finally:
            for h in hooks:
                h.remove()
    row = ids[0].tolist()
    sel = torch.zeros(len(row), dtype=torch.bool)
    for s in range(len(row) - len(target_ids) + 1):
        if row[s : s + len(target_ids)] == target_ids:
            sel[s : s + len(target_ids)] = True
    sel[row.index(tok.convert_tokens_to_ids("<|endoftext|>"))] = True  # the pooled column
    total = torch.zeros(())
    for mod, args, kwargs in captured:
        h = args[0]
        c = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        b, q_len, _ = h.shape
        with torch.no_grad():
            q = mod.to_q(h).view(b, q_len, mod.heads, -1).transpose(1, 2)
            k = mod.to_k(c).view(b, c.shape[1], mod.heads, -1).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) * mod.scale, dim=-1)
        total = total + probs.square()[..., sel].sum()
    assert captured
    return total.sqrt(), int(sel.sum())


def test_the_attention_stage_re_steers_the_learned_tokens(pipe, forget, monkeypatch):
    """train_attn.py with use_ti: the learned rows in the text encoder, the prompt
    "a photo of <s1><s2><s3><s4>", and the attention on those four tokens (+ the pooled
    column) is the loss; the pipeline's own tokenizer and text encoder stay as they were."""
    losses = []
    real_step = SDTrainer.step

    def spy(self, loss):
        losses.append(float(loss.detach()))
        return real_step(self, loss)

    monkeypatch.setattr(SDTrainer, "step", spy)
    te_before, n_vocab = snapshot(pipe.text_encoder), len(pipe.tokenizer)
    cfg = cfg_(ti_steps=2, steps=1)
    unlearn_fmn(pipe, forget, cfg)
    assert len(losses) == 1  # the inversion is not the UNet's optimisation
    learned = learn_concept_tokens(pipe, forget, cfg).embeddings  # pinned by the tests above

    tok, te = copy.deepcopy(pipe.tokenizer), copy.deepcopy(pipe.text_encoder)
    names = ["<s1>", "<s2>", "<s3>", "<s4>"]
    tok.add_tokens(names)
    te.resize_token_embeddings(len(tok))
    ids = tok.convert_tokens_to_ids(names)
    with torch.no_grad():
        te.get_input_embeddings().weight[ids] = learned  # apply_learned_embed_in_clip
    # the attention stage's own stream and generator, as without use_ti
    batch = next(forget.cycle(1, shuffle=True, seed=SEED, transform=FMN_TRANSFORM))
    g = torch.Generator().manual_seed(SEED)
    want, n_cols = attention_l2(
        pipe, tok, te, copy.deepcopy(pipe.unet), batch["images"], PROMPT, ids, g
    )
    assert n_cols == 5  # <s1>…<s4> and the pooled end-of-text column
    assert losses[0] == pytest.approx(float(want), rel=1e-5)
    # the learned rows matter: with the initial rows the loss would differ
    g0 = torch.Generator().manual_seed(SEED)
    tok0, te0, _ = reference_models(pipe, "nude", 4, g0)
    g = torch.Generator().manual_seed(SEED)
    init, _ = attention_l2(pipe, tok0, te0, copy.deepcopy(pipe.unet), batch["images"], PROMPT,
                           ids, g)  # fmt: skip
    assert float(init) != pytest.approx(float(want), rel=1e-5)
    assert len(pipe.tokenizer) == n_vocab
    assert all(torch.equal(p, te_before[n]) for n, p in pipe.text_encoder.state_dict().items())


def test_without_ti_the_concept_words_own_tokens_are_re_steered(pipe, forget, monkeypatch):
    losses = []
    real_step = SDTrainer.step

    def spy(self, loss):
        losses.append(float(loss.detach()))
        return real_step(self, loss)

    def no_inversion(*args, **kwargs):
        raise AssertionError("use_ti false must not run the inversion")

    monkeypatch.setattr(SDTrainer, "step", spy)
    monkeypatch.setattr(fmn_mod, "learn_concept_tokens", no_inversion)
    unlearn_fmn(pipe, forget, cfg_(use_ti=False, steps=1))
    assert len(losses) == 1
    batch = next(forget.cycle(1, shuffle=True, seed=SEED, transform=FMN_TRANSFORM))
    g = torch.Generator().manual_seed(SEED)
    nude = pipe.tokenizer("nude", add_special_tokens=False).input_ids
    unet = copy.deepcopy(pipe.unet)
    want, n_cols = attention_l2(
        pipe, pipe.tokenizer, pipe.text_encoder, unet, batch["images"], NUDE, nude, g
    )
    assert n_cols == 2 and losses[0] == pytest.approx(float(want), rel=1e-5)


def test_ti_defaults_are_ti_yaml_and_attn_yaml():
    cfg = FMNConfig(concept="x")
    assert cfg.use_ti is True  # attn.yaml use_ti: true
    assert (cfg.ti_steps, cfg.ti_lr, cfg.ti_weight_decay, cfg.ti_batch_size) == (500, 1e-3, 0.1, 1)
    assert (cfg.ti_tokens, cfg.ti_init_std, cfg.ti_norm_decay) == (4, 1.0, True)
    assert cfg.ti_prompt.format("<s1><s2><s3><s4>") == PROMPT


def test_ti_refusals(pipe, forget):
    with pytest.raises(SalunError, match="ti_prompt"):
        FMNConfig(concept="x", ti_prompt="a photo of the concept")
    with pytest.raises(SalunError, match="ti_steps"):
        FMNConfig(concept="x", ti_steps=0)
    with pytest.raises(SalunError, match="ti_lr"):
        FMNConfig(concept="x", ti_lr=0.0)
    # "person" is 6 single-character tokens in the tiny vocabulary: more than 4 new rows
    with pytest.raises(SalunError, match="ti_tokens"):
        learn_concept_tokens(pipe, forget, cfg_(concept="person", ti_steps=1))
    parts = ("unet", "vae", "scheduler", "text_encoder")
    taken = SimpleNamespace(**{k: getattr(pipe, k) for k in parts})
    taken.tokenizer = copy.deepcopy(pipe.tokenizer)
    taken.tokenizer.add_tokens(["<s1>"])
    with pytest.raises(SalunError, match="already has the token <s1>"):
        learn_concept_tokens(taken, forget, cfg_(ti_steps=1))
