"""U-LiRA's protocol in the audit (``forget_sets: per_shadow``; Hayes et al. 2024,
arXiv 2403.01218): every shadow trains on a random half of the subset and forgets a fresh
random set drawn from that half; a forgotten example is scored against the unlearned
models that forgot it and the Retrains that never trained on it. Expected values are
computed here with plain loops over the recorded sets, never with the helpers under test."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import salun.audit.workflow as wf
from audit_fixtures import audit_recording_training
from salun.audit import AuditStore, parse_audit_config, run_audit, summarise
from salun.audit.ulira import fitting_values, per_shadow_scores
from salun.audit.workflow import REFERENCE, audit_bundle, shadow_split
from salun.data.sources.synthetic import synthetic_bundle
from salun.errors import SalunError

N_TRAIN, FORGET, K = 160, 30, 8

RAW = {
    "name": "tiny-ulira",
    "dataset": "synthetic",
    "arch": "mlp",
    "width": 0.25,
    "forget_count": FORGET,
    "forget_sets": "per_shadow",
    "original": {"epochs": 20, "batch_size": 32, "lr": 0.1, "weight_decay": 0.0},
    "shadows": K,
    "bootstrap": 200,
    "methods": {"original": {}, "retrain": {}},
}


@pytest.fixture(scope="module")
def tiny_bundle():
    # noisy enough that the MLP must memorise individual training samples
    return synthetic_bundle(n_train=N_TRAIN, n_test=60, num_classes=4, size=8, noise=150.0)


@pytest.fixture(scope="module")
def audited(tmp_path_factory, tiny_bundle):
    return audit_recording_training(RAW, tmp_path_factory.mktemp("ulira"), tiny_bundle)


def _splits(cfg, bundle):
    sub = audit_bundle(cfg, bundle)
    dummy = np.arange(FORGET)  # per_shadow takes only the size from it
    return [shadow_split(cfg, sub, dummy, k) for k in range(cfg.shadows)]


# --- the sets -------------------------------------------------------------------------


def test_each_shadow_forgets_a_fresh_set_drawn_from_its_own_half(tiny_bundle):
    cfg = parse_audit_config(RAW)
    splits = _splits(cfg, tiny_bundle)
    for s in splits:
        train = set(s.forget.tolist()) | set(s.retain.tolist())
        assert len(s.forget) == FORGET  # the configured size
        assert len(train) == N_TRAIN // 2  # a half of the whole subset
        assert set(s.forget.tolist()) <= train  # drawn from its own training members
        assert not set(s.forget.tolist()) & set(s.retain.tolist())
        assert list(s.forget) == sorted(s.forget)
    forgets = {tuple(s.forget.tolist()) for s in splits}
    halves = {tuple(sorted(set(s.forget.tolist()) | set(s.retain.tolist()))) for s in splits}
    assert len(forgets) == K and len(halves) == K  # different in every shadow
    union = set().union(*(set(s.forget.tolist()) for s in splits))
    assert len(union) > 2 * FORGET  # not one D_f: the sets spread over the subset
    # reproducible from the seed, and another seed draws other sets
    again = _splits(parse_audit_config(RAW), tiny_bundle)
    assert all(np.array_equal(a.forget, b.forget) for a, b in zip(splits, again, strict=True))
    assert all(np.array_equal(a.retain, b.retain) for a, b in zip(splits, again, strict=True))
    other = _splits(parse_audit_config({**RAW, "seed": 1}), tiny_bundle)
    assert not np.array_equal(other[0].forget, splits[0].forget)


def test_fixed_mode_keeps_one_forget_set_outside_every_half(tiny_bundle):
    cfg = parse_audit_config({**RAW, "forget_sets": "fixed"})
    sub = audit_bundle(cfg, tiny_bundle)
    forget = wf.forget_indices(cfg, len(sub.train))
    for k in range(K):
        s = shadow_split(cfg, sub, forget, k)
        assert np.array_equal(s.forget, forget)
        assert len(s.retain) == (N_TRAIN - FORGET) // 2
    # the default is fixed, and fixed audits keep their folder's hash (per_shadow does not)
    assert parse_audit_config({k: v for k, v in RAW.items() if k != "forget_sets"}) == cfg
    assert cfg.shadow_hash() != parse_audit_config(RAW).shadow_hash()


def test_shadows_train_on_their_half_and_retrain_without_their_forget_set(audited, tiny_bundle):
    cfg, out, _, calls = audited
    store = AuditStore(out)
    sub = audit_bundle(cfg, tiny_bundle)
    imgs = [bytes(x.numpy()) for x in sub.train.images]
    for k, s in enumerate(_splits(cfg, tiny_bundle)):
        ref = store.get(k, REFERENCE)
        assert ref["forget"] == s.forget.tolist() and ref["retain"] == s.retain.tolist()
        seed = wf.shadow_seed(cfg, k)
        mine = sorted((d for d, sd in calls if sd == seed), key=len)
        assert [len(d) for d in mine] == [N_TRAIN // 2 - FORGET, N_TRAIN // 2]
        retrained, original = ({bytes(x.numpy()) for x in d.images} for d in mine)
        assert retrained == {imgs[i] for i in s.retain}
        assert original == {imgs[i] for i in np.union1d(s.forget, s.retain)}
        assert len(ref["phi"]) == FORGET and len(ref["phi_all"]) == N_TRAIN
        # R_k's φ on its own forget set is its φ on those examples of the subset
        assert np.allclose(ref["phi"], np.asarray(ref["phi_all"])[s.forget])
        assert len(store.get(k, "original")["phi"]) == FORGET


# --- the scores -----------------------------------------------------------------------


def _records(out, label):
    store = AuditStore(out)
    refs = [store.get(k, REFERENCE) for k in range(K)]
    recs = [store.get(k, label) for k in range(K)]
    return refs, recs


def _expected_lists(refs, recs, k):
    """Per target x of shadow k, written out: the unlearned φ of every other shadow whose
    recorded forget set holds x, and the Retrain φ of every other shadow whose recorded
    retain set does not."""
    lists = []
    for x in refs[k]["forget"]:
        ins, outs = [], []
        for j in range(K):
            if j == k:
                continue
            if x in refs[j]["forget"]:
                ins.append(recs[j]["phi"][refs[j]["forget"].index(x)])
            if x not in refs[j]["retain"]:
                outs.append(refs[j]["phi_all"][x])
        lists.append((ins, outs))
    return lists


def _gauss(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)


def _sd(v):
    m = sum(v) / len(v)
    return math.sqrt(sum((a - m) ** 2 for a in v) / (len(v) - 1))


def _inputs(refs, recs):
    return (
        [np.asarray(r["phi"]) for r in recs],
        np.asarray([r["phi_all"] for r in refs]),
        [np.asarray(r["forget"]) for r in refs],
        [np.asarray(r["retain"]) for r in refs],
    )


def test_a_target_is_fitted_on_the_shadows_that_forgot_it_and_those_that_never_saw_it(
    audited,
):
    _, out, _, _ = audited
    refs, recs = _records(out, "original")
    phi_u, phi_r, forget, retain = _inputs(refs, recs)
    for k in range(K):
        u_fit, r_fit = fitting_values(k, phi_u, phi_r, forget, retain)
        for i, (ins, outs) in enumerate(_expected_lists(refs, recs, k)):
            got_in = u_fit[:, i, 0][~np.isnan(u_fit[:, i, 0])]
            got_out = r_fit[:, i, 0][~np.isnan(r_fit[:, i, 0])]
            assert got_in.tolist() == ins  # the same values, from the same shadows, in order
            assert got_out.tolist() == outs


@pytest.mark.parametrize("location", ["mean", "median"])
def test_per_example_scores_are_the_ratio_of_those_two_gaussians(audited, location):
    _, out, _, _ = audited
    refs, recs = _records(out, "original")
    su, sr, scored = per_shadow_scores(
        *_inputs(refs, recs), variance="per_example", location=location
    )
    n_scored = 0
    for k in range(K):
        for i, (ins, outs) in enumerate(_expected_lists(refs, recs, k)):
            if len(ins) < 2 or len(outs) < 2:
                assert not scored[k, i] and np.isnan(su[k, i]) and np.isnan(sr[k, i])
                continue
            n_scored += 1
            centre = np.median if location == "median" else np.mean
            mu_u, mu_r = float(centre(ins)), float(centre(outs))
            sd_u, sd_r = max(_sd(ins), 1e-3), max(_sd(outs), 1e-3)
            x = refs[k]["forget"][i]
            for phi, got in ((recs[k]["phi"][i], su[k, i]), (refs[k]["phi_all"][x], sr[k, i])):
                want = _gauss(phi, mu_u, sd_u) - _gauss(phi, mu_r, sd_r)
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert n_scored == scored.sum() and n_scored > 20  # the tiny audit scores enough


def test_global_variance_pools_over_the_scored_targets_of_the_pair(audited):
    _, out, _, _ = audited
    refs, recs = _records(out, "original")
    su, _, scored = per_shadow_scores(*_inputs(refs, recs), variance="global")
    k = int(np.argmax(scored.sum(1)))
    lists = _expected_lists(refs, recs, k)
    side = {}
    for s in (0, 1):  # 0: unlearned, 1: retrained
        num = den = 0.0
        for i, pair in enumerate(lists):
            if scored[k, i]:
                v = pair[s]
                m = sum(v) / len(v)
                num += sum((a - m) ** 2 for a in v)
                den += len(v) - 1
        side[s] = math.sqrt(num / den)
    i = int(np.flatnonzero(scored[k])[0])
    ins, outs = lists[i]
    phi = recs[k]["phi"][i]
    want = _gauss(phi, sum(ins) / len(ins), side[0]) - _gauss(phi, sum(outs) / len(outs), side[1])
    assert su[k, i] == pytest.approx(want, rel=1e-9)


def test_fixed_variance_is_the_std_of_every_unlearned_fit_of_the_pair(audited):
    _, out, _, _ = audited
    refs, recs = _records(out, "original")
    su, sr, scored = per_shadow_scores(*_inputs(refs, recs), variance="fixed")
    k = int(np.argmax(scored.sum(1)))
    lists = _expected_lists(refs, recs, k)
    flat = [v for i, (ins, _) in enumerate(lists) if scored[k, i] for v in ins]
    m = sum(flat) / len(flat)
    sd = math.sqrt(sum((v - m) ** 2 for v in flat) / len(flat))  # ddof 0, both sides
    for i in np.flatnonzero(scored[k])[:3]:
        ins, outs = lists[i]
        mu_u, mu_r = sum(ins) / len(ins), sum(outs) / len(outs)
        x = refs[k]["phi_all"][refs[k]["forget"][i]]  # R_k on the target
        assert sr[k, i] == pytest.approx(_gauss(x, mu_u, sd) - _gauss(x, mu_r, sd), rel=1e-9)


def test_summary_scores_the_pairs_and_names_the_protocol(audited):
    cfg, out, summary, _ = audited
    refs, recs = _records(out, "original")
    su, sr, scored = per_shadow_scores(*_inputs(refs, recs), variance="global")
    pos, neg = su[scored], sr[scored]
    want = roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg])
    row = summary["methods"]["original"]
    assert row["auc"] == pytest.approx(want, abs=1e-12)
    assert row["scored"] == scored.sum()
    lo, hi = row["auc_ci"]
    assert lo <= row["auc"] <= hi
    assert summary["attack"]["forget_set"].startswith("per_shadow")
    fs = summary["forget_sets"]
    assert fs["mode"] == "per_shadow" and fs["size"] == FORGET and fs["subset"] == N_TRAIN
    # the coverage counted here with a loop over the recorded sets
    counted = sum(
        len(ins) >= 2 and len(outs) >= 2
        for k in range(K)
        for ins, outs in _expected_lists(refs, recs, k)
    )
    assert fs["scored"] == counted and fs["targets"] == K * FORGET
    assert any("not scored" in w for w in summary["warnings"])
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["config"]["forget_sets"] == "per_shadow"
    assert on_disk["forget_sets"] == fs
    report = (out / "report.md").read_text()
    assert "forget set **per shadow**" in report and "fresh random forget set" in report


def test_original_is_told_from_retrain_and_the_null_row_is_not(audited):
    _, _, summary, _ = audited
    orig, null = summary["methods"]["original"], summary["methods"]["retrain"]
    assert orig["metrics"]["RA"][0] == 100.0  # the shadows memorise their halves
    assert orig["auc_ci"][0] > 0.65, orig
    assert null["auc_ci"][0] <= 0.5 <= null["auc_ci"][1], null
    assert orig["auc"] > null["auc_ci"][1]


def test_rerun_reuses_the_shadows_and_the_attack_refits(audited, tiny_bundle, monkeypatch):
    cfg, out, summary, _ = audited

    def no_training(*a, **k):
        raise AssertionError("a finished shadow was trained again")

    monkeypatch.setattr(wf, "train_supervised", no_training)
    again = run_audit(cfg, out, quiet=True, bundle=tiny_bundle)
    assert again["methods"]["original"]["auc"] == summary["methods"]["original"]["auc"]
    other = summarise(replace(cfg, variance="fixed", location="median"), AuditStore(out))
    assert other["methods"]["original"]["auc"] != summary["methods"]["original"]["auc"]
    with pytest.raises(SalunError, match="other shadows"):
        run_audit(replace(cfg, forget_sets="fixed"), out, quiet=True, bundle=tiny_bundle)


# --- impossible combinations ----------------------------------------------------------


def test_unknown_forget_sets_value_is_one_clear_error():
    with pytest.raises(SalunError, match="forget_sets must be one of fixed, per_shadow"):
        parse_audit_config({**RAW, "forget_sets": "fresh"})


def test_a_forget_set_that_fills_the_half_is_refused_before_anything_is_written(
    tmp_path, tiny_bundle
):
    cfg = parse_audit_config({**RAW, "forget_count": N_TRAIN // 2})
    with pytest.raises(SalunError, match="fewer than 80, got 80"):
        run_audit(cfg, tmp_path / "o", quiet=True, bundle=tiny_bundle)
    assert not (tmp_path / "o").exists()


def test_too_few_shadows_to_score_any_target_is_refused(tmp_path, tiny_bundle):
    # 3 shadows, forget sets of 2 in 160: no example is forgotten by two other shadows
    cfg = parse_audit_config({**RAW, "forget_count": 2, "shadows": 3})
    with pytest.raises(SalunError, match="raise shadows"):
        run_audit(cfg, tmp_path / "o", quiet=True, bundle=tiny_bundle)
    assert not (tmp_path / "o").exists()


def test_fixed_folder_is_not_summarised_as_per_shadow(tmp_path):
    bundle = synthetic_bundle(n_train=40, n_test=12, num_classes=2, size=4)
    raw = {**RAW, "forget_count": 4, "shadows": 3, "bootstrap": 10, "forget_sets": "fixed"}
    raw["original"] = {"epochs": 1, "batch_size": 16, "lr": 0.05}
    raw["methods"] = {"original": {}}
    cfg = parse_audit_config(raw)
    summary = run_audit(cfg, tmp_path / "o", quiet=True, bundle=bundle)
    assert summary["forget_sets"] == {"mode": "fixed"}
    assert summary["attack"]["forget_set"] == "fixed D_f, leave one pair out"
    assert "forget set fixed" in (tmp_path / "o" / "report.md").read_text()
    with pytest.raises(SalunError, match="made with forget_sets: fixed"):
        summarise(replace(cfg, forget_sets="per_shadow"), AuditStore(tmp_path / "o"))


def test_mirror_queries_with_per_shadow_sets(tmp_path):
    bundle = replace(synthetic_bundle(n_train=40, n_test=12, num_classes=2, size=4), flip=True)
    raw = {**RAW, "forget_count": 8, "shadows": 6, "bootstrap": 10, "queries": "mirror"}
    raw["original"] = {"epochs": 1, "batch_size": 16, "lr": 0.05}
    raw["methods"] = {"original": {}}
    summary = run_audit(parse_audit_config(raw), tmp_path / "o", quiet=True, bundle=bundle)
    store = AuditStore(tmp_path / "o")
    ref = store.get(0, REFERENCE)
    assert len(ref["phi_all_mirror"]) == 40 and len(store.get(0, "original")["phi_mirror"]) == 8
    assert summary["methods"]["original"]["status"] == "ok"
    assert summary["attack"]["queries"] == "mirror"
