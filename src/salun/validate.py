"""Small checks for config fields, shared by every config dataclass.

Each check raises one :class:`~salun.errors.SalunError` that names the field, shows the bad
value and states the allowed range, e.g. ``lr must be a finite number > 0, got nan``. Call
them from ``__post_init__`` so a bad value is refused when the config is built, before any
work starts (a bench grid is checked before the first model trains).

:func:`check_fields` is the safety net every config calls first: each field must have its
annotated type (``int``, ``float``, ``str``, ``bool``, tuples of them, ``X | None``) and
every float must be finite and within float32's range (torch computes in float32). A
field added later by anyone gets that for free; range checks
(``check_positive`` ...) are then one line per field.

Example:
    >>> check_positive("lr", 0.1)
    >>> check_range("momentum", 0.9, 0, 1)
    >>> check_positive("lr", float("nan"))
    Traceback (most recent call last):
    ...
    salun.errors.SalunError: lr must be a finite number > 0, got nan
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Iterable
from typing import Any

from salun.errors import SalunError

FLOAT32_MAX = 3.4028234663852886e38


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_finite(name: str, value: Any) -> None:
    """``value`` must be a real number, not NaN or ±inf."""
    if not _is_real(value) or not math.isfinite(value):
        raise SalunError(f"{name} must be a finite number, got {_show(value)}")


def check_positive(name: str, value: Any) -> None:
    """A finite number > 0 (learning rates, scales, widths)."""
    if not _is_real(value) or not math.isfinite(value) or not value > 0:
        raise SalunError(f"{name} must be a finite number > 0, got {_show(value)}")


def check_nonnegative(name: str, value: Any) -> None:
    """A finite number >= 0 (weight decay, loss weights, clip norms where 0 disables)."""
    if not _is_real(value) or not math.isfinite(value) or not value >= 0:
        raise SalunError(f"{name} must be a finite number >= 0, got {_show(value)}")


def check_int(
    name: str, value: Any, minimum: int | None = None, maximum: int | None = None
) -> None:
    """An integer (not a bool) within ``[minimum, maximum]`` (either end optional)."""
    ok = _is_int(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        if minimum is not None and maximum is not None:
            want = f"an integer in [{minimum}, {maximum}]"
        elif minimum is not None:
            want = f"an integer >= {minimum}"
        elif maximum is not None:
            want = f"an integer <= {maximum}"
        else:
            want = "an integer"
        raise SalunError(f"{name} must be {want}, got {_show(value)}")


def check_seed(name: str, value: Any) -> None:
    """Seeds are integers in [0, 2**63 - 1] (what ``torch.manual_seed`` accepts)."""
    check_int(name, value, 0, 2**63 - 1)


def check_resolution(name: str, value: Any, multiple: int = 8) -> None:
    """An image side: a positive integer multiple of ``multiple`` (SD latents are 1/8)."""
    if not _is_int(value) or value < multiple or value % multiple:
        raise SalunError(
            f"{name} must be a positive multiple of {multiple} (e.g. 512), got {_show(value)}"
        )


def check_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = True,
) -> None:
    """A finite number in the interval from ``low`` to ``high``; by default ``[low, high)``."""
    ok = _is_real(value) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise SalunError(f"{name} must lie in {interval}, got {_show(value)}")


def check_keys(mapping: Any, allowed: Iterable[str], where: str) -> None:
    """A config mapping holds only ``allowed`` keys (the first unknown one is named)."""
    allowed = set(allowed)
    bad = sorted(set(mapping) - allowed)
    if bad:
        raise SalunError(
            f"{where}: unknown key {bad[0]!r}; allowed keys are: {', '.join(sorted(allowed))}"
        )


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise SalunError(
            f"{name} must be one of {', '.join(map(_show, choices))}, got {_show(value)}"
        )


def check_each(name: str, values: Iterable[Any], check, *args: Any, **kwargs: Any) -> None:
    """Apply ``check`` to every element; the message names the element, e.g. ``lr_grid[1]``."""
    for i, v in enumerate(values):
        check(f"{name}[{i}]", v, *args, **kwargs)


def check_increasing(name: str, values: Iterable[Any]) -> None:
    """Strictly increasing positive integers (e.g. multistep milestones)."""
    values = tuple(values)
    check_each(name, values, check_int, 1)
    if any(b <= a for a, b in zip(values, values[1:])):
        raise SalunError(
            f"{name} must be strictly increasing positive integers, got {list(values)}"
        )


def _type_ok(value: Any, tp: Any, path: str) -> None:
    """Raise unless ``value`` fits annotation ``tp`` (a small subset of typing)."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                _type_ok(value, a, path)
                return
            except SalunError as e:
                errors.append(e)
        raise errors[0]
    if origin is typing.Literal:
        check_choice(path, value, typing.get_args(tp))
        return
    if origin is tuple:
        if not isinstance(value, tuple | list):
            raise SalunError(f"{path} must be a list, got {_show(value)}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if args:
            fixed = Ellipsis not in typing.get_args(tp) and len(args) > 1
            for i, v in enumerate(value):
                _type_ok(v, args[i] if fixed and i < len(args) else args[0], f"{path}[{i}]")
        return
    if origin is not None:  # dict[...], Mapping[...]: checked by the config itself
        return
    if tp is bool:
        if not isinstance(value, bool):
            raise SalunError(f"{path} must be true or false, got {_show(value)}")
    elif tp is int:
        if not _is_int(value):
            raise SalunError(f"{path} must be an integer, got {_show(value)}")
    elif tp is float:
        check_finite(path, value)
        if abs(value) > FLOAT32_MAX:  # torch keeps lr & co. in float32 tensors: 1e308 crashed
            raise SalunError(
                f"{path} must lie within float32's range (|x| <= 3.4e38), got {_show(value)}"
            )
    elif tp is str:
        if not isinstance(value, str):
            raise SalunError(f"{path} must be a string, got {_show(value)}")


def check_fields(obj: Any) -> None:
    """Every field of dataclass ``obj`` has its annotated type and every float is finite.

    Ints are accepted where a float is annotated (``lr: 1`` in YAML). Fields annotated with
    anything else (dicts, classes) are left to the config's own checks.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.name in hints:
            _type_ok(getattr(obj, f.name), hints[f.name], f.name)


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    import os

    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(name: str, value: Any) -> None:
    """A thread count in [1, the CPUs of this machine]: ``torch.set_num_threads(100000)``
    segfaults (OpenMP allocates per thread) instead of failing, so it is refused here."""
    check_int(name, value, 1, max(cpu_count(), 1))
