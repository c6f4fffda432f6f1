"""A tiny random Stable Diffusion pipeline built offline from configs (tests, CPU smoke runs).

Same component types as SD v1.x (UNet2DConditionModel with cross-attention ``attn2``,
AutoencoderKL, CLIP text encoder and tokenizer, DDIM scheduler with SD's scaled-linear
betas), a few thousand weights in all. The tokenizer is a byte-level CLIP BPE with a
character vocabulary built here, so nothing is downloaded. transformers 5.x ignores
``vocab_file=``/``merges_file=`` (every token would become one id): we pass ``vocab=`` and
``merges=`` directly, and the tests check that two prompts tokenise differently.
"""

from __future__ import annotations

from typing import Any

import torch

from salun.generation.sd.deps import require

SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def tiny_tokenizer(max_length: int = 77, words: tuple[str, ...] = ()) -> Any:
    """A CLIPTokenizer over single bytes (plus optional whole ``words`` via merges)."""
    transformers = require("transformers")
    tokenizers = require("tokenizers")
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {s: i for i, s in enumerate(SPECIALS)}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:  # left-to-right merges make each listed word a single token
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            merged = pieces[0] + pieces[1]
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def tiny_pipeline(seed: int = 0, *, words: tuple[str, ...] = (), scheduler: str = "ddim") -> Any:
    """A random ``StableDiffusionPipeline`` (latent 4×8×8 for 16×16 images), no safety checker.

    Args:
        seed: seeds the random weights, so two calls give identical pipelines.
        words: words that get a single token each (handy for concept-token tests).
        scheduler: ``ddim`` (default) or any name accepted by
            :func:`salun.generation.sd.pipeline.set_scheduler`.
    """
    diffusers = require("diffusers")
    transformers = require("transformers")
    tokenizer = tiny_tokenizer(words=words)
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=2,
        norm_num_groups=2,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
        sample_size=16,
    )
    text_config = transformers.CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=8,
        intermediate_size=16,
        layer_norm_eps=1e-5,
        num_attention_heads=2,
        num_hidden_layers=2,
        max_position_embeddings=tokenizer.model_max_length,
        vocab_size=len(tokenizer),
    )
    text_encoder = transformers.CLIPTextModel(text_config).eval()
    sched = diffusers.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    if scheduler != "ddim":
        from salun.generation.sd.pipeline import set_scheduler

        set_scheduler(pipe, scheduler)
    return pipe
