"""Checks :func:`salun.unlearn` and :func:`salun.evaluate` run before any work, so a
wrong call ends in one clear error or warns with its reason instead of giving a silently
wrong answer (docs/your-model.md, "What salun checks before it runs").

Errors (:class:`SalunError`): grad disabled by ``torch.inference_mode``, no trainable
parameter, a forget example that is also in the retain set. Warnings
(:class:`InputWarning`): inputs unlike those the model was trained on, and a forget set
the model fits no better than unseen test data.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import torch
from torch import nn

from salun.errors import SalunError

# how many examples the statistical checks read (the first ones, in the set's order)
SAMPLE = 256
FIT_SAMPLE = 2048
# BatchNorm input statistics further than this from its running statistics: a mismatch
MAX_SHIFT = 1.0  # |batch mean − running mean| in running standard deviations (median)
SCALE_RANGE = (0.5, 2.0)  # batch std / running std (median over channels)
NEAR_CHANCE = 0.10  # retain accuracy within 10 points of chance: not the model's inputs


class InputWarning(UserWarning):
    """The data handed to salun looks unlike what the model was trained on."""


def check_grad_mode() -> None:
    """``torch.inference_mode`` tensors can never take part in a backward pass: refuse it.
    (Inside ``torch.no_grad()`` salun simply enables grad for its own work.)"""
    if torch.is_inference_mode_enabled():
        raise SalunError(
            "salun.unlearn was called inside torch.inference_mode(): unlearning needs "
            "gradients; call it outside the inference_mode block"
        )


def check_trainable(model: nn.Module, method: str) -> None:
    """At least one parameter that requires grad: a method trains the model."""
    params = list(model.parameters())
    if not params:
        raise SalunError(f"{method} updates the model's parameters, but the model has none")
    if not any(p.requires_grad for p in params):
        raise SalunError(
            f"every parameter of the model is frozen (requires_grad=False), so {method} "
            "cannot change it; unfreeze the layers it may update (p.requires_grad_(True))"
        )


def check_disjoint(forget_in: Any, retain_in: Any, forget=None, retain=None) -> None:
    """No example in both D_f and D_r.

    Two ``Subset`` views (or DataLoaders over them) of the same dataset are compared by
    index; in-memory sets (``forget``/``retain`` as :class:`~salun.data.ImageDataset`) by
    content: an identical image with the same label in both sets is an overlap, since the
    retain pass would teach the model that example again.
    """
    fi, ri = _subset_indices(forget_in), _subset_indices(retain_in)
    if fi is not None and ri is not None and fi[0] is ri[0]:
        both = sorted(set(fi[1]) & set(ri[1]))
        if both:
            raise SalunError(
                f"forget and retain overlap: {len(both)} index(es) of the same dataset are in "
                f"both (first: {both[0]}); the retain set must leave the forget examples out"
            )
    from salun.data import ImageDataset

    if not (isinstance(forget, ImageDataset) and isinstance(retain, ImageDataset)):
        return  # streamed: compared by index only
    rkeys = set(_row_keys(retain))
    shared = [i for i, k in enumerate(_row_keys(forget)) if k in rkeys]
    if shared:
        raise SalunError(
            f"forget and retain overlap: {len(shared)} of the {len(forget)} forget examples "
            f"(first: forget[{shared[0]}]) also appear in retain with the same image and "
            "label; remove them (and their copies) from retain"
        )


def _subset_indices(data: Any):
    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    if isinstance(data, torch.utils.data.Subset):
        return data.dataset, [int(i) for i in data.indices]
    return None


def _row_keys(data) -> list[bytes]:
    images = data.images.reshape(len(data), -1).contiguous().numpy()
    labels = data.labels.numpy()
    return [
        hashlib.blake2b(images[i].tobytes() + labels[i].tobytes(), digest_size=16).digest()
        for i in range(len(labels))
    ]


def sample(data, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` examples of a prepared set as float [0, 1] images and labels (CPU)."""
    from salun.data.batches import to_float

    m = min(n, len(data))
    if hasattr(data, "stream"):
        x, y = next(data.stream([torch.arange(m)]))
        return to_float(x, "cpu"), y
    return to_float(data.images[:m], "cpu"), data.labels[:m]


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, device) -> torch.Tensor:
    return torch.cat([model(b.to(device)).argmax(1).cpu() for b in x.split(256)])


def _in_eval(model: nn.Module):
    """Eval mode for a forward that must not touch BatchNorm statistics; the modes are
    restored afterwards (a method may rely on them)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    return modes


def _restore(modes) -> None:
    for m, training in modes:
        m.train(training)


def check_inputs_fit(model: nn.Module, retain, num_classes: int, device) -> list[str]:
    """Warn when the retain images look unlike what ``model`` was trained on; returns the
    warning's message in a list (empty when none).

    Two signals, on the first :data:`SAMPLE` retain examples, the model in eval mode:

    - the first BatchNorm layer the forward reaches: per channel, the batch mean and
      standard deviation of its input against its running statistics (what it saw in
      training). A median shift above :data:`MAX_SHIFT` running standard deviations, or
      a median scale outside :data:`SCALE_RANGE`, is a mismatch (the typical cause: the
      model was trained on normalised images and ``normalize=`` was not given, or given
      twice). A layer that never saw a batch (``num_batches_tracked`` 0) is not judged.
    - accuracy on those retain examples within :data:`NEAR_CHANCE` of chance (1/K): the
      model does not recognise its own training data as given (32 examples at least).
    """
    x, y = sample(retain, SAMPLE)
    seen: list = []

    def grab(module, args):
        if not seen and args and isinstance(args[0], torch.Tensor):
            seen.append((module, args[0].detach()))

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = [m.register_forward_pre_hook(grab) for m in bns]
    modes = _in_eval(model)
    try:
        pred = _predict(model, x, device)
    finally:
        for h in handles:
            h.remove()
        _restore(modes)
    reasons = []
    if seen:
        reasons += _bn_mismatch(*seen[0], model)
    acc = float((pred == y).float().mean())
    if len(y) >= 32 and acc <= 1.0 / num_classes + NEAR_CHANCE:
        reasons.append(
            f"the model classifies only {100 * acc:.1f} % of the first {len(y)} retain "
            f"examples correctly (chance: {100 / num_classes:.1f} %)"
        )
    if not reasons:
        return []
    message = (
        "the inputs do not look like what the model was trained on: "
        + "; ".join(reasons)
        + ". Were its training images normalised? pass normalize=(mean, std) as its "
        "training did (or normalize=None if the model normalises itself); images reach "
        "salun in [0, 1]"
    )
    warnings.warn(message, InputWarning, stacklevel=4)
    return [message]


def _bn_mismatch(bn: nn.Module, x: torch.Tensor, model: nn.Module) -> list[str]:
    if bn.running_mean is None or bn.running_var is None:
        return []
    tracked = getattr(bn, "num_batches_tracked", None)
    if tracked is not None and int(tracked) == 0:
        return []  # never trained: its statistics are the initial 0 and 1, not data's
    dims = [d for d in range(x.dim()) if d != 1]
    mean = x.float().mean(dims).cpu()
    std = x.float().std(dims).cpu() if x.numel() > x.shape[1] else torch.zeros_like(mean)
    run_std = (bn.running_var.float().cpu() + bn.eps).sqrt()
    shift = float(((mean - bn.running_mean.float().cpu()).abs() / run_std).median())
    scale = float((std / run_std).median())
    if shift <= MAX_SHIFT and SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        return []
    name = next((n for n, m in model.named_modules() if m is bn), "?")
    return [
        f"BatchNorm {name!r} receives inputs {shift:.2f} running standard deviations from "
        f"its training mean and {scale:.2f}× its training spread (median over channels)"
    ]


def check_forget_was_trained(model: nn.Module, forget, test, device) -> str | None:
    """Warn when the model fits D_f no better than unseen test data of the same classes.

    Accuracy on the first :data:`FIT_SAMPLE` forget examples against the test accuracy of
    the same classes, weighted by their share in D_f (test examples of D_f's classes,
    :data:`FIT_SAMPLE` at most; at least 20 needed). Better means above halfway from that
    level to 100 %, ``(a + 1) / 2``; a model that classifies the test examples perfectly
    cannot be judged. Not better: the model likely never trained on D_f (test images
    passed as the forget set?), and there is nothing to unlearn.
    """
    xf, yf = sample(forget, FIT_SAMPLE)
    xt, yt = sample(test, FIT_SAMPLE)
    classes = yf.unique()
    keep = torch.isin(yt, classes)
    if int(keep.sum()) < 20:
        return None
    modes = _in_eval(model)
    try:
        ok_f = (_predict(model, xf, device) == yf).float()
        ok_t = (_predict(model, xt[keep], device) == yt[keep]).float()
    finally:
        _restore(modes)
    yt = yt[keep]
    acc_f = float(ok_f.mean())
    acc_t = 0.0
    for c in classes:
        share = float((yf == c).float().mean())
        in_c = yt == c
        # a class of D_f missing from test: judged on the classes test holds
        acc_t += share * (float(ok_t[in_c].mean()) if in_c.any() else acc_f)
    # better = at least halfway from the test level to 100 %: a model that trained on D_f
    # fits it (nearly) perfectly, unseen data it does not; halfway keeps a small D_f's
    # chance differences from raising the warning, and from hiding it
    bar = (acc_t + 1.0) / 2
    if acc_f > bar or acc_t >= 1.0:  # unseen data fitted perfectly: no telling
        return None
    reason = (
        f"the model fits the forget set no better than unseen test data of its classes "
        f"(forget accuracy {100 * acc_f:.1f} %, test {100 * acc_t:.1f} %; a trained-on set "
        f"is expected above {100 * bar:.1f} %, halfway to 100 %): was it trained on these "
        "examples? Unlearning data a model never saw changes nothing it learnt"
    )
    warnings.warn(reason, InputWarning, stacklevel=4)
    return reason
