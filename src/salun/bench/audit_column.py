"""The optional ``audit:`` section of a benchmark config: the per-example audit as a column.

Example::

    audit:
      shadows: 16           # K shadow pairs per audited scenario (required, >= 3)
      bootstrap: 1000       # bootstrap resamples of the intervals (default: the audit's)
      variance: global      # or per_example, fixed (docs/audit.md)
      location: mean        # or median (LiRA's)
      queries: single       # or mirror (LiRA's: the image and its mirror)
      scenarios: [random10] # default: every random-data scenario of the benchmark

Class-wise scenarios are refused: the audit's shadows draw their retain half from every
example outside D_f, so with a forgotten *class* the shadow Retrain would still see other
examples of that class and would not be a Retrain of the scenario (docs/audit.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from salun.errors import SalunError
from salun.metrics.audit import LOCATIONS, QUERIES, VARIANCES
from salun.validate import check_keys

MIN_SHADOWS = 3  # leave one pair out: each held-out pair's Gaussians need >= 2 others
# settings added after the column's first release: left out of the benchmark's hash at
# their default, so committed folders (benchmarks/audit-bench) keep theirs
LATER_SETTINGS = ("location", "queries")


def _audit_default(name: str) -> Any:
    from salun.audit.config import AuditConfig

    return next(f.default for f in fields(AuditConfig) if f.name == name)


@dataclass(frozen=True)
class AuditColumn:
    """The audit run after a benchmark's final runs (docs/audit.md, "As a benchmark column").

    Attributes:
        shadows: K, the shadow pairs of each audited scenario (shared by every method row).
        scenarios: the audited scenarios (random-data ones), resolved at parse time.
        bootstrap: bootstrap resamples of the AUC / TPR intervals.
        variance: ``global`` (one σ per side), ``per_example`` or ``fixed`` (LiRA's).
        location: ``mean`` or ``median`` (LiRA's) of each Gaussian.
        queries: ``single`` or ``mirror`` (LiRA's: the image and its mirror).
    """

    shadows: int
    scenarios: tuple[str, ...]
    bootstrap: int = 1000
    variance: str = "global"
    location: str = "mean"
    queries: str = "single"


def hash_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """``asdict`` of the column as the benchmark's hash sees it (see LATER_SETTINGS)."""
    return {k: v for k, v in d.items() if not (k in LATER_SETTINGS and v == _audit_default(k))}


_KEYS = ("shadows", "bootstrap", "variance", "location", "queries", "scenarios")


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SalunError(f"audit: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_audit_column(raw: Any, scenarios: Sequence[Any], source: str) -> AuditColumn:
    """Check the ``audit:`` mapping against the benchmark's scenarios (parsed ``Scenario``s).

    Raises:
        SalunError: naming the bad key (unknown key, missing ``shadows``, a value out of
            range, an unknown or class-wise scenario, no random scenario to audit).
    """
    if not isinstance(raw, Mapping):
        raise SalunError(f"{source}: audit must be a mapping, e.g. audit: {{shadows: 16}}")
    check_keys(raw, _KEYS, f"{source}: audit")
    if "shadows" not in raw:
        raise SalunError(f"{source}: audit needs shadows: K (the shadow pairs, >= {MIN_SHADOWS})")
    shadows = _int(raw["shadows"], "shadows", MIN_SHADOWS)
    bootstrap = _int(raw.get("bootstrap", _audit_default("bootstrap")), "bootstrap", 10)
    chosen = {}
    for key, allowed in (("variance", VARIANCES), ("location", LOCATIONS), ("queries", QUERIES)):
        chosen[key] = raw.get(key, _audit_default(key))
        if chosen[key] not in allowed:
            raise SalunError(
                f"{source}: audit: {key} must be one of {', '.join(allowed)}, got {chosen[key]!r}"
            )
    kinds = {s.name: s.kind for s in scenarios}
    if "scenarios" in raw:
        names = raw["scenarios"]
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list | tuple) or not names:
            raise SalunError(f"{source}: audit: scenarios must be a non-empty list of names")
        for n in names:
            if n not in kinds:
                raise SalunError(
                    f"{source}: audit: scenarios: {n!r} is not a scenario of this benchmark "
                    f"({', '.join(kinds)})"
                )
            if kinds[n] != "random":
                raise SalunError(
                    f"{source}: audit: scenarios: {n!r} is class-wise; the audit supports "
                    "random-data forgetting only (its shadow Retrain would still see the class)"
                )
        if len(set(names)) != len(names):
            raise SalunError(f"{source}: audit: scenarios must be distinct, got {list(names)}")
    else:
        names = [n for n, k in kinds.items() if k == "random"]
        if not names:
            raise SalunError(
                f"{source}: audit needs a random-data scenario (e.g. random10); this benchmark "
                "has class-wise ones only, which the audit does not support"
            )
    return AuditColumn(shadows, tuple(names), bootstrap, **chosen)


def audit_column_from_dict(d: Mapping[str, Any] | None) -> AuditColumn | None:
    """Rebuild from ``asdict`` output (``bench.json``); None stays None."""
    if d is None:
        return None
    return AuditColumn(**{**d, "scenarios": tuple(d["scenarios"])})
