"""Plots a reader can use: labelled axes, zoomed value axes, error bars only with >= 2 seeds,
no UA-per-seed or rank plot for one seed, no text labels that can overlap, natural size in
the HTML, atomic writes; and the report's words on one-seed rankings."""

from __future__ import annotations

import shutil
import struct

import matplotlib.figure
import matplotlib.pyplot
import pytest

from salun.bench import ResultStore, parse_config
from salun.bench.aggregate import summarize
from salun.bench.session import Session
from salun.report import plots, write_report

M = lambda ua, ra, ta, mia: {"UA": ua, "RA": ra, "TA": ta, "MIA": mia}  # noqa: E731


def rec(kind, method, seed, metrics, gap=None, order=0, rte=1.0):
    return {
        "key": f"{kind}.{method}.s{seed}",
        "kind": kind,
        "phase": "final" if kind == "unlearn" else None,
        "protocol": "paper" if kind == "unlearn" else None,
        "status": "ok",
        "scenario": "random10",
        "method": method,
        "method_name": method,
        "seed": seed,
        "order": order,
        "metrics": metrics,
        "rte_s": rte,
        "avg_gap": gap,
        "hparam": {"name": "lr", "value": 0.01},
        "lr_choice": {"source": "config", "value": 0.01, "field": "lr"},
        "device": "cpu (1 threads)",
    }


def records(seeds):
    out = []
    for s in seeds:
        out.append(rec("retrain", "retrain", s, M(9.0 + s, 100.0, 90.0, 13.0), rte=100.0))
        out.append(rec("unlearn", "salun", s, M(8.8, 91.0 + s, 87.0, 11.5), 3.5 + s, 0, 8.0))
        out.append(rec("unlearn", "ft", s, M(6.0, 95.8, 88.5, 8.9 + s), 3.3 - s / 10, 1, 6.0))
        out.append(rec("unlearn", "rl", s, M(9.4, 90.9, 86.6, 11.2), 3.7, 2, 7.0))
    return out


@pytest.fixture()
def figures(monkeypatch):
    """Keep every figure a plot function draws (instead of closing it after saving)."""
    kept = []
    real = plots._save

    def keep(fig, path):
        kept.append(fig)
        fig.canvas.draw()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    monkeypatch.setattr(plots, "_save", real)


@pytest.fixture()
def text_only(monkeypatch):
    """Skip rendering PNGs (a stub file instead) for tests that read only the report's text."""

    def stub(fig, path):
        import matplotlib.pyplot as plt

        plt.close(fig)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        return path

    monkeypatch.setattr(plots, "_save", stub)


def yerr_bars(ax) -> list:
    return [c for c in ax.containers if getattr(c, "has_yerr", False)]


def test_one_seed_metric_panels_have_no_error_bars_and_say_one_seed(figures, tmp_path):
    rows = summarize(records([0]))["random10"]
    title = plots.metric_title("random10", "paper", 1)
    assert "one seed" in title and "mean ± std" not in title and "CI" not in title
    plots.metric_panels(rows, title, tmp_path / "m.png")
    (fig,) = figures
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == ["UA (%)", "RA (%)", "TA (%)", "MIA (%)"]
    assert all(not yerr_bars(ax) for ax in axes)
    assert fig._suptitle.get_text() == title


def test_three_seed_panels_draw_the_95_ci(figures, tmp_path):
    rows = summarize(records([0, 1, 2]))["random10"]
    plots.metric_panels(rows, plots.metric_title("random10", "paper", 3), tmp_path / "m.png")
    ra = figures[0].axes[1]
    bars = yerr_bars(ra)
    salun = next(r for r in rows if r.method == "salun")
    # salun's RA over seeds: 91, 92, 93 -> mean 92, std 1, half width 4.3027 / √3 = 2.4842
    seg = next(
        c.lines[2][0].get_segments()[0]
        for c in bars
        if abs(c.lines[0].get_ydata()[0] - 92.0) < 1e-9
    )
    assert seg[0][1] == pytest.approx(92 - 2.4842, abs=1e-3)
    assert seg[1][1] == pytest.approx(92 + 2.4842, abs=1e-3)
    assert salun.metrics["RA"].half_width == pytest.approx(2.4842, abs=1e-3)


def test_ra_axis_is_zoomed_so_a_nine_point_gap_shows(figures, tmp_path):
    rows = summarize(records([0]))["random10"]
    plots.metric_panels(rows, "t", tmp_path / "m.png")
    lo, hi = figures[0].axes[1].get_ylim()  # RA: 90.9 ... 100
    assert 85 < lo < 90.9 and 100 < hi < 102
    assert (hi - lo) < 15  # the 9-point gap spans most of the axis, not a tenth of it


def test_ua_per_seed_plot_names_retrain_in_its_legend(figures, tmp_path):
    ua = {"retrain": [(0, 9.0), (1, 10.0)], "salun": [(0, 8.8), (1, 8.7)]}
    plots.ua_stability(ua, "UA per seed", tmp_path / "u.png")
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Retrain, one seed" in labels and "mean over seeds" in labels
    assert ax.get_ylabel().startswith("UA (%)")


def test_gap_vs_rte_has_a_legend_instead_of_overlapping_labels(figures, tmp_path):
    by_sc = summarize(records([0, 1]))
    plots.gap_vs_rte(by_sc, tmp_path / "g.png", "title")
    fig = figures[0]
    ax = fig.axes[0]
    assert not ax.texts  # no per-point annotations to collide
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(names) == ["Retrain RTE", "ft", "rl", "salun"]  # each name once
    assert ax.get_ylabel().startswith("Avg. Gap to Retrain") and "RTE" in ax.get_xlabel()
    # every method is drawn with its own marker or colour
    styles = {(str(c.lines[0].get_color()), c.lines[0].get_marker()) for c in ax.containers}
    assert len(styles) == len(ax.containers) == 3


def test_rank_plot_axes(figures, tmp_path):
    from salun.bench.aggregate import seed_ranks

    rows = summarize(records([0, 1, 2]))["random10"]
    plots.rank_stability({"random10": seed_ranks(rows)}, tmp_path / "r.png", "ranks")
    ax = figures[0].axes[0]
    assert ax.get_ylabel().startswith("rank") and ax.get_xlabel() == "seed"
    lo, hi = ax.get_ylim()
    assert lo > hi  # rank 1 at the top


def write_folder(tmp_path, seeds):
    raw = {
        "name": "plots",
        "dataset": "digits",
        "arch": "mlp",
        "original": {"epochs": 1},
        "scenarios": ["random10"],
        "seeds": list(seeds),
        "protocol": "paper",
        "methods": {"salun": {}, "ft": {}, "rl": {}},
    }
    cfg = parse_config(raw, "plots")
    session = Session(tmp_path, cfg, {"command": "salun bench ..."})
    store = ResultStore(tmp_path)
    for r in records(seeds):
        store.add(r)
    session.end("finished")
    return tmp_path


def png_width(path) -> int:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", head[16:20])[0]


def test_one_seed_report_says_not_significant_and_skips_seed_plots(tmp_path):
    root = write_folder(tmp_path / "one", [0])
    md = write_report(root)["md"].read_text()
    assert "One seed: the rankings in this report are not significant" in md
    assert "this ranking is not significant" in md
    assert "95 % confidence intervals" not in md and "tied" not in md.split("## Scenario")[1]
    pngs = sorted(p.name for p in (root / "plots").glob("*.png"))
    assert pngs == ["gap_vs_rte_paper.png", "metrics_random10_paper.png"]
    assert "salun ÷ Retrain's RTE: **0.080**" in md  # 8 s / 100 s
    # an older layout's plot files are removed, the current ones kept
    # (a plot salun drew: a file salun did not write is the user's, never deleted)
    shutil.copy(
        root / "plots" / "metrics_random10_paper.png", root / "plots" / "metrics_random10.png"
    )
    write_report(root)
    assert not (root / "plots" / "metrics_random10.png").exists()
    assert (root / "plots" / "metrics_random10_paper.png").is_file()


def test_three_seed_report_has_intervals_ties_and_seed_plots(tmp_path):
    root = write_folder(tmp_path / "three", [0, 1, 2])
    paths = write_report(root)
    md = paths["md"].read_text()
    assert "not significant" not in md
    assert "95 % confidence intervals (Student t over seeds)" in md
    pngs = {p.name for p in (root / "plots").glob("*.png")}
    assert {"ua_seeds_random10_paper.png", "rank_seeds_paper.png"} <= pngs
    # ft's per-seed gaps 3.3, 3.2, 3.1 beat salun's 3.5, 4.5, 5.5 every seed
    assert "| ft |" in md and "Smallest mean per-seed Avg. Gap: **ft**" in md
    html = paths["html"].read_text()
    assert "max-width:100%" not in html and "<img src='plots/" in html
    for p in (root / "plots").glob("*.png"):
        assert png_width(p) <= 1140, p.name  # drawn for the page: shown at natural size


def test_plot_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "p.png"
    target.write_bytes(b"previous")
    rows = summarize(records([0]))["random10"]

    def broken(self, fname, *a, **k):
        with open(fname, "wb") as f:
            f.write(b"half a png")
        raise RuntimeError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        plots.metric_panels(rows, "t", target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temp file left


def test_a_choice_at_the_grid_edge_is_flagged_in_the_report(tmp_path, text_only):
    root = tmp_path / "edge"
    raw_records = records([0])
    choice = {"source": "searched", "value": 0.1, "field": "lr", "grid": [0.001, 0.01, 0.1],
              "tune_seeds": [100], "search_seed": 100, "at_edge": "highest",
              "avg_gap_by_value": {"0.001": 5.0, "0.01": 4.0, "0.1": 3.3}}  # fmt: skip
    for r in raw_records:
        if r["method"] == "ft":
            r.update(protocol="tuned", lr_choice=choice, hparam={"name": "lr", "value": 0.1})
    write_folder(root, [0])
    store = ResultStore(root)
    for r in raw_records:
        if r["method"] == "ft":
            store.add({**r, "key": r["key"] + ".tuned"})
    md = write_report(root)["md"].read_text()
    assert "| ft |" in md and "0.1 (searched, at the grid's highest value)" in md
    assert "The search chose a value at its grid's edge for ft" in md
    assert (
        "| tuned | random10 | ft | lr = 0.1 | search on seed 100 | at the grid's highest value |"
        in md
    )


def test_committed_quick_folder_of_before_the_protocols_still_reports(tmp_path, text_only):
    """benchmarks/quick keeps bench.json and results.jsonl only (old record format)."""
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "benchmarks" / "quick"
    for name in ("bench.json", "results.jsonl"):
        shutil.copy(src / name, tmp_path / name)
    md = write_report(tmp_path)["md"].read_text()
    assert "### random10 — protocol tuned" in md and "protocol paper" not in md
    assert "**The tuning seed [0] is also a reported seed**" in md
    assert "this ranking is not significant" in md
    assert "| tuned | class0 | salun | lr = 0.01 | search on seed 0 |" in md


def test_a_report_with_one_method_ranks_nothing():
    """An ablation run of one variant: no 'every other method is worse' (there is none)."""
    from salun.report.build import _ranking_text

    rows = summarize([r for r in records([0, 1, 2]) if r["method"] in ("retrain", "ft")])
    text = _ranking_text(rows["random10"])
    assert text.startswith("One method: **ft**, mean per-seed Avg. Gap 3.20 (95 % CI")
    assert "worse" not in text and "Smallest" not in text


def test_a_method_keeps_its_colour_and_marker_whatever_the_figure():
    looks = {m: plots.method_style(m) for m in plots.KNOWN}
    pairs = {(tuple(v["color"]), v["marker"]) for v in looks.values()}
    assert len(pairs) == len(plots.KNOWN) == 12  # every registered method its own look
    # by name, not by position: SSD is the 12th known method, tab10 colour 1, marker '>'
    assert looks["ssd"] == {"color": matplotlib.pyplot.get_cmap("tab10")(11 % 10), "marker": ">"}
    assert plots.method_style("salun_keep10") == plots.method_style("salun_keep10")


def test_dodge_spreads_only_markers_that_would_overlap():
    # two methods at (5 s, 0.1) and (5.05 s, 0.12), one far away at (300 s, 8)
    f = plots.dodge([(5.0, 0.1), (5.05, 0.12), (300.0, 8.0)])
    assert f[2] == 1.0
    assert f[0] == pytest.approx(10**-0.025) and f[1] == pytest.approx(10**0.025)
