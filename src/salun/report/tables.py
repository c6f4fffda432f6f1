"""Tables as plain data (header + rows of strings), rendered to Markdown or HTML."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

from salun.bench.aggregate import Row, Stat, mean_std, n_seeds
from salun.metrics import GAP_METRICS

Table = tuple[list[str], list[list[str]]]

TIE_MARK = {"best": "best", "tied": "tied", "worse": "", None: "—"}
EDGE_NOTE = {"lowest": "at the grid's lowest value", "highest": "at the grid's highest value"}


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}f}"


def fmt_stat(s: Stat, gap: float | None = None, digits: int = 2) -> str:
    """``mean±std (gap)`` as in the paper's Table 1 (one value: no ±, it would read ±0)."""
    cell = fmt(s.mean, digits) + (f"±{fmt(s.std, digits)}" if s.n >= 2 else "")
    return cell if gap is None else f"{cell} ({fmt(gap, digits)})"


def fmt_ci(s: Stat, digits: int = 2) -> str:
    """``[lo, hi]``: the 95 % interval of the mean (— for fewer than two values)."""
    if s.n < 2:
        return "—"
    lo, hi = s.ci
    return f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"


def fmt_lr(lr: float | None) -> str:
    return "—" if lr is None else f"{lr:g}"


def lr_cell(r: Row) -> str:
    if r.method == "retrain":
        return "—"
    cell = ("" if r.lr_field == "lr" else f"{r.lr_field} ") + fmt_lr(r.lr)
    if r.lr_source == "searched":
        cell += " (searched" + (f", {EDGE_NOTE[r.at_edge]})" if r.at_edge else ")")
    return cell


ORIGINAL_LABEL = "Original (start, not ranked)"


def original_row(records: Sequence[Mapping], rows: Sequence[Row]) -> Row | None:
    """The original model (before unlearning) on a table's split: its UA/RA/TA/MIA as
    Retrain's record of each seed holds them (``original_metrics``, evaluated on the same
    split the same way), mean ± std over the seeds of the table's Retrain row, with the gap
    of each mean to Retrain's mean. None when a seed's record lacks them (benchmarks of
    salun versions before the row) or holds a value that is not finite."""
    ref = next((r for r in rows if r.method == "retrain"), None)
    if ref is None:
        return None
    by_seed = {
        rec["seed"]: rec.get("original_metrics")
        for rec in records
        if rec.get("kind") == "retrain"
        and rec.get("status") == "ok"
        and rec.get("scenario") == ref.scenario
        and rec.get("seed") in ref.seeds
    }
    vals = [by_seed.get(s) for s in ref.seeds]
    if not vals or any(
        not isinstance(v, Mapping) or not all(_finite(v.get(m)) for m in GAP_METRICS) for v in vals
    ):
        return None
    stats = {m: mean_std(v[m] for v in vals) for m in GAP_METRICS}
    gaps = {m: abs(stats[m].mean - ref.metrics[m].mean) for m in GAP_METRICS}
    return Row(
        scenario=ref.scenario,
        method="original",
        seeds=ref.seeds,
        metrics=stats,
        gaps=gaps,
        avg_gap=sum(gaps.values()) / len(gaps),
        avg_gap_trials=mean_std([]),
        rte=mean_std([]),
    )


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def table1(
    rows: Sequence[Row],
    metrics: Sequence[str] = GAP_METRICS,
    missing: Mapping[str, str] | None = None,
    start: Row | None = None,
) -> Table:
    """Method | UA | RA | TA | MIA | Avg. Gap | Avg. Gap per seed | vs best | rank | RTE |
    lr | n — Table 1's layout, plus the per-seed Avg. Gap with its 95 % interval and the
    tie mark. With one seed the per-seed Avg. Gap equals the Avg. Gap, nothing can be
    tied and every row has n = 1, so those three columns are left out. ``missing``: the
    configured methods without a result (label: reason), each a row of dashes marked
    ``failed`` or ``no run``, so that no method vanishes silently. ``start``: the original
    model's row (see :func:`original_row`), shown after Retrain as the starting point, with
    its gaps to Retrain but no rank."""
    many = n_seeds(rows) >= 2
    header = ["Method", *metrics, "Avg. Gap"]
    header += ["Avg. Gap per seed", "vs best"] if many else []
    header += ["rank", "RTE (s)", "lr"] + (["n"] if many else [])
    body = []
    for r in rows:
        ref = r.method == "retrain"
        g = r.avg_gap_trials
        per_seed = fmt(g.mean) + (f" {fmt_ci(g)}" if g.n >= 2 else "")
        cells = ["Retrain" if ref else r.method]
        cells += [fmt_stat(r.metrics[m], r.gaps.get(m)) for m in metrics]
        cells.append(fmt(r.avg_gap))
        if many:
            cells += ["—" if ref else per_seed, "—" if ref else TIE_MARK[r.tie]]
        cells += ["—" if ref or r.rank is None else str(r.rank), fmt_stat(r.rte), lr_cell(r)]
        body.append(cells + ([str(len(r.seeds))] if many else []))
        if ref and start is not None:
            cells = [ORIGINAL_LABEL]
            cells += [fmt_stat(start.metrics[m], start.gaps.get(m)) for m in metrics]
            cells.append(fmt(start.avg_gap))
            cells += ["—", "—"] if many else []
            body.append(cells + ["—", "—", "—"] + ([str(len(start.seeds))] if many else []))
    for label, why in (missing or {}).items():
        mark = "no run" if why.startswith("no run") else "failed"
        cells = [label, *("—" for _ in metrics), "—"] + (["—", "—"] if many else [])
        body.append(cells + [mark, "—", "—"] + (["0"] if many else []))
    return header, body


def interval_table(rows: Sequence[Row], metrics: Sequence[str] = GAP_METRICS) -> Table:
    """95 % Student-t intervals of every mean over seeds, and the paired difference of
    per-seed Avg. Gap to the best method."""
    header = ["Method", *(f"{m} 95 % CI" for m in metrics), "Avg. Gap per seed 95 % CI",
              "Δ Avg. Gap to best, 95 % CI", "RTE 95 % CI"]  # fmt: skip
    body = []
    for r in rows:
        ref = r.method == "retrain"
        diff = "—"
        if r.vs_best is not None and r.vs_best.n >= 2:
            diff = f"{fmt(r.vs_best.mean)} {fmt_ci(r.vs_best)}"
        body.append(
            [
                "Retrain" if ref else r.method,
                *(fmt_ci(r.metrics[m]) for m in metrics),
                "—" if ref else fmt_ci(r.avg_gap_trials),
                diff,
                fmt_ci(r.rte),
            ]
        )
    return header, body


def rank_table(ranks: dict[str, dict[int, int]]) -> Table:
    """Method | rank on seed s... (1 = smallest Avg. Gap on that seed)."""
    seeds = sorted({s for d in ranks.values() for s in d})
    header = ["Method", *(f"seed {s}" for s in seeds)]
    body = [[m, *(str(d.get(s, "—")) for s in seeds)] for m, d in ranks.items()]
    return header, body


def to_markdown(table: Table) -> str:
    header, body = table

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    out += [line(r) for r in body]
    return "\n".join(out) + "\n"


def to_html(table: Table) -> str:
    header, body = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>\n"
