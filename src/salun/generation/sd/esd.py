"""ESD (Erased Stable Diffusion) baseline, as the reference runs it (docs/generation.md).

Reference: rohitgandikota/erasing ``train-scripts/train-esd.py`` (b8aeab6) with the CompVis
sampler ``ldm/models/diffusion/ddim.py``; the same code is OPTML-Group/Unlearn-Saliency
``SD/train-scripts/train-esd.py``. Each iteration (batch 1):

1. draw t_enc uniformly in [0, ``ddim_steps``);
2. partially sample z from a random latent with the TRAINED UNet, prompt c, guidance
   ``start_guidance`` (3), DDIM η = 0, as CompVis' ``till_T`` does: the step *index* counts
   DOWN (``index = steps − i − 1``) and the loop breaks once ``index + 1 == t_enc``. So a
   small t_enc denoises almost to the end (z nearly clean) and a large one stops early (z
   nearly pure noise); t_enc = 0 never breaks. The stop is a diffusers step-end callback that
   sets the pipeline's interrupt flag (latent output; no patching);
3. draw the training timestep t uniformly in [round(1000·t_enc/50), round(1000·(t_enc+1)/50)),
   the DDIM bucket just above the last step the sampler took (train-esd.py's og_num);
4. target = ε*(z, t, ∅) − η·(ε*(z, t, c) − ε*(z, t, ∅)) from a FROZEN copy θ* under
   ``no_grad`` (η = ``negative_guidance`` = 1);
5. loss = MSE(ε_θ(z, t, c), target); Adam, lr 1e-5, 1 000 iterations.

ESD-x trains ``xattn``; ESD-u trains ``noxattn``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from salun.errors import SalunError
from salun.generation.objectives import negative_guidance as negative_guidance_target
from salun.generation.objectives import squared_error
from salun.generation.sd.deps import require
from salun.generation.sd.losses import predict
from salun.generation.sd.pipeline import encode_prompts
from salun.generation.sd.train import SDTrainConfig, SDTrainer, trainable_copy
from salun.utils import progress, seed_everything
from salun.validate import check_choice, check_nonnegative, check_resolution


@dataclass(frozen=True)
class ESDConfig(SDTrainConfig):
    """ESD. Beyond :class:`SDTrainConfig` (whose ``params`` picks ESD-x or ESD-u):

    Attributes:
        concept: the prompt c to erase, e.g. "nudity" or "an image of a tench".
        iterations: training iterations (reference: 1 000); ``max_steps`` also stops.
        start_guidance: CFG scale of the partial sampling (reference: 3).
        negative_guidance: η of the target (reference: 1).
        ddim_steps: DDIM steps of the partial sampling (reference: 50).
        resolution: image side of the sampled latents (SD v1: 512, the reference's 64×64
            latents); ``salun sd unlearn`` sets it from the run's ``--resolution``.
        frozen_dtype: dtype of the frozen copy (reference: float32; float16 saves GPU
            memory).
    """

    params: str = "xattn"
    batch_size: int = 1
    concept: str = ""
    iterations: int = 1000
    start_guidance: float = 3.0
    negative_guidance: float = 1.0
    ddim_steps: int = 50
    resolution: int = 512
    frozen_dtype: str = "float32"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.concept:
            raise SalunError("ESD needs the concept prompt to erase (concept=...)")
        if self.iterations < 1 or self.ddim_steps < 1:
            raise SalunError("iterations and ddim_steps must be >= 1")
        check_resolution("resolution", self.resolution)
        check_nonnegative("start_guidance", self.start_guidance)
        check_choice("frozen_dtype", self.frozen_dtype, ("float32", "float16", "bfloat16"))


def frozen_copy(unet: Any, dtype: torch.dtype = torch.float32) -> Any:
    """θ*: a copy that never trains (eval, no grad)."""
    frozen = copy.deepcopy(unet).eval()
    if next(frozen.parameters()).dtype != dtype:
        frozen = frozen.to(dtype)
    frozen.requires_grad_(False)
    return frozen


@torch.no_grad()
def esd_target(frozen: Any, z, t, cond, uncond, negative_guidance: float = 1.0) -> torch.Tensor:
    """ε*(z, t, ∅) − η·(ε*(z, t, c) − ε*(z, t, ∅)), computed without any graph."""
    e0 = predict(frozen, z, t, uncond)
    ep = predict(frozen, z, t, cond)
    return negative_guidance_target(ep, e0, negative_guidance)


def sampler_stop_step(steps: int, till_t: int) -> int | None:
    """The loop position ``i`` after which CompVis' DDIM sampler breaks for ``till_T = till_t``
    (``index = steps − i − 1``, break when ``index + 1 == till_t``); None: it never breaks."""
    return steps - till_t if 1 <= till_t <= steps else None


def partial_sample(
    pipe: Any,
    unet: Any,
    cond,
    uncond,
    *,
    steps: int,
    till_t: int,
    guidance: float,
    resolution: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DDIM (η = 0) from a random latent with ``unet``, stopped as CompVis' ``till_T``.

    It runs ``steps − till_t + 1`` denoising steps (all ``steps`` when ``till_t`` is 0): a
    small ``till_t`` gives an almost clean latent, a large one an almost pure-noise latent.
    """
    diffusers = require("diffusers")
    sched = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    sampler = diffusers.StableDiffusionPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    sampler.set_progress_bar_config(disable=True)
    scale = pipe.vae_scale_factor
    side = resolution // scale
    shape = (cond.shape[0], unet.config.in_channels, side, side)
    latents = torch.randn(shape, generator=generator).to(cond.device, cond.dtype)
    last = sampler_stop_step(steps, till_t)

    def stop(p, i, t, kwargs):  # step-end callback: CompVis' `if index + 1 == till: break`
        if i == last:
            p._interrupt = True
        return kwargs

    out = sampler(
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        latents=latents,
        num_inference_steps=steps,
        guidance_scale=guidance,
        eta=0.0,
        height=side * scale,
        width=side * scale,
        output_type="latent",
        callback_on_step_end=stop,
    )
    return out.images


def unlearn_esd(
    pipe: Any,
    cfg: ESDConfig,
    *,
    mask: Mapping[str, torch.Tensor] | None = None,
    inplace: bool = False,
) -> tuple[Any, list[float]]:
    """Train ESD; returns (new UNet, loss history). ``mask`` restricts it like SalUn's."""
    seed_everything(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    frozen = frozen_copy(pipe.unet, getattr(torch, cfg.frozen_dtype))
    tr = SDTrainer(trainable_copy(pipe.unet, inplace), cfg, mask=mask)
    cond = encode_prompts(pipe, [cfg.concept] * cfg.batch_size).to(tr.device)
    uncond = encode_prompts(pipe, [""] * cfg.batch_size).to(tr.device)
    n_train = pipe.scheduler.config.num_train_timesteps
    bar = progress(range(cfg.iterations), desc="esd", quiet=cfg.quiet)
    for _ in bar:
        t_enc = int(torch.randint(0, cfg.ddim_steps, (1,), generator=g))
        z = partial_sample(
            pipe,
            tr.unet,
            cond,
            uncond,
            steps=cfg.ddim_steps,
            till_t=t_enc,
            guidance=cfg.start_guidance,
            resolution=cfg.resolution,
            generator=g,
        )
        # train-esd.py's og_num .. og_num_lim: the bucket of DDIM index t_enc
        lo = round(t_enc / cfg.ddim_steps * n_train)
        hi = min(round((t_enc + 1) / cfg.ddim_steps * n_train), n_train)
        t_val = int(torch.randint(lo, max(hi, lo + 1), (1,), generator=g))
        t = torch.full((cfg.batch_size,), t_val, device=tr.device, dtype=torch.long)
        target = esd_target(frozen, z, t, cond, uncond, cfg.negative_guidance)
        loss = squared_error(predict(tr.unet, z, t, cond), target)
        bar.set_postfix(loss=f"{tr.step(loss):.4f}")
        if tr.done():
            break
    return tr.finish(), tr.history
