"""IU: influence unlearning, one Newton-like step with a WoodFisher inverse-Hessian estimate
(the reference's ``wfisher``; docs/method.md).

Eval mode throughout (BatchNorm uses and keeps its running statistics). θ is the flat
vector of every trainable parameter.

1. g_f, g_r: the sums of per-example CE gradients over D_f and D_r.
2. v = g_f/(N_f+N_r) − g_r·N_f/((N_f+N_r)·N_r).
3. k := v; o := g_0; for each later per-sample retain gradient g_j (the first samples of
   D_r in index order): s = o·g_j; k ← k − (k·g_j)/(N+s)·o; o ← o − s/(N+s)·o.
4. θ ← θ + α·k (⊙ mask).

Two implementations: ``reference=True`` is a plain loop, one ``backward()`` per sample,
the recursion on flat vectors as written above. The default fast path takes per-sample
gradients with ``torch.func`` (``vmap(grad(...))`` over chunks) and uses that o stays a
multiple of g_0 (o = c·g_0) and k stays v − β·g_0: the recursion then needs only the dot
products g_0·g_j and v·g_j, two matrix-vector products per chunk, and a scalar loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from salun.data import Augment, ImageDataset, iterate_batches
from salun.data.batches import augment_batch, to_float
from salun.errors import SalunError
from salun.masking import apply_mask_to_delta
from salun.methods.common import train_augment
from salun.methods.registry import register
from salun.saliency import check_mask_fits
from salun.validate import check_each, check_fields, check_int, check_positive, check_seed


@dataclass(frozen=True)
class IUConfig:
    """Influence unlearning.

    Attributes:
        alpha: α, the step along H⁻¹v. The paper searched [1, 20]; the reference default is
            0.2, and a user of the reference code found that α ≥ 5 broke the model.
            Default 1, the low end of the paper's range.
        lr_grid: candidate values of ``alpha`` (IU has no learning rate; ``grid_field``
            names the field the benchmark's search sets): the reference default plus the
            paper's range.
        damping: N, the WoodFisher damping constant (reference: 1000).
        num_samples: per-sample retain gradients in the recursion; None = ``damping + 2``,
            as the reference (it stops once the sample index exceeds N: 1 002 samples).
        batch_size: batch size of the D_f and D_r gradient sums (reference: 256).
        chunk_size: samples per ``vmap`` chunk of the fast path (memory: chunk_size ×
            parameters floats).
        reference: use the slow per-sample ``backward()`` loop (for checking the fast path).
        augment: take every gradient (D_f sum, D_r sum, per-sample retain gradients) on
            randomly cropped and flipped images, as the reference does (its loaders keep
            the training transform; docs/method.md). Off by default; on in the paper preset.
        seed: seeds the augmentation (unused without it).
    """

    grid_field: ClassVar[str] = "alpha"

    alpha: float = 1.0  # low end of the paper's search range [1, 20], docs/method.md
    lr_grid: tuple[float, ...] = (0.2, 1.0, 3.0, 10.0, 20.0)  # reference default + paper range
    damping: float = 1000.0  # reference, docs/method.md
    num_samples: int | None = None  # None: damping + 2, as the reference
    batch_size: int = 256  # reference
    chunk_size: int = 64
    reference: bool = False
    augment: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        check_seed("seed", self.seed)
        check_positive("alpha", self.alpha)
        check_each("lr_grid", self.lr_grid, check_positive)  # values of alpha
        check_positive("damping", self.damping)
        if self.num_samples is not None:
            check_int("num_samples", self.num_samples, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("chunk_size", self.chunk_size, 1)

    @property
    def samples(self) -> int:
        """How many per-sample retain gradients the recursion uses at most."""
        return self.num_samples if self.num_samples is not None else int(self.damping) + 2


def augmented_copy(
    data: ImageDataset, aug: Augment, gen: torch.Generator, batch_size: int = 1024
) -> ImageDataset:
    """``data`` with every image randomly cropped and flipped once (one pass of a training
    loader). Crops pad with zeros and flips move pixels, so the uint8 copy is exact."""
    out = []
    for start in range(0, len(data), batch_size):
        x = augment_batch(to_float(data.images[start : start + batch_size], "cpu"), aug, gen)
        # float32 images (user data off the 8-bit grid) stay float: no rounding
        out.append(x if data.images.is_floating_point() else torch.round(x * 255.0).to(torch.uint8))
    images = torch.cat(out) if out else data.images.clone()
    return ImageDataset(images, data.labels.clone())


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _flat(grads, params) -> torch.Tensor:
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)]
    )


def summed_gradient(model: nn.Module, data: ImageDataset, batch_size: int, device) -> torch.Tensor:
    """Σ over samples of ∇CE(θ; x_i, y_i) as a flat vector (model in eval mode)."""
    params = [p for _, p in _trainable(model)]
    total = torch.zeros(sum(p.numel() for p in params), device=device)
    for x, y in iterate_batches(data, batch_size, device=device):
        loss = F.cross_entropy(model(x), y, reduction="sum")
        total += _flat(torch.autograd.grad(loss, params, allow_unused=True), params)
    return total


def _summed_gradient_reference(model, data, batch_size, device) -> torch.Tensor:
    """The reference's way: Σ_batches n_b · ∇ mean-CE(batch) via ``backward()``."""
    params = [p for _, p in _trainable(model)]
    total = torch.zeros(sum(p.numel() for p in params), device=device)
    for x, y in iterate_batches(data, batch_size, device=device):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        total += len(y) * _flat([p.grad for p in params], params)
    model.zero_grad(set_to_none=True)
    return total


def forget_direction(g_f: torch.Tensor, g_r: torch.Tensor, n_f: int, n_r: int) -> torch.Tensor:
    """v = (N_f/N)·(mean_f ∇ℓ − mean_r ∇ℓ), written as the reference does."""
    n = n_f + n_r
    return g_f / n - g_r * (n_f / (n * n_r))


def woodfisher_reference(model, retain, v, damping: float, samples: int, device) -> torch.Tensor:
    """The rank-1 recursion exactly as written, one ``backward()`` per retain sample."""
    params = [p for _, p in _trainable(model)]
    k, o = v.clone(), None
    for j, (x, y) in enumerate(iterate_batches(retain, 1, device=device)):
        if j >= samples:
            break
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        g = _flat([p.grad for p in params], params)
        if o is None:
            o = g
            continue
        s = o @ g
        k = k - ((k @ g) / (damping + s)) * o
        o = o - (s / (damping + s)) * o
    model.zero_grad(set_to_none=True)
    return k


def per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """{name: B×shape} per-sample CE gradients of a batch, via ``vmap(grad(...))``."""
    params = {n: p.detach() for n, p in _trainable(model)}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: b for n, b in model.named_buffers()}

    def loss_one(p, xi, yi):
        out = functional_call(model, {**p, **frozen, **buffers}, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)


def woodfisher_fast(model, retain, v, damping: float, samples: int, chunk: int, device):
    """The same recursion on scalars: with o = c·g_0 and k = v − β·g_0, each step needs
    only a_j = g_0·g_j and b_j = v·g_j, computed chunk-wise from vmapped gradients."""
    names = [n for n, _ in _trainable(model)]
    n_use = min(samples, len(retain))
    data = ImageDataset(retain.images[:n_use], retain.labels[:n_use])
    g0 = None
    c, beta = 1.0, 0.0  # o = c·g0, k = v − β·g0
    for x, y in iterate_batches(data, chunk, device=device):
        grads = per_sample_grads(model, x, y)
        rows = torch.cat([grads[n].reshape(len(y), -1) for n in names], 1)
        if g0 is None:
            g0 = rows[0].clone()
            rows = rows[1:]
        a = (rows @ g0).tolist()
        b = (rows @ v).tolist()
        del rows, grads
        for a_j, b_j in zip(a, b):
            s = c * a_j
            kg = b_j - beta * a_j  # k·g_j
            beta += kg / (damping + s) * c
            c -= s / (damping + s) * c
    return v if g0 is None else v - beta * g0


@register("iu", IUConfig, "influence unlearning: one WoodFisher inverse-Hessian step (wfisher)")
def iu(model, forget, retain, cfg: IUConfig, ctx, mask=None):
    if len(retain) == 0:
        raise SalunError("iu needs a non-empty retain set D_r (gradients and the Hessian)")
    if mask is not None:
        check_mask_fits(mask, model)
    model.eval()  # BN frozen: running statistics are used and never updated
    dev = ctx.device
    fisher = retain.subset(range(min(cfg.samples, len(retain))))
    aug = train_augment(cfg.augment, ctx)
    if aug is not None and aug.active:
        # one augmented pass per loader, as the reference's three loaders each draw their own
        gen = torch.Generator().manual_seed(cfg.seed)
        forget, retain, fisher = (augmented_copy(d, aug, gen) for d in (forget, retain, fisher))
    if cfg.reference:
        g_f = _summed_gradient_reference(model, forget, cfg.batch_size, dev)
        g_r = _summed_gradient_reference(model, retain, cfg.batch_size, dev)
        v = forget_direction(g_f, g_r, len(forget), len(retain))
        k = woodfisher_reference(model, fisher, v, cfg.damping, cfg.samples, dev)
    else:
        g_f = summed_gradient(model, forget, cfg.batch_size, dev)
        g_r = summed_gradient(model, retain, cfg.batch_size, dev)
        v = forget_direction(g_f, g_r, len(forget), len(retain))
        k = woodfisher_fast(model, fisher, v, cfg.damping, cfg.samples, cfg.chunk_size, dev)
    if not torch.isfinite(k).all():
        raise SalunError("the influence update is not finite; raise damping or check the model")
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        offset = 0
        for _, p in _trainable(model):
            p.add_(cfg.alpha * k[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
    if mask is not None:
        apply_mask_to_delta(model, start, mask)
    return model
