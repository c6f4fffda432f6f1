"""Forget-Me-Not's textual-inversion stage (``use_ti: true``), before attention re-steering.

What the official code runs (SHI-Labs/Forget-Me-Not a4a81e8, ``src/train_ti.py`` with
``configs/ti.yaml``; its dataset ``src/dataset.py``), and what this module does:

- **New tokens.** ``<s1>`` … ``<s4>`` are added to the tokenizer and the text encoder's input
  embedding grows by four rows. ti.yaml initialises them from ``elon|musk|<rand-1>|<rand-1>``:
  the concept's own tokens first, then N(0, 1) rows. salun takes the concept's token ids
  (``elon musk`` gives exactly ti.yaml's two) and fills the remaining rows with
  ``ti_init_std`` · N(0, I) drawn from the run's seed.
- **What trains.** Only those rows. The UNet and the VAE are frozen, and so is the rest of the
  text encoder. The reference hands the *whole* embedding matrix to AdamW (lr 1e-3, betas
  0.9/0.999, eps 1e-8, weight decay 0.1, constant lr) and copies every other row back after
  each step, so they stay the original rows; salun does the same.
- **Norm decay** (``clip_ti_decay: true``). After each step, each new row keeps its
  direction and its norm ``n`` becomes ``n + λ·(0.4 − n)`` with λ = min(1, 100·lr) = 0.1.
- **Loss.** The LDM loss: encode the image (a sample of q(z|x) × the VAE's scaling factor),
  draw t uniformly in [0, T) and ε ~ N(0, I), noise with the scheduler's ``add_noise``, and take
  the mean squared error between ε_θ(z_t, t, c) and ε (v for v-prediction models). The prompt
  c is "a photo of <s1><s2><s3><s4>" (``use_template: object``). The text encoder runs with
  gradient, so the loss reaches the new rows through the frozen UNet.
- **Images.** Batch 1, 500 steps, a fresh random order each pass. Each image is resized
  (bilinear) so its short side is the resolution, with no crop (``Resize(512)``), and flipped
  left-right with probability ½ (``h_flip``). With a batch size above 1, the images of one
  batch must then share their shape.
- **What the attention stage gets.** The reference saves the learned rows
  (``step_inv_500.safetensors``). ``train_attn.py`` adds them to a fresh tokenizer and text
  encoder and re-steers attention away from ``<s1><s2><s3><s4>`` in the same prompt
  template. Here both stages run in one process: :func:`learn_concept_tokens` returns the
  extended tokenizer and text encoder (copies; the pipeline's own stay untouched), and
  :func:`salun.generation.sd.fmn.unlearn_fmn` re-steers those tokens.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from salun.errors import SalunError
from salun.generation.sd.data import ImagePromptSet, Source, open_rgb
from salun.generation.sd.losses import encode_latents, noisy, predict, target_of
from salun.generation.sd.pipeline import tokenize
from salun.utils import progress, seed_everything

NORM_TARGET = 0.4  # train_ti.py: pre_norm + lambda_ * (0.4 - pre_norm)


def placeholder_names(n: int) -> list[str]:
    """``<s1>`` … ``<sn>``: the reference's placeholder tokens (ti.yaml, train_attn.py)."""
    return [f"<s{i + 1}>" for i in range(n)]


@dataclass
class ConceptTokens:
    """The result of the textual-inversion stage.

    Attributes:
        tokenizer: a copy of the pipeline's tokenizer with the placeholder tokens added.
        text_encoder: a copy of the pipeline's text encoder whose input embedding has the
            learned rows (every other weight as in the pipeline's).
        tokens: the placeholder tokens, e.g. ``["<s1>", "<s2>", "<s3>", "<s4>"]``.
        ids: their token ids.
        embeddings: the learned rows, shape (len(tokens), D), detached.
        prompt: the prompt both stages use, e.g. "a photo of <s1><s2><s3><s4>".
        history: the inversion loss at each step.
    """

    tokenizer: Any
    text_encoder: Any
    tokens: list[str]
    ids: list[int]
    embeddings: torch.Tensor
    prompt: str
    history: list[float] = field(default_factory=list)

    @property
    def concept(self) -> str:
        """The string whose tokens the attention stage re-steers: ``<s1><s2><s3><s4>``."""
        return "".join(self.tokens)

    def pipe_view(self, pipe: Any) -> SimpleNamespace:
        """The pipeline's VAE, scheduler and UNet with this stage's tokenizer and text
        encoder: what the attention stage encodes its prompts with."""
        return SimpleNamespace(
            vae=pipe.vae,
            scheduler=pipe.scheduler,
            unet=pipe.unet,
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
        )


def add_placeholder_tokens(
    pipe: Any, concept: str, n: int, init_std: float, generator: torch.Generator
) -> tuple[Any, Any, list[str], list[int]]:
    """Copies of the tokenizer and text encoder with ``n`` new tokens; the first rows are
    the concept's own token rows, the rest ``init_std`` · N(0, I) (train_ti.py get_models)."""
    tokens = placeholder_names(n)
    tokenizer = copy.deepcopy(pipe.tokenizer)
    init_ids = pipe.tokenizer(concept, add_special_tokens=False).input_ids
    if not init_ids:
        raise SalunError(f"the concept {concept!r} has no tokens")
    if len(init_ids) > n:
        raise SalunError(
            f"the concept {concept!r} has {len(init_ids)} tokens, more than ti_tokens={n}; "
            f"raise ti_tokens to at least {len(init_ids)}"
        )
    for tok in tokens:
        if tokenizer.add_tokens(tok) == 0:
            raise SalunError(
                f"the tokenizer already has the token {tok}; textual inversion needs new "
                "placeholder tokens (use a pipeline without learned tokens)"
            )
    ids = tokenizer.convert_tokens_to_ids(tokens)
    text_encoder = copy.deepcopy(pipe.text_encoder).float()
    try:  # transformers >= 4.46 would fit a Gaussian to all rows first; we overwrite them
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    except TypeError:
        text_encoder.resize_token_embeddings(len(tokenizer))
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for k, tid in enumerate(ids):
            if k < len(init_ids):
                weight[tid] = weight[init_ids[k]]
            else:
                noise = torch.randn(weight.shape[1], generator=generator)
                weight[tid] = (noise * init_std).to(weight.device, weight.dtype)
    return tokenizer, text_encoder, tokens, ids


def _resized(src: Source, resolution: int) -> torch.Tensor:
    """uint8 (3, H, W): torchvision ``Resize(R, BILINEAR)`` on a PIL image, no crop (the
    short side becomes R, the long side int(R·long/short))."""
    from PIL import Image

    img = open_rgb(src)
    w, h = img.size
    short, long = min(w, h), max(w, h)
    size_long = int(resolution * long / short)
    new = (resolution, size_long) if w <= h else (size_long, resolution)
    if (w, h) != new:
        img = img.resize(new, Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def ti_batches(
    forget: ImagePromptSet, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Endless (indices, images in [−1, 1]): a fresh permutation each pass (the reference's
    ``DataLoader(shuffle=True)``); per image, in order, one draw u ~ U[0, 1) and a left-right
    flip when u > ½ (dataset.py ``random.random() > 0.5``)."""
    if len(forget) == 0:
        raise SalunError("the image set is empty")
    while True:
        order = torch.randperm(len(forget), generator=generator).tolist()
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            images = []
            for i in idx:
                x = _resized(forget.sources[i], forget.resolution).float() / 127.5 - 1.0
                if float(torch.rand((), generator=generator)) > 0.5:
                    x = x.flip(-1)
                images.append(x)
            if len({x.shape for x in images}) > 1:
                raise SalunError(
                    f"ti_batch_size {batch_size}: the images of a batch must share their shape "
                    "after resizing (the reference resizes without cropping); use "
                    "ti_batch_size 1 or images of one aspect ratio"
                )
            yield idx, torch.stack(images)


def inversion_loss(
    view: Any, unet: Any, images: torch.Tensor, prompts: Sequence[str], generator=None
) -> torch.Tensor:
    """train_ti.py ``loss_step``: MSE(ε_θ(z_t, t, c), ε) with c from the (trainable) text
    encoder, so the gradient reaches its input embedding."""
    device = next(unet.parameters()).device
    z0 = encode_latents(view.vae, images, generator).to(device)
    zt, eps, t = noisy(view.scheduler, z0, generator)
    ids = tokenize(view, prompts).to(view.text_encoder.device)
    cond = view.text_encoder(ids)[0]
    pred = predict(unet, zt, t, cond)
    return F.mse_loss(pred, target_of(view.scheduler, z0, eps, t).float())


@contextmanager
def _frozen(module: Any) -> Iterator[None]:
    """``module`` in eval mode with no parameter requiring grad; flags and mode restored."""
    flags = [p.requires_grad for p in module.parameters()]
    was_training = module.training
    module.requires_grad_(False)
    module.eval()
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)
        module.train(was_training)


def learn_concept_tokens(
    pipe: Any, forget: ImagePromptSet, cfg: Any, *, unet: Any | None = None
) -> ConceptTokens:
    """Forget-Me-Not's textual inversion: learn ``cfg.ti_tokens`` new token embeddings for
    ``cfg.concept`` from the forget images (module docstring; SHI-Labs/Forget-Me-Not
    a4a81e8 ``train_ti.py``).

    Args:
        pipe: the SD pipeline; nothing in it changes (tokenizer and text encoder are copied,
            the UNet is used frozen and its flags and mode are restored).
        forget: images of the concept (their own prompts are not used).
        cfg: an :class:`~salun.generation.sd.fmn.FMNConfig` (its ``ti_*`` fields, ``concept``,
            ``seed``, ``quiet``).
        unet: the UNet to invert against (default ``pipe.unet``, the model before
            unlearning, as in the reference).

    Returns:
        :class:`ConceptTokens`.

    Example:
        >>> ti = learn_concept_tokens(pipe, forget, FMNConfig(concept="nude", ti_steps=500))
        >>> ti.prompt
        'a photo of <s1><s2><s3><s4>'
    """
    unet = pipe.unet if unet is None else unet
    seed_everything(cfg.seed)  # the text encoder's dropout, if it has any, draws globally
    g = torch.Generator().manual_seed(cfg.seed)
    tokenizer, text_encoder, tokens, ids = add_placeholder_tokens(
        pipe, cfg.concept, cfg.ti_tokens, cfg.ti_init_std, g
    )
    prompt = cfg.ti_prompt.format("".join(tokens))
    view = SimpleNamespace(
        vae=pipe.vae, scheduler=pipe.scheduler, tokenizer=tokenizer, text_encoder=text_encoder
    )
    text_encoder.requires_grad_(False)
    embedding = text_encoder.get_input_embeddings().weight
    embedding.requires_grad_(True)
    text_encoder.train()  # train_ti.py: text_encoder.train(), unet.eval()
    original = embedding.detach().clone()  # orig_embeds_params, after the initialisation
    update = torch.zeros(embedding.shape[0], dtype=torch.bool, device=embedding.device)
    update[ids] = True
    opt = torch.optim.AdamW(
        [embedding], lr=cfg.ti_lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.ti_weight_decay
    )
    lam = min(1.0, 100 * cfg.ti_lr)  # constant lr schedule
    history: list[float] = []
    stream = ti_batches(forget, cfg.ti_batch_size, g)
    bar = progress(range(cfg.ti_steps), desc="fmn ti", quiet=cfg.quiet)
    with _frozen(unet):
        for _ in bar:
            _, images = next(stream)
            loss = inversion_loss(view, unet, images, [prompt] * len(images), g)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise SalunError(
                    f"the textual-inversion loss became {value} at step {len(history)}; lower ti_lr"
                )
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                if cfg.ti_norm_decay:
                    rows = embedding[update]
                    pre = rows.norm(dim=-1, keepdim=True)
                    target = pre + lam * (NORM_TARGET - pre)
                    embedding[update] = F.normalize(rows, dim=-1) * target
                embedding[~update] = original[~update]
            history.append(value)
            bar.set_postfix(loss=f"{value:.4f}")
    embedding.requires_grad_(False)
    text_encoder.eval()
    return ConceptTokens(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        tokens=tokens,
        ids=list(ids),
        embeddings=embedding.detach()[ids].clone(),
        prompt=prompt,
        history=history,
    )
