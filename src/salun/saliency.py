"""Weight saliency (docs/method.md): gradient magnitudes of a forgetting loss, and masks.

``compute_saliency`` returns |Σ_batches ∇ℓ_f| for every entry of ``model.named_parameters()``
(signed gradients summed over batches, absolute value taken once; eval mode; no optimizer
step). ``saliency_mask`` keeps exactly ⌊N·keep⌋ of the N scalars, the largest scores,
ranked **globally** across all parameters (pitfalls 1–3).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from salun.errors import ArtifactError, SalunError
from salun.io import atomic_write_bytes, canonical_safetensors, sha256_bytes

LossFn = Callable[[nn.Module, Any], torch.Tensor]
MASK_FORMAT = "salun-mask-1"


def cross_entropy_loss(model: nn.Module, batch) -> torch.Tensor:
    """The default forgetting loss: batch-mean cross-entropy with the true labels. Its sign
    does not matter (the reference uses −CE), since the absolute value is taken at the end."""
    x, y = batch
    return F.cross_entropy(model(x), y)


def compute_saliency(
    model: nn.Module,
    batches: Iterable,
    loss_fn: LossFn | None = None,
    *,
    clip_grad_norm: float | None = None,
) -> dict[str, torch.Tensor]:
    """Saliency scores |Σ_b ∇_θ ℓ_f(θ; batch_b)| at the model's current weights.

    Args:
        model: the original model θ_o. It is put in eval mode for the pass (BatchNorm uses
            its running statistics and they are not updated) and its mode, weights and
            ``.grad`` are left exactly as they were.
        batches: any iterable of batches, e.g. ``(x, y)`` tensors of the forget set.
        loss_fn: ``loss_fn(model, batch) -> scalar``; default: :func:`cross_entropy_loss`.
        clip_grad_norm: clip each batch's gradient to this global norm before summing
            (the DDPM reference does this, docs/generation.md); None for classification.

    Returns:
        A dict keyed like ``model.named_parameters()`` with float32 scores shaped like the
        parameters. Parameters that do not require grad score 0.

    Example:
        >>> scores = compute_saliency(model, iterate_batches(forget, 256))
        >>> mask = saliency_mask(scores, keep=0.5)
    """
    loss_fn = loss_fn or cross_entropy_loss
    named = list(model.named_parameters())
    trainable = [(n, p) for n, p in named if p.requires_grad]
    if not trainable:
        raise SalunError("the model has no trainable parameters to compute saliency for")
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in trainable}
    was_training = model.training
    model.eval()
    n_batches = 0
    try:
        for batch in batches:
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise SalunError(f"the forgetting loss is {loss.item()} on batch {n_batches}")
            # autograd.grad leaves every .grad untouched (no optimizer, no zero_grad needed)
            grads = torch.autograd.grad(loss, [p for _, p in trainable], allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for (_, p), g in zip(trainable, grads)]
            if clip_grad_norm is not None:
                total = torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads]))
                scale = min(1.0, clip_grad_norm / (float(total) + 1e-6))
                grads = [g * scale for g in grads]
            for (n, _), g in zip(trainable, grads):
                acc[n].add_(g.float())
            n_batches += 1
    finally:
        model.train(was_training)
    if n_batches == 0:
        raise SalunError("the forget set gave no batches: saliency needs at least one sample")
    scores = {}
    for n, p in named:
        scores[n] = acc[n].abs_() if n in acc else torch.zeros_like(p, dtype=torch.float32)
    return scores


# Global top-k without sorting: a radix select over the float32 bit patterns.
#
# Non-negative IEEE-754 floats order exactly like their bit patterns read as int32, so the
# k-th largest score is found digit by digit: three histogram passes over the scores (bits
# 30–20, 19–10, 9–0), each a `torch.bincount` of one chunk at a time. Nothing of size N is
# allocated except the boolean masks themselves (the chunks are views), so memory stays
# bounded for ~10^9 weights, and the cost is four reads of the scores (three histograms
# and the mask) instead of a full sort.
_LEVELS = ((20, 11), (10, 10), (0, 10))  # (shift, digit width): the 31 bits of a float >= 0
_NAN_BITS = 0x7F800000  # +inf; any larger int32 pattern is a NaN


def _chunk_size(device: torch.device) -> int:
    # CPU: 1 M elements (4 MB) stay in cache between the shift and the bincount;
    # GPU: bigger chunks, fewer kernel launches
    return 1 << 20 if device.type == "cpu" else 1 << 24


def _chunks(flat: torch.Tensor):
    size = _chunk_size(flat.device)
    for start in range(0, flat.numel(), size):
        yield start, flat[start : start + size]


def _bit_views(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Flat int32 views of the scores (no copy for contiguous float32), validated."""
    views = []
    for s in scores:
        f = s.detach()
        f = f if f.dtype == torch.float32 else f.float()
        views.append(f.contiguous().view(-1).view(torch.int32))
    nonempty = [i for i, v in enumerate(views) if v.numel()]
    if not nonempty:
        return views
    # one pass and one host sync for all tensors: min < 0 means a sign bit (-0.0, a negative
    # score or a negative NaN), max > +inf's pattern means a NaN
    bounds = torch.stack([torch.stack(torch.aminmax(views[i])) for i in nonempty]).tolist()
    for i, (lo, hi) in zip(nonempty, bounds):
        s = scores[i].detach()
        if hi > _NAN_BITS or (lo < 0 and bool(torch.isnan(s).any())):
            raise SalunError("saliency scores contain NaN; check the forgetting loss and the model")
        if lo < 0:
            if bool((s < 0).any()):
                raise SalunError(
                    "saliency scores must be non-negative (take the absolute value first)"
                )
            views[i] = views[i].clamp(min=0)  # -0.0 (bits 0x80000000) becomes +0.0
    return views


def _kth_largest(views: list[torch.Tensor], k: int) -> tuple[int, int, list[int]]:
    """The bit pattern t of the k-th largest score (1 <= k <= N), how many scores lie
    strictly above it, and how many equal t in each chunk (in :func:`_chunks` order)."""
    device = views[0].device
    prefix, above = 0, 0  # the digits of t found so far; count of scores above that prefix
    n_chunks = sum(1 for v in views for _ in _chunks(v))
    for shift, width in _LEVELS:
        nb = 1 << width
        # bucket 0: below the prefix, 1..nb: the next digit + 1, nb + 1: above the prefix
        base = (prefix << width) - 1
        # one row per chunk, allocated once: small tensors kept alive between the big chunk
        # temporaries would fragment the CPU heap (measured: +2 bytes per score of RSS)
        rows = torch.zeros(n_chunks, nb + 2, dtype=torch.int64, device=device)
        j = 0
        for v in views:
            for _, c in _chunks(v):
                key = (c >> shift).sub_(base).clamp_(0, nb + 1)
                rows[j] = torch.bincount(key, minlength=nb + 2)
                j += 1
                del key
        hist = rows.sum(0)
        counts = hist[1 : nb + 1].flip(0)  # digit nb-1 first
        reached = counts.cumsum(0) + above  # scores >= each digit (with the prefix)
        i = int(torch.searchsorted(reached, k))  # first digit (from the top) reaching k
        digit = nb - 1 - i
        above = int(reached[i]) - int(counts[i])
        prefix = (prefix << width) | digit
    eq = rows[:, digit + 1].tolist()  # the last level's digit is t's lowest 10 bits
    return prefix, above, eq


def _select_top(views: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Exactly k True over the given flat bit views: the k largest scores; among scores equal
    to the k-th largest, the earliest win (tensor order, then flat position)."""
    masks = [torch.zeros(v.numel(), dtype=torch.bool, device=v.device) for v in views]
    n = sum(v.numel() for v in views)
    if k <= 0:
        return masks
    if k >= n:
        return [m.fill_(True) for m in masks]
    t, above, eq_counts = _kth_largest(views, k)
    remaining = k - above  # ties at t still to take, 1..(number of scores equal to t)
    chunk_no = 0
    for v, m in zip(views, masks):
        for start, c in _chunks(v):
            out = m[start : start + c.numel()]
            e = eq_counts[chunk_no]
            chunk_no += 1
            if 0 < e <= remaining:
                torch.ge(c, t, out=out)
                remaining -= e
            else:
                torch.gt(c, t, out=out)
                if e and remaining:  # the tie rule splits this chunk: earliest positions
                    out[(c == t).nonzero().view(-1)[:remaining]] = True
                    remaining = 0
    return masks


def check_keeps_some(scores: Mapping[str, torch.Tensor], keep: float) -> None:
    """Refuse a user's ``keep`` that selects no weight at all: every weight would be frozen
    and the run a silent no-op. (:func:`saliency_mask` itself computes any density, 0 too.)"""
    total = sum(int(s.numel()) for s in scores.values())
    if total and int(total * keep) == 0:
        raise SalunError(
            f"keep {keep:g} keeps none of the {total} weights (floor(N*keep) = 0): the mask "
            f"would freeze the whole model; use keep >= {1 / total:.3g}"
        )


def saliency_mask(
    scores: Mapping[str, torch.Tensor], keep: float = 0.5, scope: str = "global"
) -> dict[str, torch.Tensor]:
    """Boolean masks keeping the largest scores.

    Args:
        scores: non-negative scores keyed by parameter name (from :func:`compute_saliency`).
        keep: the kept fraction r; exactly ⌊N·r⌋ of the N scalars are True (paper: 0.5,
            i.e. γ = the median).
        scope: ``"global"`` ranks all parameters together (the paper); ``"layer"`` keeps
            ⌊n·r⌋ per tensor (an ablation).

    Returns:
        ``{name: bool tensor}`` shaped like the scores, on their device.

    Ties: scores equal to the threshold are taken in order of position, the mapping's order
    first (``named_parameters`` order from :func:`compute_saliency`), then the flat
    row-major index inside a tensor, so the mask equals a stable sort by (−score,
    position). −0.0 counts as 0.0. The selection is a radix select over the float bit
    patterns in fixed-size chunks: four reads of the scores and no memory of size N besides
    the masks (docs/gpu.md, "Thresholding").
    """
    if not 0.0 <= keep <= 1.0:
        raise SalunError(f"keep must lie in [0, 1], got {keep}")
    if scope not in ("global", "layer"):
        raise SalunError(f"scope must be 'global' or 'layer', got {scope!r}")
    names = list(scores)
    views = _bit_views([scores[n] for n in names])
    if scope == "global":
        k = int(sum(v.numel() for v in views) * keep)
        masks = _select_top(views, k)
    else:
        masks = [_select_top([v], int(v.numel() * keep))[0] for v in views]
    return {n: m.view(scores[n].shape) for n, m in zip(names, masks)}


def random_mask(
    model_or_shapes: nn.Module | Mapping[str, torch.Size | tuple[int, ...]],
    keep: float,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A uniformly random mask with exactly ⌊N·keep⌋ ones (the paper's random-masking
    ablation), reproducible from ``seed``."""
    if isinstance(model_or_shapes, nn.Module):
        shapes = {n: p.shape for n, p in model_or_shapes.named_parameters()}
    else:
        shapes = dict(model_or_shapes)
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(tuple(s), generator=g) for n, s in shapes.items()}
    return saliency_mask(scores, keep=keep, scope="global")


def mask_density(mask: Mapping[str, torch.Tensor]) -> float:
    """Fraction of True entries over all scalars."""
    total = sum(m.numel() for m in mask.values())
    return sum(int(m.sum()) for m in mask.values()) / max(total, 1)


def layer_density(mask: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per-tensor fraction of salient weights (for the report's layer-wise plot)."""
    return {n: float(m.float().mean()) for n, m in mask.items()}


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's parameter names, shapes and values: masks record it, so a
    mask cannot silently be applied to a model it was not computed on."""
    h = []
    for n, p in model.named_parameters():
        t = p.detach().to("cpu", torch.float32).contiguous()
        h.append(f"{n}:{tuple(t.shape)}:{sha256_bytes(t.numpy().tobytes())}")
    return sha256_bytes("\n".join(h).encode())[:16]


def save_mask(path: str | Path, mask: Mapping[str, torch.Tensor], **metadata: Any) -> None:
    """Write a mask as safetensors (bool, one byte per weight) with JSON metadata, atomically.

    Recommended metadata: ``model_fingerprint``, ``keep``, ``scope``, ``split_hash``.
    """
    tensors = {n: m.detach().to("cpu", torch.bool).contiguous() for n, m in mask.items()}
    meta = {"format": MASK_FORMAT, "density": f"{mask_density(mask):.6f}"}
    meta.update({k: json.dumps(v, sort_keys=True) for k, v in metadata.items()})
    # Sorted header: identical runs give byte-identical files (and the same sha256).
    atomic_write_bytes(path, canonical_safetensors(safetensors_bytes(tensors, metadata=meta)))


def load_mask(
    path: str | Path, model: nn.Module | None = None, *, check_weights: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a mask file; with ``model``, check it was made for that model.

    Raises:
        ArtifactError: missing/corrupted file, names or shapes that do not match the model,
            or (``check_weights``) a fingerprint of other weights.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"mask file {path} does not exist; make one with `salun mask`")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path} is corrupted or not a safetensors mask: {e}") from None
    if raw_meta.get("format") != MASK_FORMAT:
        raise ArtifactError(f"{path} is not a salun mask file")
    not_bool = sorted(k for k, t in raw.items() if t.dtype != torch.bool)
    if not_bool:
        raise ArtifactError(f"{path}: mask tensor {not_bool[0]} is not bool; it is not a mask")
    mask = raw
    try:
        meta = {
            k: (json.loads(v) if k not in ("format", "density") else v) for k, v in raw_meta.items()
        }
    except ValueError as e:
        raise ArtifactError(f"{path}: its metadata is corrupted ({e})") from None
    if model is not None:
        check_mask_fits(mask, model, str(path))
        fp = meta.get("model_fingerprint")
        if check_weights and fp is not None and fp != model_fingerprint(model):
            raise ArtifactError(
                f"{path} was computed on another model (fingerprint {fp}, this model "
                f"{model_fingerprint(model)}); compute the mask on this model with `salun mask`"
            )
    return mask, meta


def check_mask_fits(
    mask: Mapping[str, torch.Tensor], model: nn.Module, where: str = "mask"
) -> None:
    """Names and shapes of the mask must equal the model's parameters exactly."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(mask))
    extra = sorted(set(mask) - set(params))
    if missing or extra:
        raise ArtifactError(
            f"{where} does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for n, p in params.items():
        if tuple(mask[n].shape) != tuple(p.shape):
            raise ArtifactError(
                f"{where} does not fit this model: {n} is {tuple(mask[n].shape)} in the mask, "
                f"{tuple(p.shape)} in the model"
            )
