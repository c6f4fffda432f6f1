"""Audit configuration: YAML in, a frozen dataclass out, every key checked.

Example (``configs/audit-cpu.yaml`` is a complete one)::

    name: audit-cpu
    dataset: fashion-mnist
    arch: mlp
    subset: 6000            # training examples drawn from the dataset (seeded)
    test_subset: 2000       # test examples (TA and the SVC MIA's non-members)
    forget_fraction: 0.1    # of the subset: the fixed target forget set D_f
    original: {epochs: 60, batch_size: 128, lr: 0.05}   # TrainConfig fields (no seed)
    shadows: 16
    methods:
      original: {}          # no unlearning: the attack's upper reference
      retrain: {}           # an independent Retrain: the null check (AUC ≈ 0.5)
      salun: {epochs: 4, lr: 0.01}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from salun.errors import SalunError
from salun.io import stable_hash
from salun.metrics.audit import LOCATIONS, QUERIES, VARIANCES
from salun.train import TrainConfig
from salun.validate import check_fields, check_seed
from salun.yaml_file import read_yaml

# pseudo-methods of the audit: the untouched original and an independently seeded Retrain
ORIGINAL, RETRAIN = "original", "retrain"
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# settings of the attack, not of the shadow models: changing one keeps every shadow
STATISTICS = ("variance", "location", "queries", "bootstrap")
# how each shadow's forget set is chosen (docs/audit.md): salun's fixed D_f, or U-LiRA's
# fresh random forget set per shadow (Hayes et al. 2024)
FORGET_SETS = ("fixed", "per_shadow")


@dataclass(frozen=True)
class AuditConfig:
    """One audit: K shadow pairs on one dataset subset, and the methods audited on them.

    Attributes:
        name: a short name shown in the report.
        dataset: a ``load_dataset`` spec (``fashion-mnist``, ``digits``, ``synthetic:N``...).
        arch: a registered architecture.
        original: the shadow originals' recipe; Retrain reuses it on the half without D_f.
        methods: ``{label: overrides}``; ``method:`` in the overrides names the registered
            method when the label differs. ``original`` and ``retrain`` are pseudo-methods
            (no unlearning; an independently seeded Retrain).
        width: the architecture's width multiplier.
        data_root: a folder to look in first for the dataset's files.
        subset: training examples drawn from the dataset (None = all).
        test_subset: test examples drawn (None = all).
        forget_fraction: fraction of the subset forming the target forget set D_f (with
            ``forget_sets: per_shadow``: the size of every shadow's own forget set).
        forget_count: an exact size of D_f instead of ``forget_fraction``.
        forget_sets: ``fixed`` (salun's default: one D_f for every shadow, each shadow a
            random half of the rest, leave one pair out) or ``per_shadow`` (U-LiRA, Hayes
            et al. 2024: shadow k trains on a random half T_k of the whole subset and
            forgets a fresh random F_k ⊂ T_k of the same size; an example is scored against
            the unlearned models whose F_j held it and the Retrains that never saw it).
        shadows: K, the number of shadow pairs.
        seed: seeds the subset, D_f, the shadow halves and the shadows' training.
        variance: how each Gaussian's σ is fitted: ``global`` (salun's default: one σ per
            side, pooled over examples around each example's own mean), ``per_example``
            (LiRA's default) or ``fixed`` (LiRA's ``fix_variance``: one std of all
            unlearned-side φ, shared by both sides). docs/audit.md names the reference lines.
        location: each Gaussian's centre over the K − 1 fitting pairs: ``mean`` (salun's
            default) or ``median`` (LiRA's ``np.median``).
        queries: ``single`` (salun's default: φ of the image as stored) or ``mirror``
            (LiRA's inference: the image and its horizontal mirror, one Gaussian pair per
            query, the ratios averaged); ``mirror`` needs a dataset that allows flips.
        bootstrap: bootstrap resamples of the intervals.
        description: free text shown in the report.
    """

    name: str
    dataset: str
    arch: str
    original: TrainConfig
    methods: tuple[tuple[str, str, dict], ...]
    width: float = 1.0
    data_root: str | None = None
    subset: int | None = None
    test_subset: int | None = None
    forget_fraction: float | None = 0.1
    forget_count: int | None = None
    forget_sets: str = "fixed"
    shadows: int = 16
    seed: int = 0
    variance: str = "global"
    location: str = "mean"
    queries: str = "single"
    bootstrap: int = 1000
    description: str = ""

    def __post_init__(self) -> None:
        check_fields(self)  # types first: subset 600.5 or shadows 3.5 never reach the run
        check_seed("seed", self.seed)
        if self.shadows < 3:
            raise SalunError(f"shadows must be at least 3, got {self.shadows}")
        if (self.forget_fraction is None) == (self.forget_count is None):
            raise SalunError("give exactly one of forget_fraction and forget_count")
        if self.forget_fraction is not None and not 0 < self.forget_fraction < 1:
            raise SalunError(f"forget_fraction must lie in (0, 1), got {self.forget_fraction}")
        if self.forget_count is not None and self.forget_count < 1:
            raise SalunError(f"forget_count must be >= 1, got {self.forget_count}")
        for k in ("subset", "test_subset"):
            v = getattr(self, k)
            if v is not None and v < 4:
                raise SalunError(f"{k} must be at least 4, got {v}")
        for key, allowed in (
            ("forget_sets", FORGET_SETS),
            ("variance", VARIANCES),
            ("location", LOCATIONS),
            ("queries", QUERIES),
        ):
            value = getattr(self, key)
            if value not in allowed:
                raise SalunError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        if self.bootstrap < 10:
            raise SalunError(f"bootstrap must be at least 10, got {self.bootstrap}")
        if not self.methods:
            raise SalunError("methods must not be empty")

    def shadow_hash(self) -> str:
        """A hash of what the shadow models depend on. Methods, K and the statistics are
        left out, so adding a method or more shadows reuses the finished ones (and the
        folders of before ``location`` / ``queries`` / ``forget_sets`` keep their hash:
        ``forget_sets`` counts only when it is not the default ``fixed``)."""
        d = asdict(self)
        for k in STATISTICS + ("name", "methods", "shadows", "description"):
            d.pop(k)
        if d["forget_sets"] == "fixed":
            d.pop("forget_sets")
        return stable_hash(d)

    def method(self, label: str) -> tuple[str, dict]:
        for lab, name, over in self.methods:
            if lab == label:
                return name, over
        raise SalunError(f"no method {label!r} in this audit")

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(lab for lab, _, _ in self.methods)


_KEYS = {f.name for f in fields(AuditConfig)}
_REQUIRED = ("dataset", "arch", "original", "methods")


def _methods(raw: Any) -> tuple[tuple[str, str, dict], ...]:
    from salun.methods import make_config

    if not isinstance(raw, Mapping) or not raw:
        raise SalunError("methods must be a non-empty mapping, e.g. methods: {salun: {epochs: 4}}")
    out = []
    for label, body in raw.items():
        if not isinstance(label, str) or not NAME_RE.match(label):
            raise SalunError(f"method label {label!r} must be letters, digits, '_' or '-'")
        if body is not None and not isinstance(body, Mapping):
            raise SalunError(f"method {label!r}: its settings must be a mapping, got {body!r}")
        body = dict(body or {})
        name = body.pop("method", label)
        if "seed" in body:
            raise SalunError(f"method {label!r}: seed comes from the shadow (remove it)")
        if name in (ORIGINAL, RETRAIN):
            if body:
                raise SalunError(f"{name!r} is an audit pseudo-method and takes no settings")
        else:
            make_config(name, body)  # unknown method or setting: a clear error now
        out.append((label, name, body))
    return tuple(out)


def parse_audit_config(raw: Any, source: str = "config") -> AuditConfig:
    """Build an :class:`AuditConfig` from a parsed YAML mapping."""
    if not isinstance(raw, Mapping):
        raise SalunError(f"{source}: the top level must be a mapping")
    bad = sorted(set(raw) - _KEYS)
    if bad:
        raise SalunError(f"{source}: unknown key {bad[0]!r}; allowed: {', '.join(sorted(_KEYS))}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise SalunError(f"{source}: missing key {missing[0]!r}")
    orig = raw["original"]
    if not isinstance(orig, Mapping):
        raise SalunError(f"{source}: original must be a mapping of training settings")
    bad = sorted(set(orig) - ({f.name for f in fields(TrainConfig)} - {"seed"}))
    if bad:
        raise SalunError(f"{source}: original: unknown setting {bad[0]!r} (seed is per shadow)")
    try:
        recipe = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in orig.items()})
    except TypeError as e:
        raise SalunError(f"{source}: original: {e}") from None
    d = {k: raw[k] for k in raw if k not in ("original", "methods")}
    if "forget_count" in d and "forget_fraction" not in d:
        d["forget_fraction"] = None
    try:
        return AuditConfig(
            name=str(d.pop("name", None) or Path(source).stem),
            original=recipe,
            methods=_methods(raw["methods"]),
            **d,
        )
    except TypeError as e:
        raise SalunError(f"{source}: {e}") from None


def load_audit_config(path: str | Path) -> AuditConfig:
    """Read and check an audit YAML file."""
    raw = read_yaml(path, f"audit config {path} does not exist")
    return parse_audit_config(raw, str(path))


def config_from_dict(d: Mapping[str, Any]) -> AuditConfig:
    """Rebuild an :class:`AuditConfig` from ``asdict`` output (``audit.json``)."""
    orig = {k: tuple(v) if isinstance(v, list) else v for k, v in d["original"].items()}
    return AuditConfig(
        **{
            **d,
            "original": TrainConfig(**orig),
            "methods": tuple((lab, name, dict(over)) for lab, name, over in d["methods"]),
        }
    )
