"""The options of ``salun audit`` as a small dataclass for
:func:`salun.config_cli.add_options` (the descriptions below are the flags' help)."""

from __future__ import annotations

from dataclasses import dataclass

from salun.config_cli import option
from salun.metrics.audit import LOCATIONS, QUERIES, VARIANCES


@dataclass(frozen=True)
class AuditOptions:
    """``salun audit`` (exactly one of ``preset`` and ``config``).

    Attributes:
        preset: an audit preset: configs/NAME.yaml (e.g. audit-cpu)
        config: an audit YAML file
        out: the audit folder (created; resumed if it exists)
        shadows: override K, the number of shadow pairs
        methods: audit only these method labels of the config
        variance: override the config's σ fit (global, per_example, or LiRA's fixed); the
            finished records are reused
        location: override the config's Gaussian centre (mean, or LiRA's median); the
            finished records are reused
        queries: override the config's queries (single, or LiRA's mirror: needs records
            made with mirror)
        threads: torch CPU threads (1 is best on a busy machine)
        device: cpu (default), auto or cuda[:N]
        quiet: no progress output
    """

    preset: str | None = option(one_of="source", required=True)
    config: str | None = option(one_of="source", required=True)
    out: str | None = option(required=True)
    shadows: int | None = None
    methods: tuple[str, ...] | None = option(None, nargs="+")
    variance: str | None = option(None, choices=VARIANCES)
    location: str | None = option(None, choices=LOCATIONS)
    queries: str | None = option(None, choices=QUERIES)
    threads: int | None = None
    device: str = "cpu"
    quiet: bool = False
