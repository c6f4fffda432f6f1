"""SalUn's saliency mask over the SD UNet (docs/generation.md).

One unshuffled pass over the forget images (batch 8): z_t from fresh noise and t, the
CFG-combined prediction (1 + w)·ε(c) − w·ε(∅) with w = 7.5, loss −MSE; signed gradients
summed over batches, |·| once, then a global top-k over the chosen parameter set ("full":
the whole UNet, "xattn": ``attn2`` only). Parameters outside the set get mask 0 and the
kept count is exactly ⌊N_set · keep⌋.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from salun.generation.sd.data import ImagePromptSet
from salun.generation.sd.losses import cfg_mask_loss, encode_latents
from salun.generation.sd.params import in_set, select
from salun.generation.sd.pipeline import encode_prompts
from salun.saliency import compute_saliency, saliency_mask
from salun.utils import progress


def sd_saliency(
    pipe: Any,
    forget: ImagePromptSet,
    *,
    guidance: float = 7.5,
    batch_size: int = 8,
    params: str = "full",
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, torch.Tensor]:
    """Saliency scores |Σ_b ∇ℓ_f| for every UNet parameter (0 outside ``params``).

    Args:
        pipe: the original SD pipeline (its UNet is not changed).
        forget: D_f; each image's own prompt is the forget prompt c.
        guidance: w in (1 + w)·ε(c) − w·ε(∅) (reference: 7.5).
        batch_size: reference: 8.
        params: ``full`` or ``xattn``; gradients are only computed for that set.
        seed: seeds the noise, timesteps and VAE sampling.
    """
    unet = pipe.unet
    chosen = {n for n, _ in select(unet, params)}
    before = {n: p.requires_grad for n, p in unet.named_parameters()}
    for n, p in unet.named_parameters():
        p.requires_grad_(n in chosen)
    g = torch.Generator().manual_seed(seed)
    device = unet.device
    uncond1 = encode_prompts(pipe, [""])

    def loss_fn(model, batch) -> torch.Tensor:
        z0 = encode_latents(pipe.vae, batch["images"], g).to(device)
        cond = encode_prompts(pipe, batch["prompts"])
        uncond = uncond1.expand(len(batch["prompts"]), -1, -1)
        return cfg_mask_loss(model, pipe.scheduler, z0, cond, uncond, guidance, g)

    try:
        batches = progress(
            forget.batches(batch_size),
            total=-(-len(forget) // batch_size),
            desc="saliency",
            quiet=quiet,
        )
        scores = compute_saliency(unet, batches, loss_fn)
    finally:
        for n, p in unet.named_parameters():
            p.requires_grad_(before[n])
    return scores


def sd_mask(
    scores: Mapping[str, torch.Tensor], keep: float = 0.5, params: str = "full"
) -> dict[str, torch.Tensor]:
    """Bool mask for every UNet parameter: exactly ⌊N_set · keep⌋ True among ``params``
    (the largest scores, ranked globally across the set), False elsewhere."""
    inside = {n: s for n, s in scores.items() if in_set(n, params)}
    top = saliency_mask(inside, keep=keep, scope="global")
    return {
        n: top[n] if n in top else torch.zeros_like(s, dtype=torch.bool) for n, s in scores.items()
    }
