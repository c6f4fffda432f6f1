"""Imports every method module so that each registers itself."""

from salun.methods import (  # noqa: F401
    be,
    bs,
    ft,
    ga,
    iu,
    l1_sparse,
    neggrad_plus,
    retrain,
    rl,
    salun_soft,
    scrub,
    ssd,
)
