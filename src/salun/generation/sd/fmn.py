"""Forget-Me-Not (FMN) attention re-steering, implemented with diffusers attention processors.

The defaults are the official Forget-Me-Not code's (SHI-Labs/Forget-Me-Not a4a81e8,
``configs/attn.yaml`` and ``src/train_attn.py``): while denoising real images of the concept
(random t, fresh noise) under a prompt that names it, the loss is the **L2 norm** of the
cross-attention probabilities at the concept's token positions — concatenated over every
``attn2`` layer, head, query and batch item — plus, with ``use_pooler``, the one pooled
end-of-text column. It is minimised over the **whole UNet** with AdamW (lr 2e-6, weight decay
0.01), batch 1, for 35 steps, over the images in a fresh random order each pass, each resized
(bilinear) and randomly cropped. ``loss="attn_mass"`` keeps salun's earlier variant (the mean
attention mass on the concept tokens), named as such; it is not the official method.

With ``use_ti`` (the reference's ``use_ti: true``, the default) a textual-inversion stage
runs first (:mod:`salun.generation.sd.fmn_ti`, ``src/train_ti.py`` with ``configs/ti.yaml``):
500 steps learn four new tokens ``<s1>``…``<s4>`` for the concept from its images, and the
re-steering then takes the prompt "a photo of <s1><s2><s3><s4>" and the attention on those
four tokens. ``use_ti: false`` re-steers the concept's own word tokens in each image's prompt.

Deliberate departure (docs/generation.md): the reference runs SD 2.1-base.

A custom processor on every ``attn2`` layer computes cross-attention as usual and records
what the loss needs; no diffusers code is patched.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from salun.errors import SalunError
from salun.generation.sd.data import FMN_TRANSFORM, ImagePromptSet
from salun.generation.sd.fmn_ti import learn_concept_tokens
from salun.generation.sd.losses import encode_latents, noisy, predict
from salun.generation.sd.pipeline import encode_prompts, tokenize
from salun.generation.sd.train import SDTrainConfig, SDTrainer, trainable_copy
from salun.utils import progress, seed_everything

LOSSES = ("attn_l2", "attn_mass")


@dataclass(frozen=True)
class FMNConfig(SDTrainConfig):
    """FMN. Beyond :class:`SDTrainConfig`:

    Attributes:
        concept: the word(s) of the concept, e.g. "nude" or "tench". With ``use_ti`` their
            tokens initialise the learned ones; without, they are the tokens that lose
            attention, and every training prompt must contain them.
        steps: optimisation steps, cycling over the concept images (official: 35).
        loss: ``attn_l2`` (official: L2 norm of the concept-token attention probabilities)
            or ``attn_mass`` (salun's earlier variant: their mean attention mass).
        use_pooler: also re-steer the pooled end-of-text column, the first end-of-text token
            after the prompt (official: true). SD 2.1's tokenizer, the reference's, pads with
            another token, so this is one column there; salun picks that one column on SD v1
            too, whose tokenizer pads with end-of-text.
        grad_clip: the reference's ``max_grad_norm: 1`` clips nothing when the whole UNet
            trains (its clip gets the parameter generator the optimizer already consumed),
            so the default is None, as it ran; 1.0 clips as its config says.
        use_ti: first learn new concept tokens by textual inversion, then re-steer those
            in ``ti_prompt`` (official: true). False re-steers ``concept``'s own word tokens
            in each image's prompt.
        ti_steps: textual-inversion steps (official ``max_train_steps_ti``: 500).
        ti_lr: AdamW learning rate of the new token rows, constant (official: 1e-3).
        ti_weight_decay: AdamW weight decay of the new rows (official ``weight_decay_ti``: 0.1).
        ti_batch_size: images per inversion step (official: 1).
        ti_tokens: how many new tokens ``<s1>``… (official: 4). The first rows start as the
            concept's own tokens (ti.yaml: ``elon|musk``), the rest as random rows.
        ti_init_std: standard deviation of the random rows (official ``<rand-1>``: 1.0).
        ti_norm_decay: after each step pull each new row's norm towards 0.4 by
            min(1, 100·ti_lr) of the gap (official ``clip_ti_decay``: true).
        ti_prompt: the prompt of both stages, ``{}`` standing for ``<s1><s2><s3><s4>``
            (official: "a photo of {}", the ``object`` template; "a photo in the style of {}"
            is its ``style`` one).
    """

    params: str = "full"  # official: only_optimize_ca false, the whole UNet
    lr: float = 2e-6
    batch_size: int = 1
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    grad_clip: float | None = None  # the reference's effective value (see above)
    concept: str = ""
    steps: int = 35
    loss: str = "attn_l2"
    use_pooler: bool = True
    # textual inversion: SHI-Labs/Forget-Me-Not a4a81e8 attn.yaml (use_ti) and ti.yaml
    use_ti: bool = True
    ti_steps: int = 500  # max_train_steps_ti
    ti_lr: float = 1e-3  # learning_rate_ti, lr_scheduler constant
    ti_weight_decay: float = 0.1  # weight_decay_ti
    ti_batch_size: int = 1  # train_batch_size
    ti_tokens: int = 4  # placeholder_tokens <s1>|<s2>|<s3>|<s4>
    ti_init_std: float = 1.0  # initializer_tokens ...|<rand-1>|<rand-1>
    ti_norm_decay: bool = True  # clip_ti_decay
    ti_prompt: str = "a photo of {}"  # use_template object

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.concept.strip():
            raise SalunError("FMN needs the concept word(s) to re-steer (concept=...)")
        if self.steps < 1:
            raise SalunError("steps must be >= 1")
        if self.loss not in LOSSES:
            raise SalunError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name in ("ti_steps", "ti_batch_size", "ti_tokens"):
            if getattr(self, name) < 1:
                raise SalunError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.ti_lr > 0:
            raise SalunError(f"ti_lr must be a positive number, got {self.ti_lr}")
        if self.ti_weight_decay < 0 or self.ti_init_std < 0:
            raise SalunError("ti_weight_decay and ti_init_std must be >= 0")
        braces = (self.ti_prompt.count("{"), self.ti_prompt.count("}"))
        if "{}" not in self.ti_prompt or braces != (1, 1):
            raise SalunError(
                f"ti_prompt must contain {{}} exactly once (where the learned tokens go), "
                f"got {self.ti_prompt!r}"
            )


@dataclass
class AttentionStore:
    """Per-forward scratch space: concept weights in, attention masses out."""

    weights: torch.Tensor | None = None  # (B, L) 1.0 on concept tokens
    masses: list[torch.Tensor] = field(default_factory=list)  # per layer: mean mass
    squares: list[torch.Tensor] = field(default_factory=list)  # per layer: Σ probs² selected


class ConceptAttentionProcessor:
    """Cross-attention that also records the attention mass on the concept tokens."""

    def __init__(self, store: AttentionStore) -> None:
        self.store = store

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        b = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        mask = attn.prepare_attention_mask(attention_mask, context.shape[1], b)
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(q, k, mask)  # (B·heads, queries, tokens)
        w = self.store.weights
        if w is not None and w.shape[0] == b and w.shape[1] == probs.shape[-1]:
            per_head = probs.view(b, attn.heads, probs.shape[1], probs.shape[2]).float()
            sel = w[:, None, None, :]
            self.store.masses.append((per_head * sel).sum(-1).mean())
            self.store.squares.append((per_head.square() * sel).sum())
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def concept_attention(unet: Any, store: AttentionStore) -> Iterator[AttentionStore]:
    """Install :class:`ConceptAttentionProcessor` on every ``attn2`` layer, then restore."""
    original = dict(unet.attn_processors)
    if not any("attn2" in k for k in original):
        raise SalunError("this UNet has no cross-attention (attn2) layers; FMN needs them")
    proc = ConceptAttentionProcessor(store)
    unet.set_attn_processor({k: proc if "attn2" in k else p for k, p in original.items()})
    try:
        yield store
    finally:
        unet.set_attn_processor(original)


def concept_token_weights(
    pipe: Any, prompts: Sequence[str], concept: str, *, use_pooler: bool = False
) -> torch.Tensor:
    """(B, L) with 1.0 at every position where the concept's token ids occur in the prompt,
    and, with ``use_pooler``, at the first end-of-text token (the pooled column; not the
    padding that SD v1's tokenizer also fills with end-of-text)."""
    ids = tokenize(pipe, prompts)
    want = pipe.tokenizer(concept, add_special_tokens=False).input_ids
    if not want:
        raise SalunError(f"the concept {concept!r} has no tokens")
    w = torch.zeros(ids.shape, dtype=torch.float32)
    for i, row in enumerate(ids.tolist()):
        for s in range(len(row) - len(want) + 1):
            if row[s : s + len(want)] == want:
                w[i, s : s + len(want)] = 1.0
        if not w[i].any():
            raise SalunError(f"the concept {concept!r} does not occur in the prompt {prompts[i]!r}")
    if use_pooler:
        eot = pipe.tokenizer("<|endoftext|>", add_special_tokens=False).input_ids
        if len(eot) != 1:
            raise SalunError("use_pooler: this tokenizer has no single end-of-text token")
        for i, row in enumerate(ids.tolist()):
            if eot[0] in row:
                w[i, row.index(eot[0])] = 1.0
    return w


def concept_attention_loss(
    pipe: Any,
    unet: Any,
    batch: dict,
    concept: str,
    generator=None,
    *,
    loss: str = "attn_l2",
    use_pooler: bool = True,
):
    """FMN's loss on one batch: the L2 norm of the selected attention probabilities over
    every cross-attention layer (``attn_l2``), or their mean mass (``attn_mass``)."""
    device = next(unet.parameters()).device
    z0 = encode_latents(pipe.vae, batch["images"], generator).to(device)
    zt, _, t = noisy(pipe.scheduler, z0, generator)
    cond = encode_prompts(pipe, batch["prompts"])
    weights = concept_token_weights(pipe, batch["prompts"], concept, use_pooler=use_pooler)
    store = AttentionStore(weights.to(device))
    with concept_attention(unet, store):
        predict(unet, zt, t, cond)
    if not store.masses:
        raise SalunError("no cross-attention map was recorded")
    if loss == "attn_mass":
        return torch.stack(store.masses).mean()
    return torch.stack(store.squares).sum().sqrt()


def unlearn_fmn(
    pipe: Any,
    forget: ImagePromptSet,
    cfg: FMNConfig,
    *,
    mask: Mapping[str, torch.Tensor] | None = None,
    inplace: bool = False,
) -> tuple[Any, list[float]]:
    """Train FMN on images of the concept; returns (new UNet, loss history of the
    re-steering stage).

    With ``cfg.use_ti`` the textual-inversion stage runs first, against the UNet before
    unlearning; then every batch's prompt is ``cfg.ti_prompt`` with the learned tokens, and
    their attention (not the concept word's) is re-steered. The pipeline's tokenizer and text
    encoder are never changed (the stage works on copies)."""
    unet = trainable_copy(pipe.unet, inplace)
    view, concept, prompt = pipe, cfg.concept, None
    if cfg.use_ti:
        ti = learn_concept_tokens(pipe, forget, cfg, unet=unet)
        view, concept, prompt = ti.pipe_view(pipe), ti.concept, ti.prompt
    seed_everything(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    tr = SDTrainer(unet, cfg, mask=mask)
    # the reference's DataLoader(shuffle=True) over RandomCrop(512): a new order each pass
    stream = forget.cycle(cfg.batch_size, shuffle=True, seed=cfg.seed, transform=FMN_TRANSFORM)
    bar = progress(range(cfg.steps), desc="fmn", quiet=cfg.quiet)
    for _ in bar:
        batch = next(stream)
        if prompt is not None:  # train_attn.py with use_ti: "a photo of <s1><s2><s3><s4>"
            batch = {**batch, "prompts": [prompt] * len(batch["prompts"])}
        loss = concept_attention_loss(
            view, tr.unet, batch, concept, g, loss=cfg.loss, use_pooler=cfg.use_pooler
        )
        bar.set_postfix(loss=f"{tr.step(loss):.4f}")
        if tr.done():
            break
    return tr.finish(), tr.history
