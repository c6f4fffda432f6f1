"""The committed GA/ESD records of benchmarks/gen/reference-defaults are what their README says.

They are results, not fixtures: if a record is replaced by a run with other settings, or the
README calls a variant by another name, its section would silently describe something else.
Their ESD rows ran salun's own variant (``esd_xt: sample``, now ``ddim``; guidance 3; salun's
update order and an eval-mode frozen copy), not the reference's behaviour that is the default
since issue #24. These checks tie records, names and README together.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from salun.generation.ddpm.unlearn import REFERENCE_SCHEDULE, GenUnlearnConfig, config_of_record

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "benchmarks" / "gen" / "reference-defaults"
DEFAULTS = {f.name: f.default for f in fields(GenUnlearnConfig)}
SECTION = "## GA and ESD as run before issue #24 (ESD: salun's variant, not the reference's)"


def _record(name: str) -> dict:
    return json.loads((FOLDER / name / "model.json").read_text())


def test_esd_record_ran_salun_variant_under_its_old_names_to_the_end():
    rec = _record("esd")
    assert rec["complete"] and rec["steps_done"] == 10000
    u = rec["unlearn"]
    # the old names: salun's DDIM sampler was "sample", and the issue-#24 switches are absent
    assert (u["esd_eta"], u["esd_xt"], u["esd_start_guidance"]) == (7.5, "sample", 3.0)
    assert "esd_update" not in u and "esd_frozen_mode" not in u
    ran = config_of_record(u)
    assert (ran.esd_xt, ran.esd_update, ran.esd_frozen_mode) == ("ddim", "standard", "eval")
    # ... which is not what the defaults run: the README must not call it the reference's
    reference = (DEFAULTS["esd_xt"], DEFAULTS["esd_update"], DEFAULTS["esd_frozen_mode"])
    assert reference == ("reference", "reference", "train")
    assert DEFAULTS["esd_start_guidance"] == 2.0
    assert (
        (rec["iterations_used"], rec["batch_size_used"]) == REFERENCE_SCHEDULE["esd"] == (10000, 1)
    )
    assert rec["alpha_used"] == 0  # ESD has no retain term


def test_every_committed_unlearn_record_loads_as_the_config_it_ran():
    records = sorted((ROOT / "benchmarks" / "gen").glob("**/model.json"))
    loaded = {}
    for path in records:
        rec = json.loads(path.read_text())
        if "unlearn" in rec:
            loaded[str(path.parent.relative_to(ROOT))] = config_of_record(rec["unlearn"])
    assert len(loaded) >= 12
    # the first report's rows predate esd_xt and ga_reduction: forward-process ESD, mean GA
    assert loaded["benchmarks/gen/results/esd"].esd_xt == "forward"
    assert loaded["benchmarks/gen/results/ga"].ga_reduction == "mean"
    assert loaded["benchmarks/gen/reference-defaults/ga"].ga_reduction == "sum"


def test_ga_record_used_the_pixel_summed_loss_that_is_the_default():
    u = _record("ga")["unlearn"]
    assert u["method"] == "ga" and u["ga_reduction"] == DEFAULTS["ga_reduction"] == "sum"


@pytest.mark.parametrize("name, eta", [("esd-eta1-forward", 1.0), ("esd-eta7.5-forward", 7.5)])
def test_diagnostics_differ_from_the_reference_run_only_where_their_names_say(name, eta):
    ref, diag = _record("esd"), _record(name)
    assert diag["unlearn"]["esd_eta"] == eta and diag["unlearn"]["esd_xt"] == "forward"
    same = {k: v for k, v in ref["unlearn"].items() if k not in ("esd_eta", "esd_xt")}
    assert {k: diag["unlearn"][k] for k in same} == same
    assert diag["iterations_used"] == ref["iterations_used"]
    assert diag["batch_size_used"] == ref["batch_size_used"]


def test_readme_table_is_what_summarize_prints_from_the_committed_records():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gen/summarize.py"), str(FOLDER)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 * (1 + 5)  # each table: its header and original, ga and three ESD rows
    readme = (ROOT / "benchmarks/gen/README.md").read_text()
    section = readme[readme.index(SECTION) :]
    section = section[: section.index("\n## ", 1)]
    lines = set(section.splitlines())  # whole lines: a row must not match inside a longer one
    missing = [row for row in rows if row not in lines]
    assert not missing, f"README rows differ from summarize.py: {missing}"
