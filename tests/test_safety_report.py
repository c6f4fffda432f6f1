"""``salun report DIR`` treats report.md, report.html and plots/*.png like every output:
what salun wrote there is rewritten freely (a benchmark rewrites its report at every end);
what a user wrote there is replaced only with ``--overwrite``, and nothing is half-written."""

from __future__ import annotations

import pytest
import yaml

from salun.bench import ResultStore, parse_config
from salun.bench.presets import preset_path
from salun.bench.session import Session
from salun.cli import main
from salun.report.build import REPORT_MARK
from test_report import record


@pytest.fixture()
def bench(tmp_path):
    """A finished benchmark folder of hand-made records (one seed, one method)."""
    raw = yaml.safe_load(preset_path("ci").read_text())
    cfg = parse_config({**raw, "seeds": [0]}, "ci")
    session = Session(tmp_path, cfg, {"command": "salun bench --preset ci --out X"})
    store = ResultStore(tmp_path)
    m = {"UA": 2.0, "RA": 99.0, "TA": 93.0, "MIA": 14.0}
    for rec in [
        record("original.s0", "original", "original", 0, {"train_acc": 100, "test_acc": 97}, 3),
        record("retrain.random10.s0", "retrain", "retrain", 0, {**m, "UA": 4.0}, 60.0),
        record("final.random10.s0.ft", "unlearn", "ft", 0, m, 2.0, order=1, avg_gap=0.5),
    ]:
        store.add(rec)
    session.end("finished")
    return tmp_path


def _report(folder, capsys, *flags) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["report", str(folder), *flags])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _refused(result, *needles) -> None:
    code, err = result
    assert code == 2 and len(err) == 1 and err[0].startswith("salun: error: "), result
    for n in needles:
        assert n in err[0], (n, err)


def test_rerunning_over_our_own_report_needs_no_flag(bench, capsys):
    assert _report(bench, capsys)[0] == 0
    md = (bench / "report.md").read_text()
    assert md.rstrip().endswith(REPORT_MARK)
    assert (bench / "report.html").read_text().rstrip().endswith(REPORT_MARK)
    plots = sorted((bench / "plots").glob("*.png"))
    assert plots, "the report draws its figures"
    assert _report(bench, capsys)[0] == 0  # a benchmark's end does exactly this
    assert (bench / "report.md").read_text() == md


def test_a_report_md_the_user_wrote_is_kept_without_overwrite(bench, capsys):
    (bench / "report.md").write_text("# my notes on this benchmark\n")
    _refused(_report(bench, capsys), "report.md", "--overwrite")
    assert (bench / "report.md").read_text() == "# my notes on this benchmark\n"
    assert not (bench / "report.html").exists(), "nothing is half-written"
    assert not (bench / "plots").exists()
    assert _report(bench, capsys, "--overwrite")[0] == 0
    assert (bench / "report.md").read_text().rstrip().endswith(REPORT_MARK)


def test_a_report_html_the_user_wrote_is_kept_without_overwrite(bench, capsys):
    assert _report(bench, capsys)[0] == 0
    (bench / "report.html").write_text("<p>mine</p>")
    md = (bench / "report.md").read_bytes()
    _refused(_report(bench, capsys), "report.html")
    assert (bench / "report.html").read_text() == "<p>mine</p>"
    assert (bench / "report.md").read_bytes() == md


def test_a_report_of_an_older_version_without_the_mark_is_ours(bench, capsys):
    # older versions wrote no mark: their heading names this very benchmark
    (bench / "report.md").write_text("# salun benchmark: ci\n\nold table\n")
    (bench / "report.html").write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>salun benchmark: ci"
        "</title></head><body></body></html>\n"
    )
    assert _report(bench, capsys)[0] == 0
    assert "old table" not in (bench / "report.md").read_text()
    # the heading of another benchmark is not this folder's report
    (bench / "report.md").write_text("# salun benchmark: another one\n")
    _refused(_report(bench, capsys), "report.md")


def test_a_users_png_in_plots_is_neither_replaced_nor_deleted(bench, capsys):
    assert _report(bench, capsys)[0] == 0
    ours = sorted(p.name for p in (bench / "plots").glob("*.png"))
    stale = bench / "plots" / "metrics_old_layout.png"  # a figure of ours no longer shown
    stale.write_bytes((bench / "plots" / ours[0]).read_bytes())
    assert _report(bench, capsys)[0] == 0
    assert not stale.exists(), "a stale figure salun drew is removed"
    user = bench / "plots" / "my_figure.png"
    user.write_bytes(b"\x89PNG\r\n\x1a\n not salun's")
    _refused(_report(bench, capsys), "my_figure.png", "--overwrite")
    assert _report(bench, capsys, "--overwrite")[0] == 0
    assert user.read_bytes() == b"\x89PNG\r\n\x1a\n not salun's", "shown or not, never deleted"
    assert sorted(p.name for p in (bench / "plots").glob("*.png")) == sorted(
        [*ours, "my_figure.png"]
    )


def test_a_fifo_named_report_md_is_refused_without_hanging(bench, capsys):
    import os

    os.mkfifo(bench / "report.md")
    _refused(_report(bench, capsys), "report.md")
    _refused(_report(bench, capsys, "--overwrite"), "not a regular file")
