"""Unlearning for generative models: class-conditional DDPM and Stable Diffusion (``sd``)."""
