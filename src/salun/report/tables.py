"""Tables as plain data (header + rows of strings), rendered to Markdown or HTML."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from salun.bench.aggregate import Row, Stat
from salun.metrics import GAP_METRICS

Table = tuple[list[str], list[list[str]]]


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}f}"


def fmt_stat(s: Stat, gap: float | None = None, digits: int = 2) -> str:
    """``mean±std (gap)`` as in the paper's Table 1."""
    cell = f"{fmt(s.mean, digits)}±{fmt(s.std, digits)}"
    return cell if gap is None else f"{cell} ({fmt(gap, digits)})"


def fmt_lr(lr: float | None) -> str:
    return "—" if lr is None else f"{lr:g}"


def table1(rows: Sequence[Row], metrics: Sequence[str] = GAP_METRICS) -> Table:
    """Method | UA | RA | TA | MIA | Avg. Gap | RTE (s) | lr | seeds — Table 1's layout."""
    header = ["Method", *metrics, "Avg. Gap", "RTE (s)", "lr", "n"]
    body = []
    for r in rows:
        name = "Retrain" if r.method == "retrain" else r.method
        lr = ("" if r.lr_field == "lr" else f"{r.lr_field} ") + fmt_lr(r.lr)
        lr += " (searched)" if r.lr_source == "searched" else ""
        body.append(
            [
                name,
                *(fmt_stat(r.metrics[m], r.gaps.get(m)) for m in metrics),
                fmt(r.avg_gap),
                fmt_stat(r.rte),
                lr if r.method != "retrain" else "—",
                str(len(r.seeds)),
            ]
        )
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
