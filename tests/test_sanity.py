"""The sanity guard: warnings for damaged models and over-forgetting (pure function)."""

from __future__ import annotations

from salun.metrics.sanity import sanity_warnings

ORIGINAL = {"UA": 0.5, "RA": 99.5, "TA": 92.0, "MIA": 2.0}
RETRAIN = {"UA": 8.0, "RA": 99.0, "TA": 91.0, "MIA": 12.0}


def test_healthy_model_gives_no_warning():
    ok = {"UA": 9.0, "RA": 97.0, "TA": 89.0, "MIA": 13.0}
    assert sanity_warnings(ok, ORIGINAL, RETRAIN, "random") == []
    assert sanity_warnings(ok) == []  # nothing to compare against: no check


def test_accuracy_drop_beyond_ten_points_warns():
    w = sanity_warnings({"UA": 9.0, "RA": 89.0, "TA": 81.9}, ORIGINAL)
    assert len(w) == 2 and w[0].startswith("RA 89.00") and w[1].startswith("TA 81.90")
    # exactly 10 points is still tolerated
    assert sanity_warnings({"RA": 89.5, "TA": 82.0}, ORIGINAL) == []


def test_over_forgetting_only_in_random_forgetting():
    wrecked = {"UA": 18.5, "RA": 99.0, "TA": 91.0}
    (w,) = sanity_warnings(wrecked, ORIGINAL, RETRAIN, "random")
    assert "over-forgetting" in w and "10.50" in w
    assert sanity_warnings(wrecked, ORIGINAL, RETRAIN, "class") == []
    assert sanity_warnings(wrecked, ORIGINAL, RETRAIN) == []
    assert sanity_warnings({"UA": 18.0}, retrain=RETRAIN, scenario="random") == []


def test_thresholds_and_missing_values():
    assert len(sanity_warnings({"RA": 97.0}, ORIGINAL, max_drop=2.0)) == 1
    assert sanity_warnings({"RA": float("nan"), "TA": 50.0}, {"RA": 99.0}) == []
    w = sanity_warnings({"UA": 12.0}, retrain=RETRAIN, scenario="random", max_over_forget=3.0)
    assert len(w) == 1
