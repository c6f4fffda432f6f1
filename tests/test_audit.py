"""The per-example likelihood-ratio audit: its statistics against brute force, and the
workflow's two calibration points (Retrain vs Retrain ≈ 0.5; Original vs Retrain > 0.5)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import salun.audit.workflow as wf
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
    out = tmp_path_factory.mktemp("audit")
    cfg = parse_audit_config(RAW)
    calls = []
    real = wf.train_supervised

    def spy(model, data, recipe, **kw):
        calls.append((data, recipe.seed))
        return real(model, data, recipe, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wf, "train_supervised", spy)
        summary = run_audit(cfg, out, quiet=True, bundle=tiny_bundle)
    return cfg, out, summary, calls


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
