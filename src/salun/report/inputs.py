"""What ``salun report`` reads, checked before anything is drawn or written.

A benchmark folder may be hand-edited, copied in part or damaged. The report reads it in
two passes: first every value it will use is checked here, then the tables are built from
values known to be sound, so no input can end the report in a traceback or leave it
half-written. Two readings (docs/benchmarks.md, "A damaged folder"):

- **A damaged file is an error** (exit 2, one line naming the file and the key): a
  ``bench.json`` or a record that is not a JSON object, a missing or ill-typed field the
  report places the record by (``key``, ``kind``, ``seed``, ``status``, ``method``,
  ``scenario``, ``metrics``), a metric that is not a number (``"high"``). salun never
  writes these, so guessing what was meant would be wrong.
- **A run without a finite result is a failed run**: a successful record whose UA, RA,
  TA or MIA (an original's train/test accuracy) is missing, ``NaN`` or ``inf``, or whose
  run time or Avg. Gap is not finite, is shown under *Failed runs* with that reason and
  marked in every table, exactly like a run that diverged; it is never ranked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from salun.errors import SalunError
from salun.metrics import GAP_METRICS

KINDS = ("original", "retrain", "unlearn", "audit")
_FIX = "fix or delete it, then rerun salun report"
# the metrics a report reads from a successful record of each kind
NEEDS = {"original": ("train_acc", "test_acc"), "retrain": GAP_METRICS, "unlearn": GAP_METRICS}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _show(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, float) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- bench.json


def read_bench_json(root: Path) -> dict[str, Any]:
    """``bench.json`` of ``root`` with every field the report reads checked (SalunError
    naming the key otherwise); a session still running with nobody holding the folder's
    lock is shown as died (see bench.session.read_bench_live)."""
    from salun.bench.session import BENCH_FILE, BENCH_FORMAT, read_bench_live

    f = root / BENCH_FILE
    if f.is_file():
        try:
            raw = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SalunError(f"{f} is corrupted: {e}") from None
        except RecursionError:
            raise SalunError(f"{f} is corrupted: nested too deeply") from None
        if not isinstance(raw, dict):
            raise SalunError(
                f"{f} is not a benchmark file: it holds a JSON {type(raw).__name__}, not an "
                "object; restore it from the benchmark's run (or rerun salun bench)"
            )
        if raw.get("format") == BENCH_FORMAT:
            check_bench(raw, f)  # before read_bench_live looks into its sessions
    data = read_bench_live(root)  # missing / wrong format: its own clear error
    check_bench(data, f)
    return data


def check_bench(data: Mapping[str, Any], f: Path) -> None:
    """Raise SalunError naming the first field of ``bench.json`` the report cannot use."""

    def bad(key: str, want: str, value: Any = None) -> SalunError:
        got = "missing" if value is _MISSING else f"{_show(value)}"
        return SalunError(f"{f}: {key} is {got}, expected {want}; {_FIX}")

    def get(d: Mapping, k: str, path: str, want: str, ok, optional: bool = False) -> Any:
        if k not in d:
            if optional:
                return None
            raise bad(path, want, _MISSING)
        if not ok(d[k]):
            raise bad(path, want, d[k])
        return d[k]

    is_str = lambda v: isinstance(v, str)  # noqa: E731
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    ints = lambda v: isinstance(v, list) and all(is_int(x) for x in v)  # noqa: E731
    opt_num = lambda v: v is None or _number(v)  # noqa: E731
    cfg = get(data, "config", "config", "an object", lambda v: isinstance(v, dict))
    get(data, "config_hash", "config_hash", "a text", is_str)
    for k in ("name", "dataset", "arch"):
        get(cfg, k, f"config.{k}", "a text", is_str)
    get(cfg, "width", "config.width", "a number", _number)
    get(cfg, "seeds", "config.seeds", "a list of whole numbers", ints)
    get(cfg, "description", "config.description", "a text", lambda v: v is None or is_str(v),
        optional=True)  # fmt: skip
    orig = get(cfg, "original", "config.original", "an object", lambda v: isinstance(v, dict))
    for k in ("epochs", "lr", "batch_size", "momentum", "weight_decay"):
        get(orig, k, f"config.original.{k}", "a number", _number)
    get(orig, "schedule", "config.original.schedule", "a text", is_str)
    get(orig, "augment", "config.original.augment", "true or false", lambda v: v in (True, False))
    scs = get(cfg, "scenarios", "config.scenarios", "a list", lambda v: isinstance(v, list))
    for i, sc in enumerate(scs):
        at = f"config.scenarios[{i}]"
        if not isinstance(sc, dict):
            raise bad(at, "an object", sc)
        get(sc, "name", f"{at}.name", "a text", is_str)
        kind = get(
            sc, "kind", f"{at}.kind", "'class' or 'random'", lambda v: v in ("class", "random")
        )
        if kind == "class":
            get(sc, "classes", f"{at}.classes", "a list of whole numbers", ints)
        else:
            get(sc, "fraction", f"{at}.fraction", "a number or null", opt_num, optional=True)
            get(sc, "count", f"{at}.count", "a whole number or null",
                lambda v: v is None or is_int(v), optional=True)  # fmt: skip
            if sc.get("fraction") is None and sc.get("count") is None:
                raise bad(f"{at}.fraction", "a number (or count: a whole number)", _MISSING)
    methods = get(cfg, "methods", "config.methods", "a list", lambda v: isinstance(v, list | dict))
    for i, m in enumerate(methods if isinstance(methods, list) else []):
        if isinstance(m, dict):
            get(m, "label", f"config.methods[{i}].label", "a text", is_str)
    if "protocols" in cfg:
        get(cfg, "protocols", "config.protocols", "a list of texts",
            lambda v: isinstance(v, list) and all(is_str(x) for x in v))  # fmt: skip
        get(cfg, "tune_seeds", "config.tune_seeds", "a list of whole numbers",
            lambda v: v is None or ints(v), optional=True)  # fmt: skip
    else:  # a bench.json of before the protocols
        get(cfg, "tune_seed", "config.tune_seed", "a whole number or null",
            lambda v: v is None or is_int(v), optional=True)  # fmt: skip
    sessions = get(data, "sessions", "sessions", "a non-empty list",
                   lambda v: isinstance(v, list) and len(v) > 0)  # fmt: skip
    for i, s in enumerate(sessions):
        if not isinstance(s, dict):
            raise bad(f"sessions[{i}]", "an object", s)
        get(s, "status", f"sessions[{i}].status", "a text", is_str)
        get(s, "wall_s", f"sessions[{i}].wall_s", "a finite number",
            lambda v: v is None or (_number(v) and math.isfinite(v)), optional=True)  # fmt: skip
        get(s, "command", f"sessions[{i}].command", "a text",
            lambda v: v is None or is_str(v), optional=True)  # fmt: skip
    # what the rest of salun rebuilds from it (e.g. the protocols of an older bench.json)
    from salun.bench.config import config_from_dict

    try:
        config_from_dict(cfg)
    except SalunError as e:
        raise SalunError(f"{f}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise SalunError(f"{f}: its config does not describe a benchmark ({e!r}); {_FIX}") from None


_MISSING = object()


# ---------------------------------------------------------------- records


def read_checked_records(root: Path) -> list[dict]:
    """The folder's records, each checked (see the module docstring): the per-run files in
    ``runs/``, or, for a committed copy without ``runs/``, ``results.jsonl``."""
    from salun.bench.store import read_records

    jsonl = root / "results.jsonl"
    if not (root / "runs").is_dir() and jsonl.is_file():
        pairs = []
        try:
            lines = jsonl.read_text().splitlines()
        except UnicodeDecodeError as e:
            raise SalunError(f"{jsonl} is corrupted: {e}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{jsonl} line {n}"
            try:
                pairs.append((where, json.loads(line)))
            except json.JSONDecodeError as e:
                raise SalunError(f"{where} is corrupted: {e}") from None
            except RecursionError:
                raise SalunError(f"{where} is corrupted: nested too deeply") from None
    else:
        recs = read_records(root)  # each file: a JSON object of salun's format (or an error)
        pairs = [(str(root / "runs" / f"{r.get('key')}.json"), r) for r in recs]
    return [check_record(r, where) for where, r in pairs]


def check_record(rec: Any, where: str) -> dict:
    """``rec`` if sound; a copy marked ``failed`` (with the reason) when a successful run
    holds no finite result; SalunError naming ``where`` and the key when it is damaged."""
    if not isinstance(rec, dict):
        raise SalunError(
            f"{where} is not a benchmark record: it holds a JSON {type(rec).__name__}, not an "
            f"object; {_FIX}"
        )

    def bad(key: str, want: str) -> SalunError:
        got = "missing" if key not in rec else _show(rec[key])
        return SalunError(f"{where}: {key} is {got}, expected {want}; {_FIX}")

    def need(key: str, ok, want: str, optional: bool = False) -> None:
        if key not in rec:
            if optional:
                return
            raise bad(key, want)
        if not ok(rec[key]):
            raise bad(key, want)

    is_str = lambda v: isinstance(v, str)  # noqa: E731
    opt_str = lambda v: v is None or isinstance(v, str)  # noqa: E731
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    opt_dict = lambda v: v is None or isinstance(v, dict)  # noqa: E731
    need("key", is_str, "a text")
    need("kind", lambda v: v in KINDS, " or ".join(KINDS))
    need("status", is_str, "a text ('ok' or 'failed')")
    need("seed", is_int, "a whole number")
    need("method", is_str, "a text")
    need("metrics", lambda v: isinstance(v, dict), "an object")
    kind = rec["kind"]
    need("scenario", is_str if kind in ("retrain", "unlearn") else opt_str, "a text",
         optional=kind not in ("retrain", "unlearn"))  # fmt: skip
    need("phase", opt_str, "a text", optional=True)
    need("protocol", opt_str, "a text", optional=True)
    need("order", is_int, "a whole number", optional=True)
    need("device", opt_str, "a text", optional=True)
    for k in ("hparam", "lr_choice", "switches", "original_metrics"):
        need(k, opt_dict, "an object", optional=True)
    for k in ("rte_s", "avg_gap"):
        need(k, lambda v: v is None or _number(v), "a number", optional=True)
    metrics = rec["metrics"]
    reasons = []
    for m in NEEDS.get(kind, ()):
        if m not in metrics:
            reasons.append(f"metrics.{m} is missing")
        elif not _number(metrics[m]):
            raise SalunError(
                f"{where}: metrics.{m} is {_show(metrics[m])}, expected a number; {_FIX}"
            )
        elif not math.isfinite(metrics[m]):
            reasons.append(f"metrics.{m} is {metrics[m]!r}")
    for k in ("rte_s", "avg_gap"):
        v = rec.get(k)
        if v is not None and not math.isfinite(v):
            reasons.append(f"{k} is {v!r}")
    om = rec.get("original_metrics")
    if om is not None:
        for m in GAP_METRICS:
            if m in om and not _number(om[m]):
                raise SalunError(
                    f"{where}: original_metrics.{m} is {_show(om[m])}, expected a number; {_FIX}"
                )
    if rec["status"] == "ok" and reasons:
        return {
            **rec,
            "status": "failed",
            "error": f"no finite result in the record: {', '.join(reasons)}",
        }
    return rec
