"""Class forgetting in a class-conditional DDPM with classifier-free guidance.

One algorithm per file over the shared layer in ``salun.generation`` (objectives, grids):
``model`` (the denoiser), ``diffusion`` (the forward process and loss), ``train``,
``mask`` (the saliency mask), ``unlearn`` (SalUn, RL, GA, ESD), ``sampler``, ``metrics`` and
``evaluate``, ``data``, ``checkpoint``, ``workflows`` (model folders) and ``cli``
(``salun gen``). See docs/generation.md.
"""
