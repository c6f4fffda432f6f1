"""The saliency mask's semantics, pinned by a model whose gradients are worked out by hand."""

import torch
import torch.nn.functional as F
from torch import nn

from salun.errors import ArtifactError, SalunError
from salun.saliency import (
    compute_saliency,
    load_mask,
    mask_density,
    model_fingerprint,
    random_mask,
    saliency_mask,
    save_mask,
)


def hand_model():
    # BatchNorm without affine and eps 0 is the identity in eval mode (running stats 0/1),
    # and fails on a batch of one in train mode: a train-mode saliency pass cannot pass.
    model = nn.Sequential(nn.BatchNorm1d(2, affine=False, eps=0.0), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
    return model


# With W = b = 0 the softmax is (1/2, 1/2), so dCE/dz = p - onehot(y):
#   batch 1: x = (2, 1),  y = 0 -> dz = (-1/2, 1/2): dW = [[-1, -1/2], [1, 1/2]], db = (-1/2, 1/2)
#   batch 2: x = (2, -3), y = 1 -> dz = (1/2, -1/2): dW = [[1, -3/2], [-1, 3/2]], db = (1/2, -1/2)
# |sum|: W = [[0, 2], [0, 2]], b = (0, 0)      sum|.|: W = [[2, 2], [2, 2]], b = (1, 1)
HAND_BATCHES = [
    (torch.tensor([[2.0, 1.0]]), torch.tensor([0])),
    (torch.tensor([[2.0, -3.0]]), torch.tensor([1])),
]


def test_hand_computed_scores_are_abs_of_summed_gradients():
    scores = compute_saliency(hand_model(), HAND_BATCHES)
    assert torch.equal(scores["1.weight"], torch.tensor([[0.0, 2.0], [0.0, 2.0]]))
    assert torch.equal(scores["1.bias"], torch.tensor([0.0, 0.0]))


def test_hand_computed_mask_is_global_top_k_with_deterministic_ties():
    mask = saliency_mask(compute_saliency(hand_model(), HAND_BATCHES), keep=0.5)
    # 6 scalars, keep 3: the two 2s, then the first 0 in parameter order (W[0, 0]).
    # Ascending order, sum of |g|, or per-layer thresholding each give another mask.
    assert mask["1.weight"].tolist() == [[True, True], [False, True]]
    assert mask["1.bias"].tolist() == [False, False]
    layer = saliency_mask(compute_saliency(hand_model(), HAND_BATCHES), keep=0.5, scope="layer")
    assert layer["1.bias"].tolist() == [True, False]


def test_sign_of_loss_does_not_change_scores():
    neg = compute_saliency(hand_model(), HAND_BATCHES, lambda m, b: -F.cross_entropy(m(b[0]), b[1]))
    assert torch.equal(neg["1.weight"], compute_saliency(hand_model(), HAND_BATCHES)["1.weight"])


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)
    )


def test_saliency_equals_loop_of_batch_gradients_and_leaves_model_untouched():
    model = small_cnn()
    model.train()
    x = torch.rand(20, 1, 8, 8)
    y = torch.randint(0, 3, (20,))
    batches = [(x[i : i + 6], y[i : i + 6]) for i in range(0, 20, 6)]
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)  # pre-existing grads must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = compute_saliency(model, batches)

    ref = small_cnn()
    ref.load_state_dict(before)
    ref.eval()
    total = {n: torch.zeros_like(p) for n, p in ref.named_parameters()}
    for xb, yb in batches:
        ref.zero_grad()
        F.cross_entropy(ref(xb), yb).backward()
        for n, p in ref.named_parameters():
            total[n] += p.grad
    for n in total:
        torch.testing.assert_close(scores[n], total[n].abs(), atol=1e-6, rtol=0)
    assert model.training, "the model's mode is restored"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())


def reference_mask(scores, keep):
    names = list(scores)
    flat = torch.cat([scores[n].flatten() for n in names])
    k = int(flat.numel() * keep)
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[order] = True
    out, i = {}, 0
    for n in names:
        out[n] = chosen[i : i + scores[n].numel()].view(scores[n].shape)
        i += scores[n].numel()
    return out


def test_mask_matches_a_stable_sort_reference_with_many_ties():
    g = torch.Generator().manual_seed(1)
    scores = {
        "a": torch.randint(0, 5, (37, 3), generator=g).float(),
        "b": torch.randint(0, 5, (101,), generator=g).float() * 0.5,
        "c": torch.rand(4, 4, 2, generator=g),
    }
    n = sum(v.numel() for v in scores.values())
    for keep in (0.0, 0.1, 1 / 3, 0.5, 0.77, 1.0):
        mask = saliency_mask(scores, keep=keep)
        assert sum(int(m.sum()) for m in mask.values()) == int(n * keep)
        ref = reference_mask(scores, keep)
        assert all(torch.equal(mask[k], ref[k]) for k in scores), keep


def test_mask_rejects_bad_input():
    for bad in (-0.1, 1.5):
        try:
            saliency_mask({"a": torch.ones(3)}, keep=bad)
        except SalunError:
            continue
        raise AssertionError("keep outside [0, 1] must fail")
    try:
        saliency_mask({"a": torch.tensor([1.0, float("nan")])})
    except SalunError as e:
        assert "NaN" in str(e)
    else:
        raise AssertionError("NaN scores must fail")


def test_random_mask_exact_count_and_reproducible():
    model = small_cnn()
    m1 = random_mask(model, 0.3, seed=5)
    m2 = random_mask(model, 0.3, seed=5)
    n = sum(p.numel() for p in model.parameters())
    assert sum(int(m.sum()) for m in m1.values()) == int(n * 0.3)
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    assert not all(torch.equal(m1[k], random_mask(model, 0.3, seed=6)[k]) for k in m1)


def test_mask_file_round_trip_and_wrong_model(tmp_path):
    model = small_cnn()
    mask = random_mask(model, 0.5, seed=0)
    path = tmp_path / "mask.safetensors"
    save_mask(path, mask, model_fingerprint=model_fingerprint(model), keep=0.5, split_hash="x")
    loaded, meta = load_mask(path, model)
    assert all(torch.equal(loaded[k], mask[k]) for k in mask)
    n = sum(p.numel() for p in model.parameters())
    assert meta["keep"] == 0.5 and mask_density(loaded) == int(n * 0.5) / n
    # one byte per weight at most (plus a small header)
    assert path.stat().st_size < sum(p.numel() for p in model.parameters()) + 4096
    other = small_cnn()
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    try:
        load_mask(path, other)
    except ArtifactError as e:
        assert "another model" in str(e)
    else:
        raise AssertionError("a mask for other weights must be rejected")
    wrong_shape = nn.Sequential(nn.Linear(3, 3))
    try:
        load_mask(path, wrong_shape)
    except ArtifactError as e:
        assert "does not fit" in str(e)
    else:
        raise AssertionError("a mask for another architecture must be rejected")
    (tmp_path / "bad.safetensors").write_bytes(b"not a mask")
    try:
        load_mask(tmp_path / "bad.safetensors")
    except ArtifactError as e:
        assert "corrupted" in str(e)
    else:
        raise AssertionError("a corrupted mask must be rejected")
