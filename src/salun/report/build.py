"""``salun report DIR``: ``report.md`` and ``report.html`` (+ ``plots/*.png``) from the records.

The HTML is self-contained apart from the PNGs, which it references by relative path, so
the folder can be moved or served as is.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from salun.bench.aggregate import (
    failures,
    lr_table,
    original_summary,
    per_seed,
    summarize,
)
from salun.bench.session import read_bench
from salun.bench.store import read_records
from salun.io import atomic_write_text
from salun.report import plots
from salun.report.tables import Table, fmt, fmt_lr, fmt_stat, table1, to_html, to_markdown

CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:right}"
    "th:first-child,td:first-child{text-align:left}"
    "code,pre{background:#f4f4f4}pre{padding:0.6em;overflow-x:auto}img{max-width:100%}"
)


def write_report(root: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``plots/`` into benchmark folder ``root``.

    Returns:
        ``{"md": path, "html": path}``.

    Example:
        >>> write_report("results/ci")
    """
    root = Path(root)
    bench = read_bench(root)
    records = read_records(root)
    blocks = _blocks(root, bench, records)
    md = "\n".join(_md(b) for b in blocks)
    body = "\n".join(_html(b) for b in blocks)
    title = html.escape(f"salun benchmark: {bench['config']['name']}")
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )
    atomic_write_text(root / "report.md", md)
    atomic_write_text(root / "report.html", page)
    return {"md": root / "report.md", "html": root / "report.html"}


# A report is a list of blocks, each rendered to Markdown and to HTML:
# ("h", level, text) | ("p", text) | ("pre", text) | ("table", Table) | ("img", path, alt)
Block = tuple


def _blocks(root: Path, bench: Mapping[str, Any], records: list[dict]) -> list[Block]:
    cfg = bench["config"]
    rows = summarize(records)
    out: list[Block] = [("h", 1, f"salun benchmark: {cfg['name']}")]
    if cfg.get("description"):
        out.append(("p", cfg["description"]))
    out += _setup_blocks(bench, records)
    for scenario, sc_rows in rows.items():
        out.append(("h", 2, f"Scenario {scenario}"))
        out.append(("p", _scenario_text(cfg, scenario, sc_rows)))
        out.append(("table", table1(sc_rows)))
        img = plots.metric_bars(sc_rows, f"{scenario}: mean ± std over seeds",
                                root / "plots" / f"metrics_{scenario}.png")  # fmt: skip
        out.append(("img", img.relative_to(root), f"metrics, {scenario}"))
        ua = per_seed(records).get(scenario)
        if ua:
            img = plots.ua_stability(ua, f"{scenario}: UA per seed",
                                     root / "plots" / f"ua_seeds_{scenario}.png")  # fmt: skip
            out.append(("img", img.relative_to(root), f"UA per seed, {scenario}"))
    if rows:
        out.append(("h", 2, "Avg. Gap vs run time"))
        img = plots.gap_vs_rte(rows, root / "plots" / "gap_vs_rte.png")
        out.append(("img", img.relative_to(root), "Avg. Gap vs RTE"))
    out += _mask_blocks(root)
    out += _lr_blocks(records)
    out += _failure_blocks(records)
    return out


def _setup_blocks(bench: Mapping[str, Any], records: list[dict]) -> list[Block]:
    cfg = bench["config"]
    sessions = bench["sessions"]
    last = sessions[-1]
    wall = sum(s.get("wall_s", 0.0) for s in sessions)
    devices = sorted({r["device"] for r in records if r.get("device")})
    commands = []
    for s in sessions:
        if s.get("command") and s["command"] not in commands:
            commands.append(s["command"])
    orig = original_summary(records)
    rec = cfg["original"]
    lines = [
        f"Dataset **{cfg['dataset']}**, architecture **{cfg['arch']}** (width {cfg['width']}), "
        f"seeds {cfg['seeds']}, scenarios {[s['name'] for s in cfg['scenarios']]}.",
        f"Original recipe: {rec['epochs']} epochs, SGD lr {rec['lr']} ({rec['schedule']}), "
        f"batch {rec['batch_size']}, momentum {rec['momentum']}, weight decay "
        f"{rec['weight_decay']}, augmentation {'on' if rec['augment'] else 'off'}; "
        "Retrain uses the same recipe on D_r.",
        f"Original model: train accuracy {fmt_stat(orig['train_acc'])} %, test accuracy "
        f"{fmt_stat(orig['test_acc'])} %, trained in {fmt(orig['seconds'].mean, 1)} s "
        f"(mean ± std over {orig['train_acc'].n} seeds).",
        f"Hardware: {', '.join(devices) or last.get('device_name')}; "
        f"{last.get('cpu_count')} CPU cores on {last.get('host')} ({last.get('platform')}); "
        f"executor {last.get('executor')}"
        + (f" (Ray {last['ray_version']}, {last.get('address')})" if "ray_version" in last else "")
        + ".",
        f"Wall time: {fmt(wall / 60, 1)} min over {len(sessions)} session(s) "
        f"({', '.join(s['status'] for s in sessions)}).",
        f"Table cells: mean±std over seeds (|gap| to Retrain's mean); Avg. Gap = mean of the "
        f"four gaps; RTE in seconds; config hash `{bench['config_hash']}`.",
    ]
    out: list[Block] = [("h", 2, "Setup")] + [("p", line) for line in lines]
    out.append(("p", "Command:"))
    out.append(("pre", "\n".join(commands) or "(run through the Python API)"))
    return out


def _scenario_text(cfg: Mapping[str, Any], scenario: str, rows) -> str:
    sc = next(s for s in cfg["scenarios"] if s["name"] == scenario)
    if sc["kind"] == "class":
        what = f"class-wise forgetting of classes {sc['classes']}"
    elif sc.get("fraction") is not None:
        what = f"random forgetting of {100 * sc['fraction']:g} % of the training set"
    else:
        what = f"random forgetting of {sc['count']} samples"
    ranked = sorted((r for r in rows if r.method != "retrain"), key=lambda r: r.avg_gap)
    best = (
        f" Smallest Avg. Gap: **{ranked[0].method}** ({fmt(ranked[0].avg_gap)})." if ranked else ""
    )
    return f"{what[0].upper()}{what[1:]}.{best}"


def _mask_blocks(root: Path) -> list[Block]:
    from salun.saliency import layer_density, load_mask

    files = sorted((root / "masks").glob("*.safetensors"))
    if not files:
        return []
    shares: dict[str, dict[str, list[float]]] = {}
    for f in files:
        mask, meta = load_mask(f)
        sc = str(meta.get("scenario", f.name.split(".")[0]))
        for layer, v in layer_density(mask).items():
            shares.setdefault(sc, {}).setdefault(layer, []).append(v)
    mean = {sc: {k: sum(v) / len(v) for k, v in d.items()} for sc, d in shares.items()}
    img = plots.mask_layers(mean, root / "plots" / "mask_layers.png")
    return [
        ("h", 2, "SalUn's saliency mask"),
        (
            "p",
            f"Share of salient weights per parameter tensor, averaged over {len(files)} "
            "mask(s) (the mask keeps the globally largest |gradient| entries).",
        ),  # fmt: skip
        ("img", img.relative_to(root), "layer-wise share of salient weights"),
    ]


def _lr_blocks(records: list[dict]) -> list[Block]:
    rows = lr_table(records)
    if not rows:
        return []
    header = ["Scenario", "Method", "used", "chosen by", "search: Avg. Gap per value"]
    body = [
        [
            r["scenario"],
            r["method"],
            f"{r['field']} = {fmt_lr(r['value'])}",
            f"search on seed {r['search_seed']}" if r["source"] == "searched" else "config",
            ", ".join(f"{k}: {_gap_cell(r['avg_gap_by_value'], k)}" for k in r["avg_gap_by_value"])
            or "—",
        ]
        for r in rows
    ]
    text = (
        "The learning rate of each method (IU: its step alpha); where searched, the value "
        "with the smallest Avg. Gap to Retrain on the search seed (— : the run failed)."
    )
    return [("h", 2, "Learning rates"), ("p", text), ("table", (header, body))]


def _gap_cell(by_lr: Mapping[str, float | None], k: str) -> str:
    v = by_lr.get(k)
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt(v)


def _failure_blocks(records: list[dict]) -> list[Block]:
    bad = failures(records)
    if not bad:
        return []
    table: Table = (["Run", "Error"], [[r["key"], str(r.get("error"))] for r in bad])
    return [("h", 2, "Failed runs"), ("table", table)]


def _md(b: Block) -> str:
    kind = b[0]
    if kind == "h":
        return f"{'#' * b[1]} {b[2]}\n"
    if kind == "p":
        return f"{b[1]}\n"
    if kind == "pre":
        return f"```\n{b[1]}\n```\n"
    if kind == "table":
        return to_markdown(b[1])
    return f"![{b[2]}]({Path(b[1]).as_posix()})\n"


def _inline_md(text: str) -> str:
    # the only inline Markdown the report uses: **bold** and `code`
    out, parts = html.escape(text), []
    for i, chunk in enumerate(out.split("**")):
        parts.append(f"<b>{chunk}</b>" if i % 2 else chunk)
    out = "".join(parts)
    parts = []
    for i, chunk in enumerate(out.split("`")):
        parts.append(f"<code>{chunk}</code>" if i % 2 else chunk)
    return "".join(parts)


def _html(b: Block) -> str:
    kind = b[0]
    if kind == "h":
        return f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>"
    if kind == "p":
        return f"<p>{_inline_md(b[1])}</p>"
    if kind == "pre":
        return f"<pre>{html.escape(b[1])}</pre>"
    if kind == "table":
        return to_html(b[1])
    return f"<p><img src='{html.escape(Path(b[1]).as_posix())}' alt='{html.escape(b[2])}'></p>"
