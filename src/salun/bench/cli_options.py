"""The options of ``salun bench`` and ``salun report`` that are not :class:`BenchOptions`
fields (those get their flags from ``BenchOptions`` itself), as small dataclasses for
:func:`salun.config_cli.add_options`.
"""

from __future__ import annotations

from dataclasses import dataclass

from salun.config_cli import option


@dataclass(frozen=True)
class BenchTarget:
    """What ``salun bench`` runs and where (exactly one of ``preset`` and ``config``).

    Attributes:
        preset: a preset name: ci, quick, standard or paper-cifar10
        config: a benchmark YAML file
        out: the result folder: created, or resumed if it is a benchmark folder of this
            config
        no_report: do not write the report at the end
    """

    preset: str | None = option(one_of="source", required=True)
    config: str | None = option(one_of="source", required=True)
    out: str | None = option(required=True)
    no_report: bool = False


@dataclass(frozen=True)
class ReportTarget:
    """``salun report DIR``.

    Attributes:
        dir: the benchmark folder (the --out of salun bench)
    """

    dir: str | None = option(positional=True)
