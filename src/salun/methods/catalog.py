"""Imports every built-in method module so that each registers itself (methods of the
user's own modules come through salun.methods.plugins)."""

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
