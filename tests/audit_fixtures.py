"""Shared by the audit tests: run an audit while recording every model it trains."""

from __future__ import annotations

import pytest

import salun.audit.workflow as wf
from salun.audit import parse_audit_config, run_audit


def audit_recording_training(raw: dict, out, bundle):
    """``(cfg, out, summary, calls)``: ``calls`` holds (data, seed) of each training run."""
    cfg = parse_audit_config(raw)
    calls = []
    real = wf.train_supervised

    def spy(model, data, recipe, **kw):
        calls.append((data, recipe.seed))
        return real(model, data, recipe, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wf, "train_supervised", spy)
        summary = run_audit(cfg, out, quiet=True, bundle=bundle)
    return cfg, out, summary, calls
