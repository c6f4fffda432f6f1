"""saliency_mask against a brute-force top-k: a stable sort by (−score, position).

The radix select must give exactly the same mask as sorting, at every size, keep and tie
pattern, including when ties straddle chunk boundaries (the chunk size is shrunk here so
small tensors span many chunks).
"""

import numpy as np
import pytest
import torch

import salun.saliency as sal
from salun.errors import SalunError
from salun.saliency import saliency_mask

SIZES = [1, 7, 1000, 100_003]
KEEPS = [0.0, 1e-4, 0.37, 0.5, 1.0]


def brute_force(scores: dict[str, torch.Tensor], keep: float) -> dict[str, torch.Tensor]:
    """The first ⌊N·keep⌋ of a stable descending sort over the concatenation (numpy)."""
    flat = np.concatenate([s.double().numpy().ravel() for s in scores.values()])
    k = int(flat.size * keep)
    order = np.argsort(-flat, kind="stable")  # stable: equal scores keep position order
    chosen = np.zeros(flat.size, dtype=bool)
    chosen[order[:k]] = True
    out, start = {}, 0
    for n, s in scores.items():
        out[n] = torch.from_numpy(chosen[start : start + s.numel()].reshape(s.shape))
        start += s.numel()
    return out


def split_into_tensors(values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut a flat vector into 1–3 named tensors of uneven sizes and shapes."""
    n = values.numel()
    a, b = n // 3, n // 3 + n // 5
    parts = {"conv.weight": values[:a], "conv.bias": values[a:b], "fc.weight": values[b:]}
    parts = {k: v for k, v in parts.items() if v.numel()}
    if "fc.weight" in parts and parts["fc.weight"].numel() % 2 == 0:
        parts["fc.weight"] = parts["fc.weight"].view(2, -1)  # a 2-D tensor: row-major order
    return parts


def scores_of(kind: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "continuous":
        return torch.rand(n, generator=g) ** 3
    if kind == "ties":  # a handful of distinct values: the threshold value repeats a lot
        return torch.randint(0, 4, (n,), generator=g).float() * 0.25
    if kind == "zeros":
        return torch.zeros(n)
    if kind == "bits":  # every bit pattern of a finite float >= 0: exercises every digit
        return torch.randint(0, 0x7F800000, (n,), generator=g, dtype=torch.int32).view(
            torch.float32
        )
    raise ValueError(kind)


def assert_same(got, want):
    assert list(got) == list(want)
    for n in want:
        assert got[n].dtype == torch.bool and got[n].shape == want[n].shape
        assert torch.equal(got[n], want[n]), n


@pytest.fixture
def small_chunks(monkeypatch):
    # 64-element chunks: ties and the threshold fall across many chunk boundaries
    monkeypatch.setattr(sal, "_chunk_size", lambda device: 64)


@pytest.mark.parametrize("kind", ["continuous", "ties", "zeros", "bits"])
@pytest.mark.parametrize("n", SIZES)
def test_global_mask_equals_brute_force(kind, n):
    scores = split_into_tensors(scores_of(kind, n, seed=n))
    for keep in KEEPS:
        got = saliency_mask(scores, keep=keep)
        assert_same(got, brute_force(scores, keep))
        assert sum(int(m.sum()) for m in got.values()) == int(n * keep)


@pytest.mark.parametrize("kind", ["continuous", "ties", "zeros", "bits"])
def test_global_mask_equals_brute_force_across_chunks(small_chunks, kind):
    scores = split_into_tensors(scores_of(kind, 5003, seed=3))
    for keep in [0.001, 0.25, 0.5, 0.999]:
        assert_same(saliency_mask(scores, keep=keep), brute_force(scores, keep))


@pytest.mark.parametrize("kind", ["continuous", "ties", "zeros", "bits"])
def test_layer_scope_equals_brute_force_per_tensor(small_chunks, kind):
    scores = split_into_tensors(scores_of(kind, 1000, seed=5))
    for keep in [0.0, 0.1, 0.5, 1.0]:
        got = saliency_mask(scores, keep=keep, scope="layer")
        want = {n: brute_force({n: s}, keep)[n] for n, s in scores.items()}
        assert_same(got, want)


def test_ties_go_to_the_earliest_positions_in_parameter_order():
    # 6 equal scores over two tensors, keep 3 of 8: the top score, then the first two ties
    scores = {
        "a": torch.tensor([[0.5, 0.5], [0.1, 0.5]]),
        "b": torch.tensor([0.5, 0.9, 0.5, 0.5]),
    }
    m = saliency_mask(scores, keep=0.375)
    assert m["a"].tolist() == [[True, True], [False, False]]
    assert m["b"].tolist() == [False, True, False, False]
    # the mapping's order decides: with "b" first, its ties win
    m2 = saliency_mask({"b": scores["b"], "a": scores["a"]}, keep=0.375)
    assert m2["b"].tolist() == [True, True, True, False]
    assert m2["a"].tolist() == [[False, False], [False, False]]


def test_neighbouring_floats_are_told_apart():
    # the three largest differ only in the lowest mantissa bit (the last radix digit)
    x = torch.tensor(1.0)
    up1 = torch.nextafter(x, torch.tensor(2.0))
    up2 = torch.nextafter(up1, torch.tensor(2.0))
    scores = {"w": torch.stack([up1, x, up2, x, torch.tensor(0.0)])}
    assert saliency_mask(scores, keep=0.4)["w"].tolist() == [True, False, True, False, False]
    assert saliency_mask(scores, keep=0.6)["w"].tolist() == [True, True, True, False, False]


def test_negative_zero_counts_as_zero_and_infinity_as_largest():
    scores = {"w": torch.tensor([-0.0, 0.0, float("inf"), -0.0, 1e-45])}
    # keep 3 of 5: inf, the denormal, then the first zero (a -0.0, by position)
    assert saliency_mask(scores, keep=0.6)["w"].tolist() == [True, False, True, False, True]


def test_other_dtypes_are_ranked_as_float32():
    s = scores_of("continuous", 999, seed=9)
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        scores = split_into_tensors(s.to(dtype))
        as32 = {n: v.float() for n, v in scores.items()}
        assert_same(saliency_mask(scores, keep=0.5), brute_force(as32, 0.5))


def test_non_contiguous_scores():
    base = scores_of("ties", 200, seed=1).view(10, 20)
    scores = {"t": base.t()}  # a transposed view: ranked in its own row-major order
    assert_same(saliency_mask(scores, keep=0.5), brute_force({"t": base.t().contiguous()}, 0.5))


@pytest.mark.parametrize(
    "bad, what",
    [
        (torch.tensor([0.1, float("nan")]), "NaN"),
        (torch.tensor([0.1, -float("nan")]), "NaN"),
        (torch.tensor([0.1, -1e-30]), "non-negative"),
        (torch.tensor([-0.0, -2.0]), "non-negative"),
    ],
)
def test_invalid_scores_raise(bad, what):
    with pytest.raises(SalunError, match=what):
        saliency_mask({"ok": torch.ones(3), "bad": bad}, keep=0.5)


def test_empty_tensors_are_allowed():
    scores = {"e": torch.zeros(0), "w": torch.tensor([3.0, 1.0, 2.0, 0.0])}
    m = saliency_mask(scores, keep=0.5)
    assert m["e"].shape == (0,)
    assert m["w"].tolist() == [True, False, True, False]
