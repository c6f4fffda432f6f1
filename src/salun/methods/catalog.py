"""Imports every method module so that each registers itself."""

from salun.methods import rl, salun_soft  # noqa: F401
