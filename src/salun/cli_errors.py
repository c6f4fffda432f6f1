"""The one line a bad command line gets: ``salun: error: <what> (see `salun VERB --help`)``,
with a "did you mean" for an unknown verb or flag (difflib, the closest known spelling).

argparse reports a subcommand's unknown flags from the top parser (whose prog is
``salun``), so the verb is found again from the command line itself.
"""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Callable, Sequence

_PROG = re.compile(r"^(salun[^:]*): ")  # "salun train: ..." -> the parser that complained
_HINT = re.compile(r" \(see `[^`]+`\)$")
_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from ([^)]*)\)")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)$")


def usage_line(
    message: str,
    argv: Sequence[str],
    root: argparse.ArgumentParser,
    extra_flags: Callable[[str], list[str]] = lambda prog: [],
) -> str:
    """The text after ``salun: error: `` for a :class:`~salun.config_cli.UsageError`.

    Args:
        message: the error's text, ``"<prog>: <what> (see `<prog> --help`)"``.
        argv: the command line (without ``salun``), to find the verb a flag belongs to.
        root: the ``salun`` parser.
        extra_flags: flags of a parser built later (``salun unlearn --method M``), by prog.
    """
    m = _PROG.match(message)
    prog = m.group(1) if m else "salun"
    what = _HINT.sub("", message[m.end() :] if m else message)
    parser = _parser_for(root, argv) if prog == "salun" else None
    if parser is not None:
        prog = parser.prog
    flags = _flags(parser) if parser is not None else []
    flags += extra_flags(prog)
    guess = _suggestion(what, flags)
    if guess:
        what += f"; did you mean {guess}?"
    return f"{what} (see `{prog} --help`)"


def _parser_for(root: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The deepest subcommand parser that ``argv`` names (``salun gen sample ...``)."""
    parser = root
    for token in argv:
        subs = _subparsers(parser)
        if subs is None or token not in subs.choices:
            if token.startswith("-") or subs is None:
                continue
            break  # a positional that is no verb: stop descending
        parser = subs.choices[token]
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def _suggestion(what: str, flags: list[str]) -> str | None:
    m = _CHOICE.search(what)
    if m:
        choices = re.findall(r"'([^']*)'", m.group(2))
        return _closest(m.group(1), choices)
    m = _UNRECOGNIZED.search(what)
    if m:
        for token in m.group(1).split():
            if token.startswith("--"):
                guess = _closest(token.split("=", 1)[0], flags)
                if guess:
                    return guess
    return None


def _closest(word: str, known: Sequence[str]) -> str | None:
    found = difflib.get_close_matches(word, list(dict.fromkeys(known)), n=1, cutoff=0.6)
    return found[0] if found else None
