"""Sampling images for prompt lists, seeded per prompt as the reference evaluation does.

For each prompt a generator is seeded once with its ``seed`` and ``n_per_prompt`` images are
drawn in batches from it (reference ``generate-images.py``: LMS, 100 steps, guidance 7.5).
Folders written here hold PNGs plus ``metadata.csv`` (file_name, prompt, seed, label, case),
which :func:`salun.generation.sd.data.load_image_folder` reads back.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salun.errors import SalunError
from salun.generation.sd.prompts import PromptItem
from salun.io import atomic_write_bytes, atomic_write_text
from salun.utils import progress
from salun.validate import check_fields, check_resolution


@dataclass(frozen=True)
class SampleConfig:
    """Sampling settings (defaults: the reference evaluation, docs/generation.md).

    Attributes:
        steps: denoising steps (100).
        guidance: CFG scale (7.5); ``use_prompt_guidance`` takes a list's own value instead.
        resolution: image side (512 for SD v1).
        n_per_prompt: images per prompt (Imagenette UA: 100; I2P: 1).
        batch_size: images per pipeline call.
    """

    steps: int = 100
    guidance: float = 7.5
    resolution: int = 512
    n_per_prompt: int = 1
    batch_size: int = 10
    use_prompt_guidance: bool = False

    def __post_init__(self) -> None:
        check_fields(self)
        if self.steps < 1 or self.n_per_prompt < 1 or self.batch_size < 1:
            raise SalunError("steps, n_per_prompt and batch_size must be >= 1")
        check_resolution("resolution", self.resolution)


def generate(
    pipe: Any, items: Sequence[PromptItem], cfg: SampleConfig, *, quiet: bool = False
) -> tuple[torch.Tensor, list[dict]]:
    """uint8 images (N, 3, R, R) and one metadata dict per image, in prompt order."""
    images, meta = [], []
    device = pipe.device
    for item in progress(items, desc="generate", quiet=quiet):
        g = torch.Generator(device="cpu").manual_seed(item.seed)
        guidance = item.guidance if cfg.use_prompt_guidance and item.guidance else cfg.guidance
        done = 0
        while done < cfg.n_per_prompt:
            n = min(cfg.batch_size, cfg.n_per_prompt - done)
            side = cfg.resolution // pipe.vae_scale_factor
            shape = (n, pipe.unet.config.in_channels, side, side)
            latents = torch.randn(shape, generator=g).to(device, pipe.unet.dtype)
            out = pipe(
                [item.prompt] * n,
                num_inference_steps=cfg.steps,
                guidance_scale=guidance,
                height=cfg.resolution,
                width=cfg.resolution,
                latents=latents,
                output_type="np",
            ).images
            images.append(
                torch.from_numpy(np.round(out * 255).astype(np.uint8)).permute(0, 3, 1, 2)
            )
            for k in range(n):
                meta.append(
                    {
                        "prompt": item.prompt,
                        "seed": item.seed,
                        "index": done + k,
                        "label": "" if item.label is None else item.label,
                        "case": "" if item.case is None else item.case,
                        "guidance": guidance,
                    }
                )
            done += n
    if not images:
        raise SalunError("no prompts to generate from")
    return torch.cat(images), meta


def png_bytes(image: torch.Tensor) -> bytes:
    """PNG encoding of one uint8 (3, H, W) image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return buf.getvalue()


def save_folder(path: str | Path, images: torch.Tensor, meta: list[dict]) -> Path:
    """Write PNGs and ``metadata.csv`` (written last, so a folder with it is complete)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (img, m) in enumerate(zip(images, meta)):
        case = m["case"] if m["case"] != "" else i
        name = f"{case}_{m['index']}.png"
        atomic_write_bytes(root / name, png_bytes(img))
        rows.append({"file_name": name, **m})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / "metadata.csv", buf.getvalue())
    return root


def generate_to_folder(
    pipe: Any, items: Sequence[PromptItem], cfg: SampleConfig, out: str | Path, **kw: Any
) -> Path:
    """:func:`generate` then :func:`save_folder`."""
    images, meta = generate(pipe, items, cfg, **kw)
    return save_folder(out, images, meta)
