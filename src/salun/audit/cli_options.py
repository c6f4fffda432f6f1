"""The options of ``salun audit`` as a small dataclass for
:func:`salun.config_cli.add_options` (the descriptions below are the flags' help)."""

from __future__ import annotations

from dataclasses import dataclass

from salun.config_cli import option


@dataclass(frozen=True)
class AuditOptions:
    """``salun audit`` (exactly one of ``preset`` and ``config``).

    Attributes:
        preset: an audit preset: configs/NAME.yaml (e.g. audit-cpu)
        config: an audit YAML file
        out: the audit folder (created; resumed if it exists)
        shadows: override K, the number of shadow pairs
        methods: audit only these method labels of the config
        threads: torch CPU threads (1 is best on a busy machine)
        device: cpu (default), auto or cuda[:N]
        quiet: no progress output
    """

    preset: str | None = option(one_of="source", required=True)
    config: str | None = option(one_of="source", required=True)
    out: str | None = option(required=True)
    shadows: int | None = None
    methods: tuple[str, ...] | None = option(None, nargs="+")
    threads: int | None = None
    device: str = "cpu"
    quiet: bool = False
