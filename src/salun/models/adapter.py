"""Make any image classifier look like salun's own: [0, 1] images in, a logits tensor out.

salun's models normalise inside themselves and return logits. A user's model may expect
normalised inputs, and a Hugging Face model returns an output object with ``.logits``.
Rather than wrapping the model in another module (which would rename every parameter to
``inner.*`` and so break masks and fingerprints, both keyed by parameter names), two
forward hooks are installed on the model itself:

- a pre-hook normalising the first positional input with ``(x − mean) / std``;
- a hook replacing an output that is not a tensor by its ``.logits``.

Hooks travel with ``copy.deepcopy``, so every copy a method makes (BS's frozen model,
SCRUB's teacher) behaves the same. :func:`strip_adapter` removes them from a result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from salun.errors import SalunError

_MARK = "_salun_adapter_hook"


def adapt_model(model: nn.Module, normalize: tuple[Sequence[float], Sequence[float]] | None):
    """Install the adapter hooks on ``model`` (in place; call it on a copy) and return it.

    Args:
        normalize: ``(mean, std)`` per channel, applied to [0, 1] inputs before the model;
            None: the model takes [0, 1] images as they are.
    """
    if has_adapter(model):
        return model
    if normalize is not None:
        mean, std = _check_normalize(normalize)

        def pre(module, args):
            if not args or not isinstance(args[0], torch.Tensor):
                return None
            x = args[0]
            if x.shape[1] != len(mean):
                raise SalunError(
                    f"normalize has {len(mean)} channels but the images have {x.shape[1]}"
                )
            m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            return ((x - m) / s, *args[1:])

        setattr(pre, _MARK, True)
        model.register_forward_pre_hook(pre)

    def post(module, args, output):
        if isinstance(output, torch.Tensor):
            return None
        logits = getattr(output, "logits", None)
        if not isinstance(logits, torch.Tensor):
            raise SalunError(
                f"the model returned a {type(output).__name__}; salun needs a logits tensor "
                "or an output with .logits (as Hugging Face classifiers return)"
            )
        return logits

    setattr(post, _MARK, True)
    model.register_forward_hook(post)
    return model


def has_adapter(model: nn.Module) -> bool:
    hooks = [*model._forward_pre_hooks.values(), *model._forward_hooks.values()]
    return any(getattr(h, _MARK, False) for h in hooks)


def _salun_hook(h) -> bool:
    # ours, or the device policy's train-time autocast hooks (salun.precision), which the
    # methods install on the model they train
    return getattr(h, _MARK, False) or getattr(h, "__qualname__", "").startswith(
        "autocast_train_forward.<locals>."
    )


def strip_adapter(model: nn.Module) -> nn.Module:
    """Remove salun's hooks (from this model or a deep copy of an adapted one), so the
    result behaves as the user's model class does: their inputs, their outputs."""
    if "_salun_autocast_hooks" in model.__dict__:
        del model.__dict__["_salun_autocast_hooks"]
    for table in (model._forward_pre_hooks, model._forward_hooks):
        for key in [k for k, h in table.items() if _salun_hook(h)]:
            del table[key]
            for extra in ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs"):
                getattr(model, extra, {}).pop(key, None)
            getattr(model, "_forward_hooks_always_called", {}).pop(key, None)
    return model


def _check_normalize(normalize) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        mean, std = normalize
        mean = tuple(float(v) for v in mean)
        std = tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise SalunError(
            f"normalize must be (mean, std), one number per channel each, got {normalize!r}"
        ) from None
    if not mean or len(mean) != len(std):
        raise SalunError(f"normalize: mean {mean} and std {std} need one value per channel")
    if any(not (s > 0) for s in std):
        raise SalunError(f"normalize: every std must be positive, got {std}")
    return mean, std


def infer_num_classes(model: nn.Module, x: torch.Tensor) -> int:
    """Outputs of the (adapted) model on a one-image batch, in eval mode, mode restored."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:1])
    finally:
        model.train(was)
    if out.dim() != 2:
        raise SalunError(
            f"the model maps a B×C×H×W batch to shape {tuple(out.shape)}; salun needs B×K logits"
        )
    return int(out.shape[1])
