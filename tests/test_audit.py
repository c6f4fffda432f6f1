"""The per-example likelihood-ratio audit: its statistics against brute force, and the
workflow's two calibration points (Retrain vs Retrain ≈ 0.5; Original vs Retrain > 0.5)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import salun.audit.workflow as wf
from audit_fixtures import audit_recording_training
from salun.artifacts import load_model
from salun.audit import AuditStore, parse_audit_config, run_audit
from salun.audit.workflow import REFERENCE, audit_bundle, forget_indices, shadow_split
from salun.data.sources.synthetic import synthetic_bundle
from salun.errors import SalunError
from salun.metrics import predict_logits
from salun.metrics.audit import (
    audit_summary,
    lira_scores,
    logit_confidence,
    power_warnings,
    roc_auc,
    tpr_at_fpr,
)

ROOT = Path(__file__).resolve().parents[1]

# --- statistics -----------------------------------------------------------------------


def test_logit_confidence_is_log_odds_of_the_true_class():
    z = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 2])
    p = z.double().softmax(1)[torch.arange(2), y]
    assert torch.allclose(logit_confidence(z, y), torch.log(p / (1 - p)), atol=1e-12)
    # saturated softmax (p_y rounds to 1 in float32): still finite, = 100 − log 2
    big = logit_confidence(torch.tensor([[100.0, 0.0, 0.0]]), torch.tensor([0]))
    assert big.item() == pytest.approx(100.0 - math.log(2.0), abs=1e-9)


def test_roc_auc_matches_brute_force_and_sklearn_with_ties():
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 5, 40).astype(float)
    neg = rng.integers(0, 4, 30).astype(float)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(pos, neg) == pytest.approx(brute, abs=1e-12)
    sk = roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[pos, neg])
    assert roc_auc(pos, neg) == pytest.approx(sk, abs=1e-12)


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.2])
def test_tpr_at_fpr_is_the_best_threshold_within_the_fpr(fpr):
    rng = np.random.default_rng(1)
    pos = rng.normal(1.0, 1.0, 200).round(1)
    neg = rng.normal(0.0, 1.0, 300).round(1)
    best = 0.0
    for t in np.r_[pos, neg, -np.inf]:  # every distinct rule "score > t"
        if (neg > t).mean() <= fpr:
            best = max(best, (pos > t).mean())
    assert tpr_at_fpr(pos, neg, fpr) == pytest.approx(best, abs=1e-12)


def _gauss(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)


def test_lira_scores_leave_the_target_pair_out():
    u = np.array([[5.0, 1.0], [1.0, 2.0], [2.0, 4.0], [3.0, 0.0]])
    r = np.array([[0.0, 1.5], [-1.0, 0.5], [0.5, 0.0], [1.0, -2.0]])
    su, sr = lira_scores(u, r, variance="per_example")
    for i in range(4):
        rest = [j for j in range(4) if j != i]
        for e in range(2):
            mu_u, sd_u = u[rest, e].mean(), u[rest, e].std(ddof=1)
            mu_r, sd_r = r[rest, e].mean(), r[rest, e].std(ddof=1)
            for x, got in ((u[i, e], su[i, e]), (r[i, e], sr[i, e])):
                assert got == pytest.approx(_gauss(x, mu_u, sd_u) - _gauss(x, mu_r, sd_r))
    su_g, _ = lira_scores(u, r, variance="global")
    rest = [1, 2, 3]
    dev_u = u[rest] - u[rest].mean(0)
    sd_u = np.sqrt((dev_u**2).sum() / (2 * 2))
    dev_r = r[rest] - r[rest].mean(0)
    sd_r = np.sqrt((dev_r**2).sum() / (2 * 2))
    want = _gauss(u[0, 1], u[rest, 1].mean(), sd_u) - _gauss(u[0, 1], r[rest, 1].mean(), sd_r)
    assert su_g[0, 1] == pytest.approx(want)
    with pytest.raises(ValueError):
        lira_scores(u[:2], r[:2])


# --- the attack's settings against LiRA's arithmetic (tensorflow/privacy @ 03035d5,
# research/mi_lira_2021/plot.py generate_ours, lines 62-102) ------------------------------


def _lira_reference(u, r, *, location, variance):
    """LiRA's generate_ours per held-out pair, written out here: for each (example, query)
    a Gaussian per side centred on np.median (or the mean) of the other pairs; σ per
    (example, query) — ddof 1, salun's documented departure from the reference's np.std —
    or, with ``fixed``, np.std (ddof 0) of every 'in' (here: unlearned) value, used for
    both sides as the reference does (std_out = np.std(dat_in)); the ratios of the queries
    averaged (score.mean(1)). Inputs K × n × A; returns K × n scores of U_k and of R_k."""
    from scipy.stats import norm

    k, n, a = u.shape
    su, sr = np.zeros((k, n)), np.zeros((k, n))
    for i in range(k):
        rest = [j for j in range(k) if j != i]
        if variance == "fixed":
            flat = [u[j, e, q] for j in rest for e in range(n) for q in range(a)]
            m = sum(flat) / len(flat)
            sd_fixed = math.sqrt(sum((v - m) ** 2 for v in flat) / len(flat))
        for e in range(n):
            for q in range(a):
                side = {}
                for name, data in (("u", u), ("r", r)):
                    vals = sorted(data[j, e, q] for j in rest)
                    mid = len(vals) // 2
                    med = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
                    mean = sum(vals) / len(vals)
                    loc = med if location == "median" else mean
                    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
                    side[name] = (loc, sd_fixed if variance == "fixed" else sd)
                for data, out in ((u, su), (r, sr)):
                    x = data[i, e, q]
                    pr_in = -norm.logpdf(x, *side["u"])  # the reference's sign convention
                    pr_out = -norm.logpdf(x, *side["r"])
                    out[i, e] += -(pr_in - pr_out) / a  # higher = looks unlearned
    return su, sr


# outliers make median ≠ mean; the retrained side is much wider than the unlearned side,
# so a σ taken from the wrong side (or swapped Gaussians) moves every score
U_TABLE = np.array([[5.0, 1.0], [1.0, 2.0], [2.0, 9.0], [3.0, 0.0], [2.5, 1.5]])
R_TABLE = np.array([[0.0, 1.5], [-4.0, 0.5], [0.5, 0.0], [6.0, -2.0], [1.0, -8.0]])


@pytest.mark.parametrize("variance", ["per_example", "fixed"])
@pytest.mark.parametrize("location", ["mean", "median"])
def test_lira_scores_match_the_reference_arithmetic(location, variance):
    su, sr = lira_scores(U_TABLE, R_TABLE, location=location, variance=variance)
    want_u, want_r = _lira_reference(
        U_TABLE[:, :, None], R_TABLE[:, :, None], location=location, variance=variance
    )
    assert np.allclose(su, want_u, rtol=1e-12, atol=1e-12)
    assert np.allclose(sr, want_r, rtol=1e-12, atol=1e-12)


def test_median_location_is_not_the_mean():
    # pair 0 held out: the unlearned side of example 1 fits on 2, 9, 0, 1.5 -> median 1.75
    # (mean 3.125); retrained 0.5, 0, -2, -8 -> median -1 (mean -2.375); σ per example
    su, _ = lira_scores(U_TABLE, R_TABLE, location="median", variance="per_example")
    u_rest, r_rest = np.array([2.0, 9.0, 0.0, 1.5]), np.array([0.5, 0.0, -2.0, -8.0])
    want = _gauss(1.0, 1.75, u_rest.std(ddof=1)) - _gauss(1.0, -1.0, r_rest.std(ddof=1))
    assert su[0, 1] == pytest.approx(want, rel=1e-12)
    mean_based = _gauss(1.0, 3.125, u_rest.std(ddof=1)) - _gauss(1.0, -2.375, r_rest.std(ddof=1))
    assert abs(want - mean_based) > 0.1  # the table tells the two apart


def test_fixed_variance_is_the_std_of_every_unlearned_score():
    # pair 4 held out: σ = population std of the 8 unlearned values of pairs 0..3, both sides
    su, sr = lira_scores(U_TABLE, R_TABLE, location="mean", variance="fixed")
    rest = [5.0, 1.0, 1.0, 2.0, 2.0, 9.0, 3.0, 0.0]
    m = sum(rest) / 8
    sd = math.sqrt(sum((v - m) ** 2 for v in rest) / 8)  # 2.5739...
    mu_u, mu_r = (5 + 1 + 2 + 3) / 4, (0 - 4 + 0.5 + 6) / 4
    # one σ for both Gaussians: the ratio is linear in φ
    want = ((2.5 - mu_r) ** 2 - (2.5 - mu_u) ** 2) / (2 * sd**2)
    assert su[4, 0] == pytest.approx(want, rel=1e-12)
    x = 1.0  # R_4 on example 0
    assert sr[4, 0] == pytest.approx(((x - mu_r) ** 2 - (x - mu_u) ** 2) / (2 * sd**2), rel=1e-12)


def test_mirror_queries_average_the_ratio_of_each_query():
    rng = np.random.default_rng(3)
    u = rng.normal(1.0, 1.0, (6, 4, 2)) + np.array([0.0, 3.0])  # the mirror shifted by 3
    r = rng.normal(0.0, 2.0, (6, 4, 2))
    for location, variance in [("mean", "per_example"), ("median", "fixed")]:
        su, sr = lira_scores(u, r, location=location, variance=variance)
        want_u, want_r = _lira_reference(u, r, location=location, variance=variance)
        assert np.allclose(su, want_u, rtol=1e-12) and np.allclose(sr, want_r, rtol=1e-12)
    # the pooled σ of ``global`` runs over examples and queries alike
    su, _ = lira_scores(u, r, variance="global")
    rest = np.arange(1, 6)
    total = 0.0
    dev_u, dev_r = u[rest] - u[rest].mean(0), r[rest] - r[rest].mean(0)
    # (K − 2) degrees of freedom × 4 examples × 2 queries
    sd_u, sd_r = np.sqrt((dev_u**2).sum() / 32), np.sqrt((dev_r**2).sum() / 32)
    for q in range(2):
        x = u[0, 2, q]
        total += _gauss(x, u[rest, 2, q].mean(), sd_u) - _gauss(x, r[rest, 2, q].mean(), sd_r)
    assert su[0, 2] == pytest.approx(total / 2, rel=1e-12)


def test_lira_scores_refuse_unknown_settings():
    with pytest.raises(ValueError, match="location must be one of mean, median"):
        lira_scores(U_TABLE, R_TABLE, location="mode")
    with pytest.raises(ValueError, match="variance must be one of"):
        lira_scores(U_TABLE, R_TABLE, variance="local")
    with pytest.raises(ValueError, match="same shape"):
        lira_scores(U_TABLE[:, :, None], R_TABLE)


def test_summary_separable_and_null_scores():
    rng = np.random.default_rng(2)
    sep = audit_summary(rng.normal(10, 1, (20, 60)), rng.normal(0, 1, (20, 60)), n_boot=100)
    assert sep["auc"] == 1.0 and sep["auc_ci"] == [1.0, 1.0]
    assert sep["tpr"]["0.01"] == 1.0
    null = audit_summary(rng.normal(0, 1, (20, 60)), rng.normal(0, 1, (20, 60)), n_boot=300)
    lo, hi = null["auc_ci"]
    assert lo < 0.5 < hi and hi - lo < 0.1
    assert lo <= null["auc"] <= hi
    shifted = audit_summary(rng.normal(0.5, 1, (20, 60)), rng.normal(0, 1, (20, 60)), n_boot=300)
    assert shifted["auc_ci"][0] > 0.55  # Φ(0.5/√2) ≈ 0.64


def test_power_warnings():
    assert power_warnings(64, 1000) == []
    few = power_warnings(4, 5000)
    assert len(few) == 1 and "4 shadow pairs" in few[0]
    small = power_warnings(16, 20)  # 320 negatives: too few for 1 % and 0.1 %
    assert len(small) == 2 and "1 % FPR" in small[0] and "0.1 % FPR" in small[1]


# --- workflow -------------------------------------------------------------------------

RAW = {
    "name": "tiny",
    "dataset": "synthetic",
    "arch": "mlp",
    "width": 0.25,
    "forget_count": 30,
    "original": {"epochs": 20, "batch_size": 32, "lr": 0.1, "weight_decay": 0.0},
    "shadows": 8,
    "bootstrap": 300,
    "methods": {"original": {}, "retrain": {}},
}


@pytest.fixture(scope="module")
def tiny_bundle():
    # noisy enough that the MLP must memorise individual training samples
    return synthetic_bundle(n_train=160, n_test=60, num_classes=4, size=8, noise=150.0)


@pytest.fixture(scope="module")
def audited(tmp_path_factory, tiny_bundle):
    return audit_recording_training(RAW, tmp_path_factory.mktemp("audit"), tiny_bundle)


def test_retrain_vs_retrain_is_chance(audited):
    _, _, summary, _ = audited
    row = summary["methods"]["retrain"]
    lo, hi = row["auc_ci"]
    assert lo <= 0.5 <= hi, row
    assert abs(row["auc"] - 0.5) < 0.1


def test_original_vs_retrain_is_detected_on_a_memorising_model(audited):
    _, _, summary, _ = audited
    row = summary["methods"]["original"]
    assert row["metrics"]["RA"][0] == 100.0  # it memorises its training data
    assert row["auc_ci"][0] > 0.65, row
    assert row["auc"] > summary["methods"]["retrain"]["auc_ci"][1]
    assert row["tpr"]["0.01"] > 0.01  # above chance at its FPR


def test_shadows_train_on_the_right_data(audited, tiny_bundle):
    cfg, out, _, calls = audited
    bundle = audit_bundle(cfg, tiny_bundle)
    forget = forget_indices(cfg, len(bundle.train))
    assert len(forget) == 30
    f_imgs = {bytes(x.numpy()) for x in bundle.train.images[forget]}
    halves = []
    for k in range(cfg.shadows):
        split = shadow_split(cfg, bundle, forget, k)
        assert len(np.intersect1d(split.retain, forget)) == 0
        assert len(split.retain) == (160 - 30) // 2
        halves.append(tuple(split.retain))
        seed = wf.shadow_seed(cfg, k)
        sets = {s: data for data, s in calls}
        # reference Retrain and the original share the seed: only D_f differs
        mine = [data for data, s in calls if s == seed]
        assert sorted(len(d) for d in mine) == [65, 95]
        ref = min(mine, key=len)
        assert not f_imgs & {bytes(x.numpy()) for x in ref.images}
        assert len(sets[seed + wf.INDEPENDENT_SEED_OFFSET]) == 65
    assert len(set(halves)) == cfg.shadows  # every shadow its own half
    # the "original" row's φ is the stored shadow original's, on D_f
    model, _ = load_model(AuditStore(out).original_dir(3))
    fset = bundle.train.subset(forget)
    phi = logit_confidence(predict_logits(model, fset, "cpu"), fset.labels)
    rec = AuditStore(out).get(3, "original")
    assert np.allclose(rec["phi"], phi.numpy(), atol=1e-9)
    assert AuditStore(out).get(3, REFERENCE)["metrics"]["RA"] == 100.0


def test_resume_reuses_shadows_and_adds_methods(audited, tiny_bundle, monkeypatch):
    cfg, out, summary, _ = audited

    def no_training(*a, **k):
        raise AssertionError("a finished shadow was trained again")

    monkeypatch.setattr(wf, "train_supervised", no_training)
    again = run_audit(cfg, out, quiet=True, bundle=tiny_bundle)
    assert again["methods"]["original"]["auc"] == summary["methods"]["original"]["auc"]
    import salun.methods.ssd  # noqa: F401  (registers ssd)

    more = parse_audit_config({**RAW, "methods": {**RAW["methods"], "ssd": {"alpha": 1.0}}})
    res = run_audit(more, out, quiet=True, bundle=tiny_bundle)  # originals loaded from disk
    assert res["methods"]["ssd"]["status"] == "ok"
    report = (out / "report.md").read_text()
    assert "| ssd |" in report and "null check" in report
    changed = parse_audit_config({**RAW, "methods": {"ssd": {"alpha": 2.0}}})
    with pytest.raises(SalunError, match="other settings"):
        run_audit(changed, out, quiet=True, bundle=tiny_bundle)
    with pytest.raises(SalunError, match="other shadows"):
        run_audit(replace(cfg, seed=1), out, quiet=True, bundle=tiny_bundle)


def test_mirror_queries_are_refused_on_records_made_without_them(audited):
    cfg, out, _, _ = audited
    from salun.audit import summarise

    with pytest.raises(SalunError, match="holds no mirrored queries"):
        summarise(replace(cfg, queries="mirror"), AuditStore(out))
    # the attack's other settings reuse the same records, and the summary names them
    other = summarise(replace(cfg, location="median", variance="fixed"), AuditStore(out))
    assert other["attack"] == {
        "queries": "single",
        "location": "median",
        "variance": "fixed",
        "forget_set": "fixed D_f, leave one pair out",
    }


def test_mirror_queries_on_a_dataset_without_flips_write_nothing(tmp_path, tiny_bundle):
    cfg = parse_audit_config({**RAW, "queries": "mirror"})
    with pytest.raises(SalunError, match="does not allow horizontal flips"):
        run_audit(cfg, tmp_path / "o", quiet=True, bundle=tiny_bundle)
    assert not (tmp_path / "o").exists()


def test_mirror_queries_end_to_end(tmp_path):
    """LiRA's two queries: each record holds φ of D_f and of its mirror images, and the
    summary's AUC is the reference's ratio averaged over the two queries."""
    bundle = replace(synthetic_bundle(n_train=48, n_test=20, num_classes=2, size=4), flip=True)
    # K = 4: each fit sees 3 pairs, where the median differs from the mean (with 2 it would not)
    raw = {**RAW, "forget_count": 6, "shadows": 4, "bootstrap": 10, "queries": "mirror"}
    raw["original"] = {"epochs": 2, "batch_size": 16, "lr": 0.05}
    raw["methods"] = {"original": {}}
    cfg = parse_audit_config({**raw, "location": "median", "variance": "fixed"})
    summary = run_audit(cfg, tmp_path / "o", quiet=True, bundle=bundle)
    store = AuditStore(tmp_path / "o")
    sub = audit_bundle(cfg, bundle)
    fset = sub.train.subset(forget_indices(cfg, len(sub.train)))
    model, _ = load_model(store.original_dir(1))
    flipped = fset.images.flip(3)  # N×C×H×W: mirror the width axis
    from salun.data import ImageDataset

    want = logit_confidence(
        predict_logits(model, ImageDataset(flipped, fset.labels), "cpu"), fset.labels
    )
    rec = store.get(1, "original")
    assert np.allclose(rec["phi_mirror"], want.numpy(), atol=1e-9)
    assert not np.allclose(rec["phi_mirror"], rec["phi"])
    stack = {
        lab: np.array([[store.get(k, lab)[q] for q in ("phi", "phi_mirror")] for k in range(4)])
        for lab in ("original", REFERENCE)
    }
    u, r = (stack[lab].transpose(0, 2, 1) for lab in ("original", REFERENCE))  # K × n × 2
    su, sr = _lira_reference(u, r, location="median", variance="fixed")
    assert summary["methods"]["original"]["auc"] == pytest.approx(
        roc_auc_score(np.r_[np.ones(su.size), np.zeros(sr.size)], np.r_[su.ravel(), sr.ravel()])
    )
    assert summary["attack"]["queries"] == "mirror"
    report = (tmp_path / "o" / "report.md").read_text()
    assert "queries **mirror**, location **median**, variance **fixed**" in report


def test_attack_settings_are_statistics_not_shadows():
    base = parse_audit_config(RAW)
    for change in ({"location": "median"}, {"queries": "mirror"}, {"variance": "fixed"}):
        assert parse_audit_config({**RAW, **change}).shadow_hash() == base.shadow_hash()
    # the committed audits, made before location / queries existed, keep their hash
    from salun.audit.config import config_from_dict

    for folder in ("audit/fashion-mnist-random10", "audit-bench/audit/random10"):
        head = json.loads((ROOT / "benchmarks" / folder / "audit.json").read_text())
        assert "location" not in head["config"]
        old = config_from_dict(head["config"])
        assert (old.location, old.queries) == ("mean", "single")
        assert old.shadow_hash() == head["shadow_hash"]


def test_committed_audit_is_what_the_default_settings_compute():
    """benchmarks/audit's table was made with the defaults: recomputed from its records it
    is unchanged; and the figures docs/audit.md quotes for the other settings are these
    records' (benchmarks/audit/settings.py prints them all)."""
    from salun.audit import summarise
    from salun.audit.config import config_from_dict

    root = ROOT / "benchmarks/audit/fashion-mnist-random10"
    cfg = config_from_dict(json.loads((root / "audit.json").read_text())["config"])
    store = AuditStore(root)
    committed = json.loads((root / "summary.json").read_text())["methods"]
    now = summarise(replace(cfg, bootstrap=10), store)["methods"]  # point figures only
    for label, row in committed.items():
        assert now[label]["auc"] == pytest.approx(row["auc"], abs=1e-12), label
        assert now[label]["tpr"] == pytest.approx(row["tpr"], abs=1e-12), label
    fixed = summarise(replace(cfg, variance="fixed", bootstrap=10), store)["methods"]
    per_ex = summarise(replace(cfg, variance="per_example", bootstrap=10), store)["methods"]
    assert round(fixed["ft"]["auc"], 3) == 0.697 and round(now["ft"]["auc"], 3) == 0.765
    assert round(fixed["salun"]["auc"], 3) == 0.969 and round(now["salun"]["auc"], 3) == 0.978
    assert round(100 * per_ex["ft"]["tpr"]["0.01"], 1) == 29.0
    assert round(100 * now["ft"]["tpr"]["0.01"], 1) == 20.8


@pytest.mark.parametrize(
    "key, value", [("location", "mode"), ("queries", "shift"), ("variance", "local")]
)
def test_bad_attack_setting_is_one_clear_error(key, value):
    with pytest.raises(SalunError, match=f"{key} must be one of .*, got '{value}'"):
        parse_audit_config({**RAW, key: value})


def test_config_errors():
    with pytest.raises(SalunError, match="unknown key"):
        parse_audit_config({**RAW, "shadow": 3})
    with pytest.raises(SalunError, match="pseudo-method"):
        parse_audit_config({**RAW, "methods": {"retrain": {"epochs": 3}}})
    with pytest.raises(SalunError, match="seed"):
        parse_audit_config({**RAW, "methods": {"ft": {"seed": 3}}})
    with pytest.raises(SalunError, match="at least 3"):
        parse_audit_config({**RAW, "shadows": 2})
    with pytest.raises(SalunError):
        parse_audit_config({**RAW, "methods": {"ft": {"no_such": 1}}})


def test_cli_writes_report_with_low_power_warning(tmp_path):
    from salun.cli import main

    cfg = tmp_path / "a.yaml"
    raw = {**RAW, "dataset": "synthetic:64", "forget_count": 8, "shadows": 3, "bootstrap": 20}
    raw["original"] = {"epochs": 3, "batch_size": 32, "lr": 0.05}
    raw["methods"] = {"original": {}}
    cfg.write_text(json.dumps(raw))  # JSON is YAML
    assert main(["audit", "--config", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    report = (tmp_path / "o" / "report.md").read_text()
    assert "Original (no unlearning)" in report and "only 3 shadow pairs" in report
    args = ["audit", "--config", str(cfg), "--out", str(tmp_path / "o"), "--methods", "x"]
    assert main(args) == 2


def test_cli_attack_flags_recompute_without_training(tmp_path, monkeypatch):
    from salun.cli import main

    cfg = tmp_path / "a.yaml"
    raw = {**RAW, "dataset": "synthetic:64", "forget_count": 8, "shadows": 4, "bootstrap": 20}
    raw["original"] = {"epochs": 2, "batch_size": 32, "lr": 0.05}
    raw["methods"] = {"original": {}}
    cfg.write_text(json.dumps(raw))
    out = tmp_path / "o"
    base = ["audit", "--config", str(cfg), "--out", str(out), "--quiet"]
    assert main(base) == 0
    first = json.loads((out / "summary.json").read_text())

    def no_training(*a, **k):
        raise AssertionError("changing the attack's settings retrained a model")

    monkeypatch.setattr(wf, "train_supervised", no_training)
    assert main([*base, "--location", "median", "--variance", "fixed"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["config"]["location"] == "median" and again["config"]["variance"] == "fixed"
    assert again["attack"]["location"] == "median" and first["attack"]["location"] == "mean"
    head = json.loads((out / "audit.json").read_text())["config"]
    assert (head["location"], head["variance"]) == ("median", "fixed")
    # the statistic did change: the same records under the other fit
    assert again["methods"]["original"]["auc"] != first["methods"]["original"]["auc"]
    # synthetic data allows no flips: one clear error, the finished summary untouched
    assert main([*base, "--queries", "mirror"]) == 2
    assert json.loads((out / "summary.json").read_text()) == again


def test_audit_cpu_preset_parses():
    import salun.methods.neggrad_plus  # noqa: F401  (registers the new methods)
    import salun.methods.scrub  # noqa: F401
    import salun.methods.ssd  # noqa: F401
    from salun.audit import load_audit_config
    from salun.bench.presets import preset_path

    cfg = load_audit_config(preset_path("audit-cpu"))
    assert cfg.shadows >= 8 and cfg.dataset == "fashion-mnist"
    names = {name for _, name, _ in cfg.methods}
    assert {"original", "retrain", "salun", "rl", "ft", "ga"} <= names
    assert {"neggrad_plus", "scrub", "ssd"} <= names
