"""``salun report DIR``: ``report.md`` and ``report.html`` (+ ``plots/*.png``) from the records.

The HTML is self-contained apart from the PNGs, which it references by relative path, so
the folder can be moved or served as is.
"""

from __future__ import annotations

import html
import math
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from salun.bench.aggregate import (
    failures,
    lr_table,
    n_seeds,
    original_summary,
    per_seed,
    protocols_of,
    rte_ratios,
    seed_ranks,
    summarize,
)
from salun.bench.config import parse_protocol
from salun.errors import SalunError
from salun.io import Claim, atomic_write_text, claim, read_ends
from salun.outputs import is_salun_png
from salun.report import plots
from salun.report.audit_section import audit_blocks
from salun.report.explain import (
    doc_link,
    failure_count,
    first_reason,
    metric_blocks,
    missing_methods,
    missing_text,
    verdict,
)
from salun.report.inputs import read_bench_json, read_checked_records
from salun.report.tables import (
    EDGE_NOTE,
    ORIGINAL_LABEL,
    Table,
    fmt,
    fmt_ci,
    fmt_lr,
    fmt_stat,
    interval_table,
    original_row,
    rank_table,
    table1,
    to_html,
    to_markdown,
)

# Figures are shown at their natural size (drawn for this page width); wide tables and
# figures scroll sideways instead of shrinking until their ticks are unreadable.
CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1140px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:right}"
    "th:first-child,td:first-child{text-align:left}"
    "code,pre{background:#f4f4f4}pre{padding:0.6em;overflow-x:auto}"
    ".fig,.tbl{overflow-x:auto}img{max-width:none;height:auto}"
)


def write_report(root: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``plots/`` into benchmark folder ``root``.

    A report salun wrote (it ends with :data:`REPORT_MARK`) is replaced without asking, so
    every benchmark can rewrite its report; a ``report.md``/``report.html`` or a PNG in
    ``plots/`` that salun did not write is replaced only with ``overwrite`` (see
    docs/safety.md), and otherwise nothing is written.

    Returns:
        ``{"md": path, "html": path}``.

    Example:
        >>> write_report("results/ci")
    """
    root = Path(root)
    # every input is checked before anything is drawn or written (report/inputs.py): a
    # damaged file is one error naming it, a run without a finite result a failed run
    bench = read_bench_json(root)  # a session that died shows as died
    name = str(bench["config"]["name"])
    own_plots = _check_report_outputs(root, name, overwrite)  # before anything is written
    records = load_records(root)
    blocks = _blocks(root, bench, records)
    md = "\n".join(_md(b) for b in blocks)
    body = "\n".join(_html(b) for b in blocks)
    title = html.escape(f"salun benchmark: {bench['config']['name']}")
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )
    for file, text in (("report.md", md), ("report.html", page)):
        path = root / file
        # checked again, atomically, when the file is published (salun.io.publish)
        claim(path, Claim(lambda q: _replaceable_report(q, name, overwrite), _REFUSAL))
        atomic_write_text(path, text.rstrip("\n") + f"\n\n{REPORT_MARK}\n")
    _remove_stale_plots(root, blocks, own_plots)
    return {"md": root / "report.md", "html": root / "report.html"}


# The last line of every report.md / report.html salun writes: what it may replace.
REPORT_MARK = "<!-- written by salun report: rerunning salun report replaces this file -->"
_REFUSAL = "move it away, or pass --overwrite to salun report"


def _kind_of(p: Path) -> str | None:
    try:
        mode = p.lstat().st_mode
    except OSError:
        return None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def _is_our_report(p: Path, name: str) -> bool:
    """A regular file ending with :data:`REPORT_MARK`, or a report of older versions (they
    wrote no mark): the heading or title ``salun benchmark: NAME`` of this very folder."""
    ends = read_ends(p) if _kind_of(p) == "file" else None
    if ends is None:
        return False
    head, tail = ends
    if tail.rstrip().endswith(REPORT_MARK):
        return True
    title = f"salun benchmark: {name}"
    return head.startswith(f"# {title}\n") or f"<title>{html.escape(title)}</title>" in head


def _replaceable_report(p: Path, name: str, overwrite: bool) -> bool:
    return _kind_of(p) == "file" and (overwrite or _is_our_report(p, name))


def check_report_outputs(root: Path, name: str, *, refusal: str) -> None:
    """Refuse, before a benchmark ``name`` starts in ``root``, a ``report.md``,
    ``report.html`` or ``plots/*.png`` that salun did not write there: the report at the
    benchmark's end would refuse it after all the training (``refusal``: what to do)."""
    if root.is_dir():
        _check_report_outputs(root, name, False, refusal)


def _check_report_outputs(
    root: Path, name: str, overwrite: bool, refusal: str = _REFUSAL
) -> set[Path]:
    """Refuse (nothing written) when report.md, report.html or a PNG in plots/ is not
    salun's and ``overwrite`` is off; returns the PNGs that are salun's (tagged, or shown
    by a report of ours), the only ones stale-plot removal may delete."""
    for file in ("report.md", "report.html"):
        p = root / file
        kind = _kind_of(p)
        if kind is None:
            continue
        if kind != "file":
            raise SalunError(f"refusing to write {p}: it is not a regular file; move it away")
        if not overwrite and not _is_our_report(p, name):
            raise SalunError(
                f"refusing to replace {p}: salun did not write it (it lacks salun's last "
                f"line); {refusal}"
            )
    shown = ""
    if _is_our_report(root / "report.md", name):
        shown = (root / "report.md").read_text(errors="replace")
    own: set[Path] = set()
    for f in sorted((root / "plots").glob("*.png")):
        if _kind_of(f) == "file" and (is_salun_png(f) or f"plots/{f.name}" in shown):
            own.add(f.resolve())
        elif not overwrite:
            raise SalunError(
                f"refusing to write the report's plots: {f} was not written by salun; {refusal}"
            )
    return own


def load_records(root: Path) -> list[dict]:
    """The records of a benchmark folder, checked (see :mod:`salun.report.inputs`): the
    per-run files, or, for a committed copy that keeps only ``results.jsonl`` (runs/ and
    models/ left out of the repository), that file."""
    return read_checked_records(root)


def _remove_stale_plots(root: Path, blocks: list, own: set[Path]) -> None:
    """Delete salun's PNGs in ``plots/`` that this report no longer shows (an older
    layout's); a PNG salun did not write stays."""
    shown = {(root / b[1]).resolve() for b in blocks if b[0] == "img"}
    for f in (root / "plots").glob("*.png"):
        if f.resolve() not in shown and (f.resolve() in own or is_salun_png(f)):
            f.unlink(missing_ok=True)


# A report is a list of blocks, each rendered to Markdown and to HTML:
# ("h", level, text) | ("p", text) | ("pre", text) | ("table", Table) | ("img", path, alt)
Block = tuple


def protocol_info(cfg: Mapping[str, Any]) -> tuple[list[str], list[int]]:
    """The protocols and tuning seeds of a ``bench.json`` config, old ones included
    (``tune_lr`` / ``tune_seed``: the tuned protocol, searched on one seed)."""
    if "protocols" in cfg:
        return list(cfg["protocols"]), list(cfg.get("tune_seeds") or [])
    legacy = {k: cfg[k] for k in ("tune_lr", "tune_seed") if k in cfg}
    protocols, tune = parse_protocol(legacy, list(cfg["seeds"]), "bench.json")
    return list(protocols), list(tune)


def _blocks(root: Path, bench: Mapping[str, Any], records: list[dict]) -> list[Block]:
    cfg = bench["config"]
    protocols = protocols_of(records)
    tables = {p: summarize(records, protocol=p) for p in protocols}
    out: list[Block] = [("h", 1, f"salun benchmark: {cfg['name']}")]
    if cfg.get("description"):
        out.append(("p", cfg["description"]))
    out += _setup_blocks(bench, records)
    scenarios = list(dict.fromkeys(sc for t in tables.values() for sc in t))
    missing = {
        (sc, p): missing_methods(cfg, records, tables[p][sc], sc, p)
        for p in protocols
        for sc in scenarios
        if tables[p].get(sc)
    }
    out += _says_blocks(tables, missing)
    out += metric_blocks(root)
    out += _reading_blocks(root, cfg, tables, records)
    plots_dir = root / "plots"
    for scenario in scenarios:
        out.append(("h", 2, f"Scenario {scenario}"))
        out.append(("p", _scenario_what(cfg, scenario)))
        for p in protocols:
            rows = tables[p].get(scenario)
            if not rows:
                continue
            n = n_seeds(rows)
            gone = missing[(scenario, p)]
            out.append(("h", 3, f"{scenario} — protocol {p}"))
            out.append(("p", _protocol_text(cfg, p)))
            out.append(("p", _ranking_text(rows)))
            start = original_row(records, rows)
            out.append(("table", table1(rows, missing=gone, start=start)))
            if gone:
                out.append(("p", missing_text(gone)))
            if n >= 2:
                out.append(("p", "95 % confidence intervals (Student t over seeds):"))
                out.append(("table", interval_table(rows)))
            img = plots.metric_panels(rows, plots.metric_title(scenario, p, n),
                                      plots_dir / f"metrics_{scenario}_{p}.png",
                                      missing=gone)  # fmt: skip
            out.append(("img", img.relative_to(root), f"metrics, {scenario}, {p}"))
            ua = per_seed(records, protocol=p).get(scenario)
            if ua and n >= 2:  # with one seed this would repeat the UA panel
                img = plots.ua_stability(ua, f"{scenario}, protocol {p}: UA per seed",
                                         plots_dir / f"ua_seeds_{scenario}_{p}.png")  # fmt: skip
                out.append(("img", img.relative_to(root), f"UA per seed, {scenario}, {p}"))
    out += _rank_blocks(root, tables)
    if any(tables.values()):
        out.append(("h", 2, "Avg. Gap vs run time"))
        for p, by_sc in tables.items():
            if by_sc:
                title = f"Avg. Gap vs run time, protocol {p} (lower left is better)"
                gone = {sc: missing.get((sc, p), {}) for sc in by_sc}
                img = plots.gap_vs_rte(by_sc, plots_dir / f"gap_vs_rte_{p}.png", title,
                                       missing=gone)  # fmt: skip
                out.append(("img", img.relative_to(root), f"Avg. Gap vs RTE, {p}"))
    out += audit_blocks(root, cfg)
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
    orig = original_summary(records, cfg["seeds"])
    rec = cfg["original"]
    protocols, tune = protocol_info(cfg)
    lines = [
        f"Dataset **{cfg['dataset']}**, architecture **{cfg['arch']}** (width {cfg['width']}), "
        f"reported seeds {cfg['seeds']}, scenarios {[s['name'] for s in cfg['scenarios']]}, "
        f"protocols {', '.join(protocols)}"
        + (f" (tuning seeds {tune})" if "tuned" in protocols else "")
        + ".",
        f"Original recipe: {rec['epochs']} epochs, SGD lr {rec['lr']} ({rec['schedule']}), "
        f"batch {rec['batch_size']}, momentum {rec['momentum']}, weight decay "
        f"{rec['weight_decay']}, augmentation {'on' if rec['augment'] else 'off'}; "
        "Retrain uses the same recipe on D_r.",
        f"Original model: train accuracy {fmt_stat(orig['train_acc'])} %, test accuracy "
        f"{fmt_stat(orig['test_acc'])} %, trained in {fmt(orig['seconds'].mean, 1)} s "
        f"(mean ± std over {orig['train_acc'].n} reported seed(s)).",
        f"Hardware: {', '.join(devices) or last.get('device_name')}; "
        f"{last.get('cpu_count')} CPU cores on {last.get('host')} ({last.get('platform')}); "
        f"executor {last.get('executor')}"
        + (f" (Ray {last['ray_version']}, {last.get('address')})" if "ray_version" in last else "")
        + ".",
        f"Wall time: {fmt(wall / 60, 1)} min over {len(sessions)} session(s) "
        f"({', '.join(s['status'] for s in sessions)}).",
        f"Config hash `{bench['config_hash']}`.",
        failure_count(records),
    ]
    out: list[Block] = [("h", 2, "Setup")] + [("p", line) for line in lines]
    out.append(("p", "Command:"))
    out.append(("pre", "\n".join(commands) or "(run through the Python API)"))
    return out


def _says_blocks(tables: Mapping[str, Mapping], missing: Mapping) -> list[Block]:
    """ "What this run says": one generated sentence or two per table (see explain.verdict)."""
    lines = [
        f"**{sc}, protocol {p}**: {verdict(rows, missing.get((sc, p), {}))}"
        for p, by_sc in tables.items()
        for sc, rows in by_sc.items()
    ]
    if not lines:
        return []
    return [("h", 2, "What this run says")] + [("p", line) for line in lines]


def _reading_blocks(
    root: Path, cfg: Mapping[str, Any], tables: Mapping[str, Mapping], records: list[dict]
) -> list[Block]:
    n = max((n_seeds(rows) for t in tables.values() for rows in t.values()), default=0)
    text = (
        "Table cells: mean±std over seeds (|gap| of the mean to Retrain's mean). **Avg. Gap** "
        "is the mean of the four gaps of the means (the paper's Table 1). **Avg. Gap per "
        "seed** is each seed's Avg. Gap to that seed's Retrain, averaged, with its 95 % "
        'Student-t interval; methods are ranked by it. **vs best**: "tied" = not '
        "distinguishable from the best at 95 % (paired over seeds: the t-interval of the "
        "per-seed differences contains 0). RTE in seconds. How to read this: "
        f"{doc_link(root, 'benchmarks.md')}."
    )
    refs = [r for r in records if r["kind"] == "retrain" and r["status"] == "ok"]
    if refs and all(isinstance(r.get("original_metrics"), dict) for r in refs):
        text += (
            f" **{ORIGINAL_LABEL}**: the model before unlearning, evaluated on the same split "
            "the same way (recorded with Retrain): the starting point every method moves "
            "from, with its distance to Retrain; it is not ranked. A method whose cells "
            "equal it has not changed the model."
        )
    elif refs:
        text += (
            " These records do not hold the original model's UA/RA/TA/MIA on each split "
            "(salun bench records them with Retrain since this report's Original row was "
            "added), so the tables have no Original row."
        )
    out: list[Block] = [("h", 2, "How to read the tables"), ("p", text)]
    if n < 2:
        out.append(
            (
                "p",
                "**One seed: the rankings in this report are not significant.** A single "
                "trial gives no interval and cannot separate methods whose Avg. Gaps differ "
                "by less than the trial-to-trial spread (reruns with another seed can name "
                "another winner); no ties are marked and the plots show no error bars. The "
                "tables leave out the columns that need two seeds or more (Avg. Gap per "
                "seed, which equals the Avg. Gap here, vs best, and n).",
            )
        )
    return out


def _scenario_what(cfg: Mapping[str, Any], scenario: str) -> str:
    sc = next(s for s in cfg["scenarios"] if s["name"] == scenario)
    if sc["kind"] == "class":
        what = f"class-wise forgetting of classes {sc['classes']}"
    elif sc.get("fraction") is not None:
        what = f"random forgetting of {100 * sc['fraction']:g} % of the training set"
    else:
        what = f"random forgetting of {sc['count']} samples"
    return f"{what[0].upper()}{what[1:]}."


def _protocol_text(cfg: Mapping[str, Any], protocol: str) -> str:
    if protocol == "paper":
        return (
            "Protocol **paper**: each method at its configured value (lr; IU: alpha), the "
            "reference's published hyper-parameter where the preset gives one; no search."
        )
    _, tune = protocol_info(cfg)
    reported = sorted(set(tune) & set(cfg["seeds"]))
    text = (
        f"Protocol **tuned**: each method's grid searched on tuning seed(s) {tune} for the "
        "smallest mean Avg. Gap to Retrain; the chosen value is run on the reported seeds "
        f"{cfg['seeds']}."
    )
    if reported:
        text += (
            f" **The tuning seed {reported} is also a reported seed** (a benchmark of before "
            "held-out tuning seeds): its rows are the search's own runs, which flatters every "
            "searched method."
        )
    else:
        text += " The tuning seeds are not reported."
    return text


def _ranking_text(rows) -> str:
    methods = [r for r in rows if r.method != "retrain" and r.rank is not None]
    if not methods:
        return "No successful method runs."
    best = min(methods, key=lambda r: r.rank)
    n = n_seeds(rows)
    g = best.avg_gap_trials
    if len(methods) == 1:  # nothing to rank (e.g. an ablation run of one variant)
        text = f"One method: **{best.method}**, mean per-seed Avg. Gap {fmt(g.mean)}"
        text += f" (95 % CI {fmt_ci(g)}, {n} seeds)." if n >= 2 else ", one seed."
    elif n < 2:
        text = (
            f"Smallest Avg. Gap: **{best.method}** ({fmt(g.mean)}), on one seed: **this "
            "ranking is not significant**."
        )
    else:
        tied = [r.method for r in methods if r.tie == "tied"]
        text = (
            f"Smallest mean per-seed Avg. Gap: **{best.method}** ({fmt(g.mean)}, 95 % CI "
            f"{fmt_ci(g)}, {n} seeds)"
            + (
                f"; not distinguishable from it at 95 % (paired over seeds): {', '.join(tied)}."
                if tied
                else "; every other method is distinguishably worse (paired, 95 %)."
            )
        )
    ref = next((r for r in rows if r.method == "retrain"), None)
    ratios = rte_ratios(rows)
    if any(label == "salun" for label, _ in ratios):  # variants (ablations): SalUn itself only
        ratios = [(label, v) for label, v in ratios if label == "salun"]
    for label, ratio in ratios:
        mine = next(r for r in rows if r.method == label)
        text += (
            f" RTE of {label} ÷ Retrain's RTE: **{ratio:.3f}** ({fmt(mine.rte.mean)} s ÷ "
            f"{fmt(ref.rte.mean)} s)."
        )
    edges = [r.method for r in methods if r.at_edge]
    if edges:
        text += (
            f" The search chose a value at its grid's edge for {', '.join(edges)}: the best "
            "value may lie beyond the grid."
        )
    return text


def _rank_blocks(root: Path, tables: Mapping[str, Mapping]) -> list[Block]:
    out: list[Block] = []
    for p, by_sc in tables.items():
        ranks = {sc: seed_ranks(rows) for sc, rows in by_sc.items() if n_seeds(rows) >= 2}
        if not ranks:
            continue
        if not out:
            out.append(("h", 2, "Rank stability across seeds"))
            out.append(
                (
                    "p",
                    "Each method's rank by that seed's Avg. Gap (1 = best). Flat lines: a "
                    "ranking that holds from seed to seed; crossing lines: an order set by noise.",
                )
            )
        title = f"Rank per seed, protocol {p}"
        img = plots.rank_stability(ranks, root / "plots" / f"rank_seeds_{p}.png", title)
        out.append(("img", img.relative_to(root), f"rank per seed, {p}"))
        for sc, r in ranks.items():
            out.append(("p", f"Ranks per seed, {sc}, protocol {p}:"))
            out.append(("table", rank_table(r)))
    return out


def _mask_blocks(root: Path) -> list[Block]:
    from salun.saliency import layer_density, load_mask

    files = sorted((root / "masks").glob("*.safetensors"))
    kept = root / "plots" / "mask_layers.png"
    if not files and kept.is_file():  # a committed copy keeps the plot, not the masks
        return [
            ("h", 2, "SalUn's saliency mask"),
            ("p", "Share of salient weights per parameter tensor (plotted from the run's "
                  "masks, which this folder does not keep)."),
            ("img", kept.relative_to(root), "layer-wise share of salient weights"),
        ]  # fmt: skip
    if not files:
        return []
    shares: dict[str, dict[str, list[float]]] = {}
    keeps: set[float] = set()
    for f in files:
        mask, meta = load_mask(f)
        keeps.add(float(meta.get("keep", 0.5)))
        sc = str(meta.get("scenario", f.name.split(".")[0]))
        for layer, v in layer_density(mask).items():
            shares.setdefault(sc, {}).setdefault(layer, []).append(v)
    mean = {sc: {k: sum(v) / len(v) for k, v in d.items()} for sc, d in shares.items()}
    keep = keeps.pop() if len(keeps) == 1 else None  # one overall share to draw, or none
    img = plots.mask_layers(mean, root / "plots" / "mask_layers.png", keep=keep)
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
    header = ["Protocol", "Scenario", "Method", "used", "chosen by", "edge",
              "search: mean Avg. Gap per value"]  # fmt: skip
    body = [
        [
            r["protocol"],
            r["scenario"],
            r["method"],
            f"{r['field']} = {fmt_lr(r['value'])}",
            _chosen_by(r),
            EDGE_NOTE.get(r["at_edge"], "") if r["source"] == "searched" else "",
            ", ".join(f"{k}: {_gap_cell(r['avg_gap_by_value'], k)}" for k in r["avg_gap_by_value"])
            or "—",
        ]
        for r in rows
    ]
    text = (
        "The learning rate of each method (IU: its step alpha); where searched (protocol "
        "tuned), the value with the smallest mean Avg. Gap to Retrain over the tuning seeds "
        "(— : the run failed). A choice at the grid's edge may mean the best value lies beyond it."
    )
    return [("h", 2, "Learning rates"), ("p", text), ("table", (header, body))]


def _chosen_by(r: Mapping[str, Any]) -> str:
    if r["source"] != "searched":
        return "config"
    seeds = r.get("tune_seeds") or [r.get("search_seed")]
    return f"search on seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def _gap_cell(by_lr: Mapping[str, float | None], k: str) -> str:
    v = by_lr.get(k)
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt(v)


def _failure_blocks(records: list[dict]) -> list[Block]:
    bad = failures(records)
    if not bad:
        return []
    # the reason's first line: a traceback would break the Markdown table (records keep it)
    table: Table = (["Run", "Error"], [[r["key"], first_reason(r)] for r in bad])
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


_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline_md(text: str) -> str:
    # the only inline Markdown the report uses: **bold**, `code` and [text](link)
    out, parts = html.escape(text), []
    for i, chunk in enumerate(out.split("**")):
        parts.append(f"<b>{chunk}</b>" if i % 2 else chunk)
    out = "".join(parts)
    parts = []
    for i, chunk in enumerate(out.split("`")):
        parts.append(f"<code>{chunk}</code>" if i % 2 else chunk)
    return _LINK.sub(lambda m: f"<a href='{m.group(2)}'>{m.group(1)}</a>", "".join(parts))


def _html(b: Block) -> str:
    kind = b[0]
    if kind == "h":
        return f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>"
    if kind == "p":
        return f"<p>{_inline_md(b[1])}</p>"
    if kind == "pre":
        return f"<pre>{html.escape(b[1])}</pre>"
    if kind == "table":
        return f"<div class='tbl'>{to_html(b[1])}</div>"
    src, alt = html.escape(Path(b[1]).as_posix()), html.escape(b[2])
    return f"<div class='fig'><img src='{src}' alt='{alt}'></div>"
