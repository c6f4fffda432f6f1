"""How models run on a device: precision (autocast), memory format, cuDNN autotuning,
determinism and ``torch.compile``, as one process-wide :class:`DevicePolicy` (docs/gpu.md).

The default policy is the faithful one: float32 everywhere (TF32 off), no compile, so
results do not depend on the hardware's fast paths. Faster settings are opt-in, from code
(:func:`set_policy` / :func:`use_policy`) or the environment (``SALUN_PRECISION=bf16``,
``SALUN_CHANNELS_LAST=1``, ``SALUN_DETERMINISTIC=1``, ``SALUN_COMPILE=1``), so every
entry point (``salun train``, ``salun bench``, scripts) picks them up without new flags.

Autocast only changes the dtype of the forward's matrix products and convolutions; the
weights stay float32 master weights, so strict masking (restore the frozen values after
each step) stays bit-exact under bf16 and fp16.

Example:
    >>> from salun.precision import DevicePolicy, use_policy
    >>> with use_policy(DevicePolicy(precision="bf16", channels_last=True)):
    ...     train_supervised(model, data, cfg, device="cuda")
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

from salun.config_cli import add_options, option
from salun.data.dataset import ImageDataset
from salun.errors import SalunError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class DevicePolicy:
    """How forward/backward passes run (recorded next to results: :meth:`as_record`).

    Attributes:
        precision: ``fp32`` (default: true float32, TF32 off), ``tf32`` (float32 weights,
            TF32 tensor-core matmuls/convs on NVIDIA GPUs), ``bf16`` or ``fp16`` (autocast of
            the forward; fp16 adds a gradient scaler).
        channels_last: NHWC memory format for 4-D activations and conv weights; None = on
            for CUDA, off on CPU (it helps tensor cores, rarely a CPU).
        cudnn_benchmark: let cuDNN time its algorithms per input shape (CUDA; off in
            deterministic mode, since the chosen algorithm may differ between runs).
        deterministic: bit-exact reruns on CUDA: deterministic kernels only, no cuDNN
            autotuning, a fixed cuBLAS workspace (costs speed, see docs/gpu.md).
        compile: ``torch.compile`` the model in place (parameter names are unchanged).
    """

    precision: str = "fp32"
    channels_last: bool | None = None
    cudnn_benchmark: bool = True
    deterministic: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise SalunError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    def as_record(self) -> dict:
        """A JSON-ready dict for result records."""
        return asdict(self)

    def uses_channels_last(self, device: torch.device | str) -> bool:
        if self.channels_last is None:
            return torch.device(device).type == "cuda"
        return self.channels_last


def _env_flag(env: Mapping[str, str], name: str, default: bool | None) -> bool | None:
    raw = env.get(name)
    if raw is None:
        return default
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    if v == "auto" and default is None:
        return None
    raise SalunError(f"{name} must be 1 or 0 (true/false), got {raw!r}")


def policy_from_env(env: Mapping[str, str] | None = None) -> DevicePolicy:
    """The policy the ``SALUN_*`` environment variables ask for (unset = the defaults)."""
    env = os.environ if env is None else env
    return DevicePolicy(
        precision=env.get("SALUN_PRECISION", "fp32").strip().lower() or "fp32",
        channels_last=_env_flag(env, "SALUN_CHANNELS_LAST", None),
        cudnn_benchmark=bool(_env_flag(env, "SALUN_CUDNN_BENCHMARK", True)),
        deterministic=bool(_env_flag(env, "SALUN_DETERMINISTIC", False)),
        compile=bool(_env_flag(env, "SALUN_COMPILE", False)),
    )


_current: DevicePolicy | None = None


def current_policy() -> DevicePolicy:
    """The policy in force (from the environment until :func:`set_policy` is called)."""
    global _current
    if _current is None:
        set_policy(policy_from_env())
    return _current  # type: ignore[return-value]


def set_policy(policy: DevicePolicy) -> DevicePolicy:
    """Make ``policy`` the process-wide one and apply its global switches; returns the
    previous policy."""
    global _current
    previous = _current or DevicePolicy()
    _current = policy
    if policy.deterministic or previous.deterministic:
        # only switch off what a policy switched on: a user's own torch setting survives
        set_deterministic(policy.deterministic)
    tf32 = policy.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32  # torch's default is True: fp32 means fp32 here
    torch.backends.cudnn.benchmark = policy.cudnn_benchmark and not policy.deterministic
    return previous


@contextlib.contextmanager
def use_policy(policy: DevicePolicy) -> Iterator[DevicePolicy]:
    """``with use_policy(p):`` runs the block under ``p`` and restores the previous one."""
    previous = set_policy(policy)
    try:
        yield policy
    finally:
        set_policy(previous)


def set_deterministic(on: bool) -> None:
    """Deterministic kernels only (a warning where PyTorch has none), no cuDNN
    autotuning, and a fixed cuBLAS workspace so CUDA matmuls reduce in a fixed order."""
    if on:
        # must be set before the first cuBLAS call of the process to take effect
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: an op without a deterministic CUDA kernel warns instead of stopping a long
    # run; the known one in our models (adaptive average pooling's backward) is replaced
    # by a plain mean in prepare_model
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on


def autocast(device: torch.device | str, precision: str | None = None):
    """The autocast context for ``precision`` (default: the policy's) on ``device``; a
    no-op context for fp32/tf32."""
    precision = precision or current_policy().precision
    dtype = _AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, precision: str | None = None) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 has float32's exponent range);
    a disabled scaler passes losses and steps through unchanged."""
    precision = precision or current_policy().precision
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


class GlobalMeanPool(nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a plain mean: its CUDA backward is deterministic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def _is_global_pool(m: nn.Module) -> bool:
    return isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))


def prepare_model(
    model: nn.Module, device: torch.device | str, policy: DevicePolicy | None = None
) -> nn.Module:
    """Move ``model`` to ``device`` and apply the policy's memory format, deterministic
    pooling and compile, in place (names and shapes of parameters never change)."""
    policy = policy or current_policy()
    device = torch.device(device)
    model.to(device)
    if policy.deterministic and device.type == "cuda":
        for parent in model.modules():
            for name, child in parent.named_children():
                if _is_global_pool(child):
                    setattr(parent, name, GlobalMeanPool())
    if policy.uses_channels_last(device):
        model.to(memory_format=torch.channels_last)
    if policy.compile and not getattr(model, "_salun_compiled", False):
        model.compile()
        model._salun_compiled = True
    return model


def prepare_input(x: torch.Tensor, policy: DevicePolicy | None = None) -> torch.Tensor:
    """A batch in the policy's memory format (channels_last for 4-D images where asked)."""
    policy = policy or current_policy()
    if x.dim() == 4 and policy.uses_channels_last(x.device):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def on_device(data: ImageDataset, device: torch.device | str) -> ImageDataset:
    """The dataset's tensors on ``device`` (uint8 images: ~47 MB for Fashion-MNIST), so
    batches are cut and augmented there and never cross the bus; no copy if already there."""
    device = torch.device(device)
    if data.images.device == device and data.labels.device == device:
        return data
    return ImageDataset(data.images.to(device), data.labels.to(device))


def autocast_train_forward(model: nn.Module) -> None:
    """Run the model's train-mode forwards under the current policy's autocast (hooks,
    installed once per model). Eval-mode forwards (evaluation, saliency) stay float32, and
    backward passes run outside autocast, as PyTorch recommends."""
    if getattr(model, "_salun_autocast_hooks", False):
        return
    stack: list = []

    def enter(module, args):
        ctx = autocast(_device_of(module)) if module.training else contextlib.nullcontext()
        ctx.__enter__()
        stack.append(ctx)

    def leave(module, args, output):
        if stack:
            stack.pop().__exit__(None, None, None)

    model.register_forward_pre_hook(enter)
    model.register_forward_hook(leave, always_call=True)  # also when forward raises
    model._salun_autocast_hooks = True


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@dataclass(frozen=True)
class PolicyOptions:
    """The device-policy flags; unset ones keep the environment's value (see
    :func:`policy_from_env`).

    Attributes:
        precision: default: fp32 ($SALUN_PRECISION)
        channels_last: default: auto (on for CUDA)
        deterministic: bit-exact CUDA reruns (slower; $SALUN_DETERMINISTIC)
        compile: torch.compile ($SALUN_COMPILE)
    """

    precision: str | None = option(choices=PRECISIONS)
    channels_last: str | None = option(choices=["auto", "on", "off"])
    deterministic: bool | None = None
    compile: bool | None = None


def add_policy_arguments(parser) -> None:
    """Add :class:`PolicyOptions`' ``--precision``, ``--channels-last``, ``--deterministic``
    and ``--compile`` to an argparse parser, in their own group of the help."""
    add_options(parser, PolicyOptions, title="device policy (docs/gpu.md)")


def apply_policy_arguments(args) -> DevicePolicy:
    """The policy from the environment overridden by the flags of
    :func:`add_policy_arguments`; made the process-wide policy and returned."""
    p = policy_from_env()
    changes = {}
    if getattr(args, "precision", None):
        changes["precision"] = args.precision
    if getattr(args, "channels_last", None):
        changes["channels_last"] = {"auto": None, "on": True, "off": False}[args.channels_last]
    if getattr(args, "deterministic", None):
        changes["deterministic"] = True
    if getattr(args, "compile", None):
        changes["compile"] = True
    policy = DevicePolicy(**{**p.as_record(), **changes})
    set_policy(policy)
    return policy
