"""Command-line flags generated from dataclasses, so flags and API never drift.

Every option of every ``salun`` verb comes from here, in one of two ways:

- :func:`add_dataclass_args`: the fields of a *config* (a method's, a trainer's...) become
  override flags: default None, so only the flags given change the config
  (:func:`overrides_from_args`); dest ``cfg_<field>``.
- :func:`add_options`: the fields of a small *option group* dataclass (a verb's ``--out``,
  ``--model``...) become ordinary options: dest ``<field>``, the field's default, and
  argparse details (flag spelling, choices, required...) from :func:`option`.

Each field's help is its description in the ``Attributes:`` section of the class docstring
(searched through base classes). Every action made here carries its dataclass in
``action.salun_source``; a test walks the whole parser tree and fails on any option
added by hand.
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


def _help(text: str) -> str:
    # argparse %-formats help strings; RST's ``literal`` reads as `literal` on a terminal
    return re.sub(r"``([^`]+)``", r"`\1`", text).replace("%", "%%")


def _tag(action: argparse.Action, cls: type) -> argparse.Action:
    action.salun_source = cls  # type: ignore[attr-defined]  # checked by tests/test_cli_tree.py
    return action


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
        help_text = _help(f"{docs.get(f.name, '')} (default: {default})".strip())
        kwargs: dict[str, Any] = {
            "type": conv,
            "default": None,
            "help": help_text,
            "dest": f"cfg_{f.name}",
        }
        if is_tuple:
            kwargs["nargs"] = "*"
        # the value's name is the field's, not the cfg_ dest (``--steps STEPS``)
        kwargs["metavar"] = "{true,false}" if tp is bool else f.name.upper()
        _tag(group.add_argument(f"--{f.name.replace('_', '-')}", **kwargs), cls)


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


# -- option groups: a verb's own options as a small dataclass ------------------------------

CLI_KEY = "salun.cli"  # the key of :func:`option`'s settings in a field's metadata


def option(
    default: Any = None,
    *,
    flag: str | None = None,
    short: str | None = None,
    choices: Any = None,
    required: bool = False,
    append: bool = False,
    nargs: str | None = None,
    metavar: str | None = None,
    positional: bool = False,
    one_of: str | None = None,
) -> Any:
    """A dataclass field with the argparse details :func:`add_options` needs.

    Args:
        default: the option's default (a tuple default becomes a list, like nargs' values).
        flag: the flag when it is not ``--field-name`` (an old spelling users' scripts use).
        short: an extra short flag (``-h``).
        choices: the allowed values, or a function returning them (called when the parser
            is built, so a heavy import waits until then).
        required: the option must be given.
        append: a tuple field taken from a repeated flag (``--keep 0.1 --keep 0.5``) instead
            of one flag with several values.
        nargs: for tuple fields, ``"*"`` (default) or ``"+"``.
        metavar: the value's name in ``--help``.
        positional: a positional argument instead of a flag.
        one_of: fields with the same name form a mutually exclusive group (required when
            any of them is ``required``).
    """
    settings = {
        "flag": flag,
        "short": short,
        "choices": choices,
        "required": required,
        "append": append,
        "nargs": nargs,
        "metavar": metavar,
        "positional": positional,
        "one_of": one_of,
    }
    return dataclasses.field(default=default, metadata={CLI_KEY: settings})


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    title: str | None = None,
    skip: tuple[str, ...] = (),
) -> list[argparse.Action]:
    """Add one option per field of the option-group dataclass ``cls``; returns the actions.

    ``title`` puts them in an argument group of that name (default: the parser's own
    options list). Fields without a docstring description are a programming error.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    target = parser.add_argument_group(title) if title else parser
    exclusive: dict[str, Any] = {}
    actions = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        if f.name not in docs:
            raise TypeError(f"{cls.__name__}.{f.name} has no description under Attributes:")
        meta = {"required": False, "positional": False, **(f.metadata.get(CLI_KEY) or {})}
        tp, is_tuple = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"help": _help(docs[f.name])}
        if tp is bool and not is_tuple:
            kwargs.update(action="store_true", default=default)
        else:
            if tp is not str:
                kwargs["type"] = tp
            kwargs["default"] = list(default) if isinstance(default, tuple) else default
            if meta.get("choices") is not None:
                choices = meta["choices"]
                kwargs["choices"] = choices() if callable(choices) else choices
            if meta.get("metavar") is not None:
                kwargs["metavar"] = meta["metavar"]
            if is_tuple and meta.get("append"):
                kwargs["action"] = "append"
            elif is_tuple:
                kwargs["nargs"] = meta.get("nargs") or "*"
        if meta["positional"]:
            names = [f.name]
        else:
            names = [meta["short"]] if meta.get("short") else []
            names.append(meta.get("flag") or f"--{f.name.replace('_', '-')}")
            kwargs["dest"] = f.name
        where = target
        if meta.get("one_of"):
            key = meta["one_of"]
            if key not in exclusive:
                needed = any(
                    (g.metadata.get(CLI_KEY) or {}).get("one_of") == key
                    and (g.metadata.get(CLI_KEY) or {}).get("required")
                    for g in dataclasses.fields(cls)
                )
                exclusive[key] = target.add_mutually_exclusive_group(required=needed)
            where = exclusive[key]
        elif meta["required"]:
            kwargs["required"] = True
        actions.append(_tag(where.add_argument(*names, **kwargs), cls))
    return actions


def options_from_args(ns: argparse.Namespace, cls: type, **fixed: Any):
    """``cls`` from the namespace's values of its fields (lists back to tuples) and ``fixed``."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.init and hasattr(ns, f.name):
            v = getattr(ns, f.name)
            values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**{**values, **fixed})
