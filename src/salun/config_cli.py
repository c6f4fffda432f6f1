"""Command-line flags generated from frozen config dataclasses, so flags and API never drift.

Each field becomes ``--field-name`` with its type, default and the help text from the
``Attributes:`` section of the class docstring (searched through base classes).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from typing import Any

from salun.errors import SalunError


class UsageError(SalunError):
    """A bad command line (unknown flag, wrong type, missing argument)."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one :class:`UsageError` instead of usage text
    plus ``exit(2)``: the CLI prints every user error as the same single line. Subparsers
    (``salun gen sample``...) inherit the class, so every level behaves alike."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def field_docs(cls: type) -> dict[str, str]:
    """Field descriptions from the ``Attributes:`` sections of ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        text = inspect.getdoc(klass) or ""
        if "Attributes:" not in text:
            continue
        section = text.split("Attributes:", 1)[1]
        current = None
        for line in section.splitlines():
            m = re.match(r"^\s{4}(\w+)(?:,\s*\w+)*:\s*(.*)$", line)
            if m:
                current = m.group(1)
                docs[current] = m.group(2).strip()
                for extra in re.findall(r",\s*(\w+)", line.split(":")[0]):
                    docs[extra] = docs[current]
            elif current and line.startswith("        "):
                docs[current] += " " + line.strip()
            elif line.strip() and not line.startswith(" "):
                break
    return docs


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(element type, is_tuple) for int/float/str/bool and tuple[...]."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return (args[0] if args else str), True
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return tp, False


def _parse_bool(text: str) -> bool:
    t = text.lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_dataclass_args(
    parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()
) -> None:
    """Add one flag per field of ``cls`` (defaults None, so only given flags override)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(f"{cls.__name__} settings")
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        tp, is_tuple = _base_type(hints[f.name])
        conv = _parse_bool if tp is bool else tp
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{docs.get(f.name, '')} (default: {default})".strip()
        kwargs: dict[str, Any] = {
            "type": conv,
            "default": None,
            "help": help_text,
            "dest": f"cfg_{f.name}",
        }
        if is_tuple:
            kwargs["nargs"] = "*"
        if tp is bool:
            kwargs["metavar"] = "{true,false}"
        group.add_argument(f"--{f.name.replace('_', '-')}", **kwargs)


def overrides_from_args(ns: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields the user actually set on the command line."""
    out = {}
    for f in dataclasses.fields(cls):
        v = getattr(ns, f"cfg_{f.name}", None)
        if v is not None:
            out[f.name] = tuple(v) if isinstance(v, list) else v
    return out


def dataclass_from_args(ns: argparse.Namespace, cls: type, **base: Any):
    """Build ``cls`` from ``base`` values overridden by the flags that were given."""
    return cls(**{**base, **overrides_from_args(ns, cls)})
