"""Benchmark configuration: YAML in, frozen dataclasses out, every key checked.

A benchmark is a grid of methods × scenarios × seeds on one dataset and architecture.
Example (``configs/ci.yaml`` is a complete one)::

    name: ci
    dataset: digits
    arch: mlp
    width: 0.25
    original: {epochs: 30, batch_size: 64, lr: 0.05}   # TrainConfig fields (no seed)
    scenarios: [random10, {name: class, kind: class, classes: [3]}]
    seeds: [0, 1]          # the reported seeds
    protocol: [paper, tuned]   # paper: each method's lr; tuned: its grid searched
    tune_seeds: [100]      # the search's seeds (tuned), never reported
    methods:
      rl: {epochs: 3, lr_grid: [0.01, 0.03]}          # flat: the method's config overrides
      salun_legacy: {method: salun, mask_mode: legacy}  # a second label for one method
    plugins: [my_pkg.my_methods]   # modules registering methods of your own (docs/plugins.md)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from salun.bench.audit_column import (
    AuditColumn,
    audit_column_from_dict,
    parse_audit_column,
)
from salun.bench.audit_column import hash_dict as audit_hash_dict
from salun.errors import SalunError
from salun.io import stable_hash
from salun.metrics.mia import FEATURES
from salun.train import TrainConfig
from salun.validate import (
    check_choice,
    check_each,
    check_fields,
    check_int,
    check_keys,
    check_positive,
    check_range,
    check_seed,
)
from salun.yaml_file import read_yaml

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
RESERVED_LABELS = ("retrain", "original")


@dataclass(frozen=True)
class Scenario:
    """One forgetting scenario.

    Attributes:
        name: label used in keys, file names and tables (e.g. ``random10``).
        kind: ``random`` (random data forgetting) or ``class`` (class-wise).
        fraction: random: fraction of the training set to forget.
        count: random: an exact number of samples instead of ``fraction``.
        classes: class-wise: the forgotten classes.
    """

    name: str
    kind: str
    fraction: float | None = None
    count: int | None = None
    classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        where = f"scenario {self.name!r}"
        try:
            check_fields(self)
        except SalunError as e:
            raise SalunError(f"{where}: {e}") from None
        check_choice(f"{where}: kind", self.kind, ("random", "class"))
        if self.fraction is not None:
            check_range(f"{where}: fraction", self.fraction, 0, 1, low_open=True)
        if self.count is not None:
            check_int(f"{where}: count", self.count, 1)
        check_each(f"{where}: classes", self.classes, check_int, 0)


@dataclass(frozen=True)
class MethodEntry:
    """One row of the benchmark table.

    Attributes:
        label: the row's name (defaults to the method name).
        method: the registered method (see ``salun.methods.list_methods``).
        overrides: config overrides (``lr_grid`` included: it is a field of every method
            config and, when given, the grid the ``tuned`` protocol searches).
    """

    label: str
    method: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchConfig:
    """A whole benchmark.

    Attributes:
        name: a short name (shown in the report).
        dataset: a ``load_dataset`` spec, e.g. ``digits``, ``fashion-mnist``, ``cifar10``.
        data_root: a folder to look in first for the dataset's files.
        arch: a registered architecture (``mlp``, ``cnn``, ``resnet18``, ``vgg16_bn``).
        width: channel / hidden-size multiplier of the architecture.
        val_fraction: fraction of each class held out for validation (never trained on).
        original: the recipe of the original model; Retrain reuses it on D_r.
        scenarios: the forgetting scenarios.
        seeds: one original model, split and Retrain per seed (paper: 10 trials).
        methods: the unlearning methods (Retrain is always run as the reference).
        protocols: ``paper`` (each method at its configured ``lr``, no search) and/or
            ``tuned`` (each method's grid searched on ``tune_seeds`` for the smallest mean
            Avg. Gap, the chosen value then run on ``seeds``); see docs/benchmarks.md.
        tune_seeds: the seeds of the ``tuned`` search. Given as ``tune_seeds`` they must not
            be reported seeds; the legacy keys ``tune_lr: true`` / ``tune_seed`` map here
            and may name a reported seed (as old result folders did; the report says so).
        mia_features: the MIA attack features evaluated per run; ``confidence`` is the
            paper's MIA-efficacy, the others (correctness, entropy, m_entropy, prob) each
            cost one more SVC fit on 2×|test| samples.
        description: free text shown in the report.
        audit: the per-example audit run after the final runs (``audit:`` in YAML;
            None: no audit). See ``audit_column.py`` and docs/audit.md.
        grid_extend: how many values the ``tuned`` search may add beyond an end of a
            method's grid, one at a time, while the best value sits at that end (the
            next log step beyond it); 0: the grid is searched as given.
        plugins: modules of the user's own methods, imported before ``methods`` is read
            (docs/plugins.md).
    """

    name: str
    dataset: str
    arch: str
    original: TrainConfig
    scenarios: tuple[Scenario, ...]
    seeds: tuple[int, ...]
    methods: tuple[MethodEntry, ...]
    width: float = 1.0
    data_root: str | None = None
    val_fraction: float = 0.0
    protocols: tuple[str, ...] = ("paper",)
    tune_seeds: tuple[int, ...] = ()
    mia_features: tuple[str, ...] = FEATURES
    description: str = ""
    audit: AuditColumn | None = None
    grid_extend: int = 0
    plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # the whole config is checked here, before anything trains (grids: parse_methods)
        check_fields(self)
        check_int("grid_extend", self.grid_extend, 0)
        check_each("seeds", self.seeds, check_seed)
        check_each("tune_seeds", self.tune_seeds, check_seed)
        check_positive("width", self.width)
        check_range("val_fraction", self.val_fraction, 0, 1)

    @property
    def tune_lr(self) -> bool:
        """Whether the ``tuned`` protocol (and so the search) runs."""
        return "tuned" in self.protocols

    @property
    def search_seeds(self) -> tuple[int, ...]:
        """The seeds the search runs on (empty without the ``tuned`` protocol)."""
        return tuple(self.tune_seeds) if self.tune_lr else ()

    @property
    def search_seed(self) -> int | None:
        """The first search seed (None without the ``tuned`` protocol)."""
        return self.search_seeds[0] if self.search_seeds else None

    @property
    def tuning_seed_reported(self) -> bool:
        """True when a search seed is also reported (legacy configs): its final runs are
        the search's own runs, which flatters every searched method."""
        return any(s in self.seeds for s in self.search_seeds)

    @property
    def all_seeds(self) -> tuple[int, ...]:
        """Every seed that needs an original model and Retrain (search seeds included)."""
        extra = tuple(s for s in self.search_seeds if s not in self.seeds)
        return tuple(self.seeds) + extra

    def hash(self) -> str:
        """A hash of everything that changes results (a result folder belongs to one)."""
        d = asdict(self)
        if d["audit"] is None:  # configs (and folders) of before the audit keep their hash
            del d["audit"]
        else:  # and those of before its later settings, too
            d["audit"] = audit_hash_dict(d["audit"])
        if d["grid_extend"] == 0:  # and of before grid extension
            del d["grid_extend"]
        if not d["plugins"]:  # and of before plugins
            del d["plugins"]
        return stable_hash(d)

    def scenario(self, name: str) -> Scenario:
        for s in self.scenarios:
            if s.name == name:
                return s
        raise SalunError(f"no scenario {name!r} in this benchmark")

    def method(self, label: str) -> MethodEntry:
        for m in self.methods:
            if m.label == label:
                return m
        raise SalunError(f"no method {label!r} in this benchmark")


PROTOCOLS = ("paper", "tuned")
# YAML spells the protocols key ``protocol``; ``tune_lr``/``tune_seed`` are the legacy keys
_TOP_KEYS = ({f.name for f in fields(BenchConfig)} - {"protocols"}) | {
    "protocol",
    "tune_lr",
    "tune_seed",
}
_REQUIRED = ("dataset", "arch", "original", "scenarios", "seeds", "methods")


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SalunError(f"{what} {name!r} must be letters, digits, '_' or '-' (no dots/spaces)")
    return name


def parse_scenario(item: Any) -> Scenario:
    """A scenario from a shorthand (``random10``, ``random50``, ``class3``) or a mapping
    ``{name, kind, fraction | count | classes}``."""
    if isinstance(item, str):
        m = re.fullmatch(r"random(\d+)", item)
        if m and 0 < int(m.group(1)) < 100:
            return Scenario(item, "random", fraction=int(m.group(1)) / 100)
        m = re.fullmatch(r"class(\d+)", item)
        if m:
            return Scenario(item, "class", classes=(int(m.group(1)),))
        raise SalunError(
            f"scenario {item!r}: use randomNN (e.g. random10), classN (e.g. class0) or a "
            "mapping {name, kind: random|class, fraction|count|classes}"
        )
    if not isinstance(item, Mapping):
        raise SalunError(f"a scenario must be a string or a mapping, got {item!r}")
    check_keys(item, {f.name for f in fields(Scenario)}, f"scenario {item.get('name')!r}")
    if "name" not in item or "kind" not in item:
        raise SalunError(f"scenario {dict(item)} needs a name and a kind (random or class)")
    name = _check_name(item["name"], "scenario name")
    kind = item["kind"]
    if kind == "random":
        if ("fraction" in item) == ("count" in item):
            raise SalunError(f"scenario {name!r}: random forgetting needs fraction or count")
        if item.get("classes"):
            raise SalunError(f"scenario {name!r}: random forgetting takes no classes")
    elif kind == "class":
        classes = item.get("classes")
        if not isinstance(classes, list | tuple) or not classes:
            raise SalunError(f"scenario {name!r}: class-wise forgetting needs classes: [c, ...]")
        if "fraction" in item or "count" in item:
            raise SalunError(f"scenario {name!r}: class-wise forgetting takes no fraction/count")
    else:
        raise SalunError(f"scenario {name!r}: kind must be 'random' or 'class', got {kind!r}")
    # no float()/int() here: Scenario checks the types, so 10.9 or "x" is refused, not cut
    return Scenario(
        name,
        kind,
        fraction=_number(item["fraction"], f"scenario {name!r}: fraction")
        if "fraction" in item
        else None,
        count=item.get("count"),
        classes=tuple(item.get("classes") or ()),
    )


def parse_methods(raw: Any) -> tuple[MethodEntry, ...]:
    """Methods as a mapping ``label: {overrides...}`` (``method:`` names the registered
    method when the label differs). Overrides are checked against the method's config."""
    from salun.methods import make_config

    if not isinstance(raw, Mapping) or not raw:
        raise SalunError("methods must be a non-empty mapping, e.g. methods: {salun: {epochs: 5}}")
    out = []
    for label, body in raw.items():
        label = _check_name(label, "method label")
        if body is not None and not isinstance(body, Mapping):
            raise SalunError(
                f"method {label!r}: its settings must be a mapping, e.g. {{epochs: 5}}; "
                f"got {body!r}"
            )
        if label in RESERVED_LABELS:
            raise SalunError(
                f"method label {label!r} is reserved: Retrain is always run as the reference "
                "with the original recipe; remove it from methods"
            )
        body = dict(body or {})
        method = body.pop("method", label)
        for k in ("seed",):
            if k in body:
                raise SalunError(f"method {label!r}: {k} comes from the benchmark's seeds")
        try:  # unknown method or bad setting: a clear SalunError now, naming the row
            cfg = make_config(method, body)
        except SalunError as e:
            raise SalunError(f"method {label!r}: {e}") from None
        _check_grid(label, method, body, cfg)
        out.append(MethodEntry(label, method, body))
    return tuple(out)


def _check_grid(label: str, method: str, body: Mapping, cfg: Any) -> None:
    """Every config the lr search will build must be valid now, not after Original and
    Retrain have trained."""
    from salun.methods import get_method, make_config

    fld = getattr(get_method(method).config, "grid_field", "lr")
    for value in getattr(cfg, "lr_grid", ()):
        try:
            make_config(method, {**body, fld: value})
        except SalunError as e:
            raise SalunError(f"method {label!r}: lr_grid value {value}: {e}") from None


def parse_original(raw: Any) -> TrainConfig:
    if not isinstance(raw, Mapping):
        raise SalunError("original must be a mapping of training settings, e.g. {epochs: 30}")
    check_keys(raw, {f.name for f in fields(TrainConfig)} - {"seed"}, "original")
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        return TrainConfig(**d)
    except (TypeError, SalunError) as e:
        raise SalunError(f"original: {e}") from None


def parse_config(raw: Any, source: str = "config") -> BenchConfig:
    """Build a :class:`BenchConfig` from a parsed YAML mapping; every key is checked."""
    if not isinstance(raw, Mapping):
        raise SalunError(f"{source}: the top level must be a mapping")
    check_keys(raw, _TOP_KEYS, source)
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise SalunError(f"{source}: missing key {missing[0]!r}")
    seeds = raw["seeds"]
    if isinstance(seeds, int):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise SalunError(f"{source}: seeds must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise SalunError(f"{source}: seeds must be distinct, got {seeds}")
    if not isinstance(raw["scenarios"], list | type(None)):
        raise SalunError(f"{source}: scenarios must be a list, got {raw['scenarios']!r}")
    scenarios = tuple(parse_scenario(s) for s in raw["scenarios"] or [])
    if not scenarios:
        raise SalunError(f"{source}: scenarios must not be empty")
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise SalunError(f"{source}: scenario names must be distinct, got {names}")
    val = _number(raw.get("val_fraction", 0.0), f"{source}: val_fraction")
    if not 0.0 <= val < 1.0:
        raise SalunError(f"{source}: val_fraction must lie in [0, 1), got {val}")
    text = {k: _text(raw, k, source) for k in ("name", "dataset", "arch", "description")}
    protocols, tune_seeds = parse_protocol(raw, seeds, source)
    plugins = parse_plugins(raw.get("plugins"), source)  # before methods: they name theirs
    mia = raw.get("mia_features", list(FEATURES))
    if isinstance(mia, str):
        mia = [mia]
    if not mia or any(f not in FEATURES for f in mia) or "confidence" not in mia:
        raise SalunError(
            f"{source}: mia_features must list features from {list(FEATURES)}, including "
            f"confidence (the reported MIA); got {mia!r}"
        )
    return BenchConfig(
        name=text["name"] or Path(source).stem,
        dataset=text["dataset"],
        arch=text["arch"],
        original=parse_original(raw["original"]),
        scenarios=scenarios,
        seeds=tuple(seeds),
        methods=parse_methods(raw["methods"]),
        width=_number(raw.get("width", 1.0), f"{source}: width"),
        data_root=_data_root(raw.get("data_root"), source),
        val_fraction=val,
        protocols=protocols,
        tune_seeds=tune_seeds,
        mia_features=tuple(mia),
        grid_extend=raw.get("grid_extend", 0),
        plugins=plugins,
        description=text["description"] or "",
        audit=(
            None
            if raw.get("audit") is None
            else parse_audit_column(raw["audit"], scenarios, source)
        ),
    )


def parse_plugins(value: Any, source: str) -> tuple[str, ...]:
    """``plugins: [my_pkg.my_methods, ...]``: each module is imported (and checked) now."""
    from salun.methods.plugins import load_plugins

    if value is None:
        return ()
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise SalunError(f"{source}: plugins must be a list of module names, got {value!r}")
    load_plugins(value)
    return tuple(value)


def _number(value: Any, what: str) -> float:
    """A YAML number as a float (``1`` and ``1.0`` hash alike); anything else is refused
    instead of converted (``float("abc")`` would be a traceback, ``float(True)`` 1.0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SalunError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an integer past float's range (YAML 10**400)
        raise SalunError(f"{what} must be a finite number, got {value}") from None


def _text(raw: Mapping, key: str, source: str) -> str | None:
    """An optional string key, refused when it is anything else (``name: [1, 2]``)."""
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise SalunError(f"{source}: {key} must be a string, got {value!r}")
    return value


def _data_root(value: Any, source: str) -> str | None:
    """A folder to read the dataset from: a file there (``/etc/passwd``) is a mistake."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SalunError(f"{source}: data_root must be a folder path, got {value!r}")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise SalunError(f"{source}: data_root {value} is not a folder")
    return value


def _int_list(v: Any, key: str, source: str) -> list[int]:
    v = [v] if isinstance(v, int) and not isinstance(v, bool) else v
    if (
        not isinstance(v, list | tuple)
        or not v
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in v)
    ):
        raise SalunError(f"{source}: {key} must be a non-empty list of integers, got {v!r}")
    if len(set(v)) != len(v):
        raise SalunError(f"{source}: {key} must be distinct, got {list(v)}")
    return list(v)


def parse_protocol(
    raw: Mapping, seeds: list[int], source: str
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``protocol`` (+ ``tune_seeds``), or the legacy ``tune_lr`` / ``tune_seed`` keys.

    Legacy mapping: ``tune_lr: true`` is the ``tuned`` protocol alone, searched on
    ``tune_seed`` (default: the first seed, which is then also reported); ``tune_lr:
    false`` (or no key) is ``paper``.
    """
    legacy = [k for k in ("tune_lr", "tune_seed") if k in raw]
    new = [k for k in ("protocol", "tune_seeds") if k in raw]
    if legacy and new:
        raise SalunError(
            f"{source}: {legacy[0]!r} is the legacy spelling of protocol/tune_seeds; use "
            f"protocol: [paper, tuned] and tune_seeds: [...] only (drop {legacy[0]!r})"
        )
    if legacy:
        tune_seed = raw.get("tune_seed")
        if tune_seed is not None and type(tune_seed) is not int:
            raise SalunError(f"{source}: tune_seed must be an integer, got {tune_seed!r}")
        if not raw.get("tune_lr", False):
            return ("paper",), ()
        return ("tuned",), (seeds[0] if tune_seed is None else tune_seed,)
    p = raw.get("protocol", "paper")
    p = [p] if isinstance(p, str) else p
    if not isinstance(p, list | tuple) or not p or any(x not in PROTOCOLS for x in p):
        raise SalunError(f"{source}: protocol must be paper, tuned or a list of both, got {p!r}")
    protocols = tuple(x for x in PROTOCOLS if x in p)  # paper first, each once
    if "tuned" not in protocols:
        if "tune_seeds" in raw:
            raise SalunError(f"{source}: tune_seeds needs protocol: tuned (or [paper, tuned])")
        return protocols, ()
    if "tune_seeds" not in raw:
        raise SalunError(
            f"{source}: protocol tuned needs tune_seeds: the seeds the search runs on, distinct "
            "from the reported seeds (e.g. tune_seeds: [100])"
        )
    tune = _int_list(raw["tune_seeds"], "tune_seeds", source)
    both = sorted(set(tune) & set(seeds))
    if both:
        raise SalunError(
            f"{source}: tune_seeds {tune} and seeds {seeds} share {both}: a tuning seed must "
            "not be reported (its runs would flatter the searched methods)"
        )
    return protocols, tuple(tune)


def load_config(path: str | Path) -> BenchConfig:
    """Read and check a benchmark YAML file."""
    raw = read_yaml(path, f"config file {path} does not exist")
    return parse_config(raw, str(path))


def config_from_dict(d: Mapping[str, Any]) -> BenchConfig:
    """Rebuild a :class:`BenchConfig` from ``dataclasses.asdict`` output (``bench.json``)."""
    d = dict(d)
    # the modules' names only: a report of a folder needs no plugin code
    d["plugins"] = tuple(d.get("plugins", ()))
    if "protocols" not in d:  # a bench.json of before the protocols: the legacy keys
        legacy = {k: d.pop(k) for k in ("tune_lr", "tune_seed") if k in d}
        d["protocols"], d["tune_seeds"] = parse_protocol(legacy, list(d["seeds"]), "bench.json")
    return BenchConfig(
        **{
            **d,
            "protocols": tuple(d["protocols"]),
            "tune_seeds": tuple(d["tune_seeds"]),
            "original": TrainConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in d["original"].items()}
            ),
            "scenarios": tuple(
                Scenario(**{**s, "classes": tuple(s["classes"])}) for s in d["scenarios"]
            ),
            "seeds": tuple(d["seeds"]),
            "mia_features": tuple(d.get("mia_features", FEATURES)),
            "methods": tuple(MethodEntry(**m) for m in d["methods"]),
            "audit": audit_column_from_dict(d.get("audit")),
        }
    )
