"""salun.config_cli.add_options: option-group dataclasses become argparse options."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from salun.config_cli import OneLineParser, UsageError, add_options, option, options_from_args


def _colours() -> list[str]:
    return ["red", "blue"]


@dataclass(frozen=True)
class Demo:
    """A demo option group.

    Attributes:
        src: where from
        dst: where to,
            over two lines
        data: dataset, 100 % of it
        level: a level
        keep: kept fractions
        tags: some tags
        ids: some ids
        verbose: talk more
        maybe: a tri-state switch
        colour: a colour
        name: a positional name
    """

    src: str | None = option(one_of="where", required=True)
    dst: str | None = option(one_of="where", required=True)
    data: str | None = option(flag="--data-spec")
    level: int = 3
    keep: tuple[float, ...] | None = option(None, append=True)
    tags: tuple[str, ...] = ("a", "b")
    ids: tuple[int, ...] = option((), nargs="+")
    verbose: bool = option(False, short="-v")
    maybe: bool | None = None
    colour: str = option("red", choices=_colours)
    name: str | None = option(positional=True)


def _parser() -> OneLineParser:
    p = OneLineParser(prog="demo")
    add_options(p, Demo)
    return p


def test_defaults_and_types():
    ns = _parser().parse_args(["--src", "s", "N"])
    assert vars(ns) == {
        "src": "s",
        "dst": None,
        "data": None,
        "level": 3,
        "keep": None,
        "tags": ["a", "b"],  # a tuple default arrives as a list, like nargs' values
        "ids": [],
        "verbose": False,
        "maybe": None,
        "colour": "red",
        "name": "N",
    }
    ns = _parser().parse_args(
        "--dst d --data-spec x --level 7 --keep 0.1 --keep 0.5 --tags --ids 4 5 -v --maybe "
        "--colour blue M".split()
    )
    assert (ns.dst, ns.data, ns.level, ns.keep) == ("d", "x", 7, [0.1, 0.5])
    assert (ns.tags, ns.ids, ns.verbose, ns.maybe, ns.colour, ns.name) == (
        [], [4, 5], True, True, "blue", "M"
    )  # fmt: skip
    assert isinstance(ns.level, int)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["N"], "one of the arguments --src --dst is required"),
        (["--src", "s", "--dst", "d", "N"], "not allowed with argument"),
        (["--src", "s", "--level", "x", "N"], "invalid int value"),
        (["--src", "s", "--colour", "green", "N"], "invalid choice"),
        (["N", "--src", "s", "--ids"], "expected at least one argument"),
        (["--src", "s", "--dataset", "x", "N"], "unrecognized arguments"),  # --data-spec
    ],
)
def test_bad_command_lines_are_one_line_errors(argv, words):
    with pytest.raises(UsageError, match=words):
        _parser().parse_args(argv)


def test_help_is_the_docstring_and_actions_name_their_dataclass():
    p = _parser()
    by_dest = {a.dest: a for a in p._actions}
    assert by_dest["dst"].help == "where to, over two lines"
    assert by_dest["data"].help == "dataset, 100 %% of it"  # escaped for argparse
    assert "dataset, 100 % of it" in " ".join(p.format_help().split())
    assert all(by_dest[f].salun_source is Demo for f in ("src", "name", "verbose"))


def test_title_groups_the_options_and_skip_leaves_fields_out():
    p = argparse.ArgumentParser()
    actions = add_options(p, Demo, title="demo things", skip=("src", "dst", "name"))
    assert [a.dest for a in actions] == [
        "data", "level", "keep", "tags", "ids", "verbose", "maybe", "colour"
    ]  # fmt: skip
    group = next(g for g in p._action_groups if g.title == "demo things")
    assert [a.dest for a in group._group_actions] == [a.dest for a in actions]


def test_a_field_without_description_is_a_programming_error():
    @dataclass
    class Undocumented:
        """No attributes section."""

        x: int = 1

    with pytest.raises(TypeError, match=r"Undocumented\.x has no description"):
        add_options(argparse.ArgumentParser(), Undocumented)


def test_options_from_args_builds_the_dataclass():
    ns = _parser().parse_args(["N", "--src", "s", "--ids", "1", "2"])
    d = options_from_args(ns, Demo, level=9)
    assert d == Demo(src="s", ids=(1, 2), level=9, name="N")  # lists back to tuples
    assert options_from_args(argparse.Namespace(level=4), Demo) == Demo(level=4)
