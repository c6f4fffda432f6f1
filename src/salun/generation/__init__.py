"""Unlearning for generative models: ``ddpm`` (a class-conditional DDPM) and ``sd``
(Stable Diffusion), two siblings over one shared layer: ``objectives`` (SalUn's
forget-to-other-condition term, ESD's negative guidance, GA, α × retain) and ``grids``.
See docs/generation.md."""
