"""The audit as a benchmark column (``audit: {shadows: K}``): config checks, the hash of
configs without it, one shared set of shadows per scenario, the rows each protocol ran,
resuming, and the report's audit table. Synthetic data, a tiny MLP, one torch thread."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

import pytest

import salun.audit.workflow as wf
import salun.bench.tasks
import salun.data
import salun.methods
from salun.audit import AuditStore
from salun.audit.workflow import REFERENCE, audit_inputs, shadow_split
from salun.bench import BenchOptions, load_preset, parse_config, read_records, run_bench
from salun.bench.config import config_from_dict
from salun.errors import SalunError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
K = 3
N_TRAIN = 80  # synthetic:80 -> 80 train, 20 test; random10 forgets 8

RAW = {
    "name": "tiny-audit",
    "dataset": f"synthetic:{N_TRAIN}",
    "arch": "mlp",
    "width": 0.25,
    "original": {"epochs": 3, "batch_size": 32, "lr": 0.05},
    "scenarios": ["random10", {"name": "cls", "kind": "class", "classes": [1]}],
    "seeds": [5],  # shadow seeds (5 * 100003 + k) differ from the bench's seeds
    "protocol": ["paper", "tuned"],
    "tune_seeds": [6],
    "mia_features": ["confidence"],
    "methods": {
        "ft": {"epochs": 1, "lr": 0.01, "lr_grid": []},  # not searched: one row for both
        # the grid leaves out the paper lr, so the tuned row must differ from the paper row
        "salun": {"epochs": 1, "lr": 0.01, "lr_grid": [0.001, 0.003]},
    },
    "audit": {"shadows": K, "bootstrap": 20},
}
OPTS = BenchOptions(quiet=True, device="cpu", threads=1)


def raw(**edits) -> dict:
    d = copy.deepcopy(RAW)
    d.update(edits)
    return d


# ---- configuration ------------------------------------------------------------------


def test_audit_section_defaults_to_the_random_scenarios():
    cfg = parse_config(raw(), "t")
    assert cfg.audit.shadows == K and cfg.audit.bootstrap == 20
    assert cfg.audit.scenarios == ("random10",)  # the class-wise one is left out
    assert cfg.audit.variance == "global"
    full = parse_config(raw(audit={"shadows": 4}), "t").audit
    assert full.bootstrap == 1000  # the audit's own default
    # bench.json round trip keeps the section and the hash
    again = config_from_dict(json.loads(json.dumps(asdict(cfg))))
    assert again == cfg and again.hash() == cfg.hash()


@pytest.mark.parametrize(
    "audit, message",
    [
        (3, "audit must be a mapping"),
        ({}, "audit needs shadows"),
        ({"shadows": 2}, "shadows must be an integer >= 3, got 2"),
        ({"shadows": True}, "shadows must be an integer >= 3, got True"),
        ({"shadows": 4.0}, "shadows must be an integer"),
        ({"shadows": "8"}, "shadows must be an integer"),
        ({"shadows": 3, "shadow": 4}, "unknown key 'shadow'"),
        ({"shadows": 3, "bootstrap": 5}, "bootstrap must be an integer >= 10"),
        ({"shadows": 3, "variance": "local"}, "variance must be one of global, per_example, fixed"),
        ({"shadows": 3, "location": "mode"}, "location must be one of mean, median, got 'mode'"),
        ({"shadows": 3, "queries": "shift"}, "queries must be one of single, mirror, got 'shift'"),
        ({"shadows": 3, "scenarios": []}, "scenarios must be a non-empty list"),
        ({"shadows": 3, "scenarios": ["nope"]}, "'nope' is not a scenario"),
        ({"shadows": 3, "scenarios": ["cls"]}, "'cls' is class-wise"),
        ({"shadows": 3, "scenarios": ["random10", "random10"]}, "distinct"),
    ],
)
def test_bad_audit_section_is_one_clear_error(audit, message):
    with pytest.raises(SalunError, match=message):
        parse_config(raw(audit=audit), "t")


def test_audit_needs_a_random_scenario():
    with pytest.raises(SalunError, match="needs a random-data scenario"):
        parse_config(raw(scenarios=["class1"]), "t")


def test_bad_audit_settings_write_nothing(tmp_path):
    # val_best needs a validation set the audit's shadows do not have: refused up front
    bad = raw(val_fraction=0.2)
    bad["original"] = {**bad["original"], "val_best": True}
    with pytest.raises(SalunError, match="val_best"):
        run_bench(parse_config(bad, "t"), tmp_path / "out", OPTS)
    assert not (tmp_path / "out").exists()


def test_configs_without_audit_keep_their_hash():
    # the committed paper-regime folder: its stored hash is the one computed then
    data = json.loads((ROOT / "benchmarks/standard/bench.json").read_text())
    assert "audit" not in data["config"]
    assert config_from_dict(data["config"]).hash() == data["config_hash"]
    assert load_preset("ci").hash() == "073895e7fad90829"  # as before the audit column
    no_audit = parse_config({k: v for k, v in RAW.items() if k != "audit"}, "t")
    with_audit = parse_config(raw(), "t")
    assert no_audit.audit is None and with_audit.hash() != no_audit.hash()
    more = parse_config(raw(audit={"shadows": K + 1, "bootstrap": 20}), "t")
    assert more.hash() != with_audit.hash()


def test_the_attack_settings_flow_into_the_audit_and_keep_old_hashes():
    from salun.bench.audit_stage import audit_config, audit_rows

    # the committed audit column, made before location / queries: its stored hash holds
    data = json.loads((ROOT / "benchmarks/audit-bench/bench.json").read_text())
    assert "location" not in data["config"]["audit"]
    old = config_from_dict(data["config"])
    assert (old.audit.location, old.audit.queries) == ("mean", "single")
    assert old.hash() == data["config_hash"]
    # the defaults spelled out hash alike; another value is another benchmark
    base = parse_config(raw(), "t")
    spelled = {"shadows": K, "bootstrap": 20, "location": "mean", "queries": "single"}
    assert parse_config(raw(audit=spelled), "t").hash() == base.hash()
    chosen = {"shadows": K, "bootstrap": 20, "location": "median", "variance": "fixed"}
    cfg = parse_config(raw(audit=chosen), "t")
    assert cfg.hash() != base.hash()
    assert parse_config(raw(audit={**spelled, "queries": "mirror"}), "t").hash() != base.hash()
    # ... and reaches the audit's config (audit.json, summary.json)
    acfg = audit_config(cfg, "random10", audit_rows(cfg, "random10")[0])
    assert (acfg.location, acfg.variance, acfg.queries) == ("median", "fixed", "single")
    again = config_from_dict(json.loads(json.dumps(asdict(cfg))))
    assert again == cfg and again.hash() == cfg.hash()


def test_mirror_queries_on_data_without_flips_are_refused_before_any_write(tmp_path):
    cfg = parse_config(raw(audit={"shadows": K, "queries": "mirror"}), "t")
    with pytest.raises(SalunError, match="does not allow horizontal flips"):
        run_bench(cfg, tmp_path / "out", OPTS)
    assert not (tmp_path / "out").exists()


# ---- end to end ---------------------------------------------------------------------


class Counter:
    """Counts the audit's trainings and method runs (and which original each run got)."""

    def __init__(self, mp):
        self.trainings: list[tuple[int, int]] = []  # (len(data), seed)
        self.flips: list[bool | None] = []  # flip_allowed of each training
        self.methods: list[tuple[str, int, int]] = []  # (method, id(original), seed)
        real_train, real_method = wf.train_supervised, salun.methods.run_method

        def train(model, data, recipe, **kw):
            self.trainings.append((len(data), recipe.seed))
            self.flips.append(kw.get("flip_allowed"))
            return real_train(model, data, recipe, **kw)

        def method(name, original, forget, retain, cfg, ctx, *a, **kw):
            self.methods.append((name, id(original), getattr(cfg, "seed", None)))
            return real_method(name, original, forget, retain, cfg, ctx, *a, **kw)

        mp.setattr(wf, "train_supervised", train)
        mp.setattr(salun.methods, "run_method", method)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b"
    cfg = parse_config(raw(scenarios=["random10"]), "t")  # the class-wise one: config tests
    with pytest.MonkeyPatch.context() as mp:
        counter = Counter(mp)
        run_bench(cfg, out, OPTS)
    return cfg, out, counter


def test_one_audit_folder_per_scenario_with_the_protocol_rows(audited):
    cfg, out, _ = audited
    assert sorted(p.name for p in (out / "audit").iterdir()) == ["random10"]
    summary = json.loads((out / "audit/random10/summary.json").read_text())
    labels = ["original", "retrain", "ft.paper+tuned", "salun.paper", "salun.tuned"]
    assert sorted(summary["methods"]) == sorted(labels)
    assert [m[0] for m in summary["config"]["methods"]] == labels  # the report's order
    assert all(summary["methods"][lab]["status"] == "ok" for lab in labels)
    assert summary["config"]["shadows"] == K and summary["config"]["seed"] == 5
    assert summary["config"]["forget_fraction"] == 0.1 and summary["forget_examples"] == 8
    assert summary["config"]["dataset"] == cfg.dataset
    assert summary["config"]["original"] == json.loads(json.dumps(asdict(cfg.original)))
    rows = summary["bench"]["rows"]
    assert rows["ft.paper+tuned"]["protocols"] == ["paper", "tuned"]
    assert rows["salun.tuned"]["protocols"] == ["tuned"] and rows["salun.paper"]["value"] == 0.01
    store = AuditStore(out / "audit/random10")
    for k in range(K):  # every record of every shadow, each in its own file
        for lab in (REFERENCE, *labels):
            assert store.record_path(k, lab).is_file(), (k, lab)
    # the bench's own records are untouched by the audit: no audit keys among them
    assert not [r for r in read_records(out) if r["key"].startswith("audit")]


def test_the_tuned_row_runs_the_searched_value(audited):
    cfg, out, _ = audited
    bench = {r["key"]: r for r in read_records(out)}
    chosen = bench["final.tuned.random10.s5.salun"]["lr_choice"]
    assert chosen["source"] == "searched" and chosen["value"] in (0.001, 0.003)
    store = AuditStore(out / "audit/random10")
    for k in range(K):
        assert store.get(k, "salun.tuned")["config"]["lr"] == chosen["value"]
        assert store.get(k, "salun.paper")["config"]["lr"] == 0.01
        assert store.get(k, "ft.paper+tuned")["config"]["lr"] == 0.01
        # the method runs on shadow k with shadow k's seed
        assert store.get(k, "salun.tuned")["config"]["seed"] == wf.shadow_seed(store_cfg(out), k)


def store_cfg(out):
    from salun.audit.config import config_from_dict as audit_from_dict

    return audit_from_dict(json.loads((out / "audit/random10/audit.json").read_text())["config"])


def test_each_shadow_original_is_trained_once_and_shared(audited):
    _, out, counter = audited
    acfg = store_cfg(out)
    bundle, forget = audit_inputs(acfg, salun.data.load_dataset(acfg.dataset))
    n_half = (N_TRAIN - 8) // 2
    audit_trainings = counter.trainings  # the audit's only (the bench trains elsewhere)
    for k in range(K):
        seed = wf.shadow_seed(acfg, k)
        sizes = sorted(n for n, s in audit_trainings if s == seed)
        # one original (D_f ∪ H_k) and one reference Retrain (H_k): never twice
        assert sizes == [n_half, n_half + 8], (k, sizes)
        assert [n for n, s in audit_trainings if s == seed + wf.INDEPENDENT_SEED_OFFSET] == [n_half]
        assert len(shadow_split(acfg, bundle, forget, k).retain) == n_half
        runs = [(name, orig) for name, orig, s in counter.methods if s == seed]
        assert sorted(name for name, _ in runs) == ["ft", "salun", "salun"]
        assert len({orig for _, orig in runs}) == 1  # every row unlearns the same original
    assert len(audit_trainings) == 3 * K
    assert counter.flips == [False] * (3 * K)  # synthetic data allows no flips: none asked


def test_rerun_does_no_new_work(audited, monkeypatch):
    cfg, out, _ = audited
    before = (out / "audit/random10/summary.json").read_text()

    def forbidden(*a, **k):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(wf, "train_supervised", forbidden)
    monkeypatch.setattr(salun.methods, "run_method", forbidden)
    monkeypatch.setattr(wf, "run_shadow", forbidden)
    run_bench(cfg, out, OPTS)
    after = json.loads((out / "audit/random10/summary.json").read_text())
    old = json.loads(before)
    assert after["methods"] == old["methods"]


def test_report_has_the_audit_table(audited, monkeypatch):
    from salun.report import plots, write_report

    _, out, _ = audited

    def no_png(fig, path):  # the plots are tested elsewhere; drawing them takes seconds
        plots.plt.close(fig)
        return Path(path)

    monkeypatch.setattr(plots, "_save", no_png)
    write_report(out)
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "## Per-example audit" in md and "Per-example audit" in html
    head = "| Method | Protocol | lr | Attack AUC [95 % CI] | TPR@1%FPR (%) [95 % CI] |"
    assert head in md
    lines = [x for x in md.splitlines() if x.startswith("| ")]
    by_row = {tuple(c.strip() for c in x.strip("|").split("|")[:2]): x for x in lines}
    for row in [("Original (no unlearning)", "—"), ("Retrain, independent seed (null check)", "—"),
                ("ft", "paper, tuned"), ("salun", "paper"), ("salun", "tuned")]:  # fmt: skip
        assert row in by_row, (row, list(by_row))
    summary = json.loads((out / "audit/random10/summary.json").read_text())
    auc = summary["methods"]["salun.tuned"]["auc"]
    assert f"{auc:.3f} [" in by_row[("salun", "tuned")]
    mia = summary["methods"]["salun.tuned"]["metrics"]["MIA"][0]
    assert f"{mia:.2f}±" in by_row[("salun", "tuned")]
    assert "only 3 shadow pairs" in md  # the audit's low-power warnings
    assert "The two evaluations measure different things" in md
    assert "<h2>Per-example audit</h2>" in html and "Attack AUC [95 % CI]" in html


def _without_run(summary):
    """The summary without wall-clock facts (the session, seconds per run)."""
    if isinstance(summary, dict):
        return {k: _without_run(v) for k, v in summary.items() if k not in ("run", "seconds")}
    return summary


def test_a_run_killed_in_the_audit_resumes_where_it_stopped(audited, tmp_path, monkeypatch):
    import shutil

    cfg, out, _ = audited
    want = json.loads((out / "audit/random10/summary.json").read_text())
    copy_ = tmp_path / "b"
    shutil.copytree(out, copy_)
    shutil.rmtree(copy_ / "audit")  # the bench's runs are done; the audit is not
    real = salun.methods.run_method
    calls = []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 5:  # shadow 1's second method (shadow 0 made 3 runs)
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(salun.methods, "run_method", dying)
    with pytest.raises(KeyboardInterrupt):
        run_bench(cfg, copy_, OPTS)
    monkeypatch.setattr(salun.methods, "run_method", real)
    store = AuditStore(copy_ / "audit/random10")  # what the kill left loads
    assert store.get(1, "ft.paper+tuned")["status"] == "ok"
    assert store.get(1, "salun.paper") is None and store.get(2, REFERENCE) is None
    counter = Counter(monkeypatch)
    run_bench(cfg, copy_, OPTS)
    # only what was missing ran: shadow 1's two SalUn rows, all of shadow 2
    acfg = store_cfg(copy_)
    assert {s for _, s in counter.trainings} == {
        wf.shadow_seed(acfg, 2),
        wf.shadow_seed(acfg, 2) + wf.INDEPENDENT_SEED_OFFSET,
    }
    assert len(counter.trainings) == 3
    by_seed = sorted((s - wf.shadow_seed(acfg, 0), n) for n, _, s in counter.methods)
    assert by_seed == [(1, "salun"), (1, "salun"), (2, "ft"), (2, "salun"), (2, "salun")]
    got = json.loads((copy_ / "audit/random10/summary.json").read_text())
    assert _without_run(got) == _without_run(want)  # deterministic on CPU: the same numbers


def test_shadows_are_executor_tasks_with_files_of_their_own(audited, tmp_path, monkeypatch):
    """One picklable ``audit`` task per shadow goes through the bench's executor (so Ray
    runs them in parallel), and no two tasks write the same file."""
    import pickle
    import shutil

    import salun.bench.runner as runner
    from salun.bench.executors import LocalExecutor

    cfg, out, _ = audited
    copy_ = tmp_path / "b"
    shutil.copytree(out, copy_)
    shutil.rmtree(copy_ / "audit")
    seen, written = [], {}

    class Recording(LocalExecutor):
        def run(self, tasks, on_done):
            for task in tasks:
                seen.append(pickle.loads(pickle.dumps(task)))  # what Ray ships to a worker
                root = copy_ / task.audit_dir
                before = {p for p in root.rglob("*") if p.is_file()}
                on_done(task, salun.bench.tasks.execute(seen[-1]))
                for p in {p for p in root.rglob("*") if p.is_file()} - before:
                    assert p not in written, (p, written.get(p))
                    written[p] = task.shadow

    monkeypatch.setattr(runner, "make_executor", lambda *a, **k: Recording())
    run_bench(cfg, copy_, OPTS)
    assert [(t.kind, t.key, t.shadow) for t in seen] == [
        ("audit", f"audit.random10.s{k}", k) for k in range(K)
    ]
    for p, k in written.items():  # each shadow wrote only under its own s<k>/ folders
        assert f"/s{k}/" in p.as_posix(), p
    got = json.loads((copy_ / "audit/random10/summary.json").read_text())
    want = json.loads((out / "audit/random10/summary.json").read_text())
    assert _without_run(got) == _without_run(want)


def test_audit_bench_cpu_preset():
    cfg = load_preset("audit-bench-cpu")
    assert cfg.dataset == "fashion-mnist:train=4000,test=2000" and cfg.arch == "mlp"
    assert cfg.audit.shadows >= 8 and cfg.audit.scenarios == ("random10",)
    assert cfg.seeds == (0,) and cfg.protocols == ("paper",)
    names = {m.method for m in cfg.methods}
    assert names == {"salun", "rl", "ft", "ga", "neggrad_plus", "scrub", "ssd"}
    # the same method settings as the standalone audit preset, whose cost it quotes
    from salun.audit import load_audit_config
    from salun.bench.presets import preset_path

    standalone = load_audit_config(preset_path("audit-cpu"))
    for m in cfg.methods:
        assert standalone.method(m.label) == (m.method, m.overrides), m.label
    assert standalone.original == cfg.original
