"""Every option of every ``salun`` verb is generated from a dataclass (salun.config_cli).

The walk covers the whole parser tree plus the per-method parsers of ``salun unlearn
--method M`` and ``salun sd unlearn --method M``. An option added with a hand-written
``add_argument`` carries no ``salun_source`` and fails the walk; the snapshot test fails
when a flag users' scripts rely on is renamed, loses its default or changes its kind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

from salun.cli import build_parser
from salun.cli import method_parser as classifier_method_parser
from salun.generation.sd.cli import method_parser as sd_method_parser
from salun.generation.sd.unlearn import CONFIGS as SD_CONFIGS
from salun.methods import list_methods

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).parent / "snapshots" / "cli_flags.json"


def walk(parser: argparse.ArgumentParser, path: str):
    """(path, parser) for ``parser`` and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")


def all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    found = list(walk(build_parser(), "salun"))
    found += [(f"salun unlearn --method {m}", classifier_method_parser(m)) for m in list_methods()]
    found += [(f"salun sd unlearn --method {m}", sd_method_parser(m)) for m in sorted(SD_CONFIGS)]
    return found


def hand_built(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """The options of ``parser`` that did not come from the generator, or came without help."""
    bad = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue  # argparse's own -h and the subcommand slot
        name = "/".join(action.option_strings) or action.dest
        source = getattr(action, "salun_source", None)
        if source is None or not dataclasses.is_dataclass(source):
            # the fix: a field of an option-group dataclass, added with config_cli.add_options
            bad.append(f"{path}: {name} is not generated from a dataclass")
            continue
        fields = {f.name for f in dataclasses.fields(source)}
        if action.dest not in fields | {f"cfg_{f}" for f in fields}:
            bad.append(f"{path}: {name} claims {source.__name__}, which has no such field")
        if not action.help:
            bad.append(f"{path}: {name} has no help")
    return bad


def test_every_option_of_every_verb_comes_from_a_dataclass():
    parsers = all_parsers()
    paths = {p for p, _ in parsers}
    # the walk reaches every family (a walk that saw nothing would pass vacuously)
    expected = {
        "salun split", "salun train", "salun evaluate", "salun mask", "salun unlearn",
        "salun bench", "salun report", "salun audit", "salun gen train", "salun gen evaluate",
        "salun sd tiny", "salun sd mask", "salun sd unlearn", "salun sd generate",
        "salun sd evaluate nudity", "salun sd evaluate classes", "salun sd evaluate fid",
        "salun unlearn --method salun", "salun sd unlearn --method esd",
    }  # fmt: skip
    assert expected <= paths
    checked = sum(len(p._actions) for _, p in parsers)
    assert checked > 400
    bad = [line for path, p in parsers for line in hand_built(path, p)]
    assert bad == []


def test_a_hand_built_option_is_caught():
    parsers = dict(walk(build_parser(), "salun"))
    p = parsers["salun sd mask"]
    assert hand_built("salun sd mask", p) == []
    p.add_argument("--extra", help="added by hand")
    assert hand_built("salun sd mask", p) == [
        "salun sd mask: --extra is not generated from a dataclass"
    ]

    # a tag that names a dataclass without the option's field is caught too
    from salun.cli_options import RunOptions

    forged = parsers["salun split"].add_argument("--forged", help="x")
    forged.salun_source = RunOptions
    assert hand_built("salun split", parsers["salun split"]) == [
        "salun split: --forged claims RunOptions, which has no such field"
    ]


def test_no_add_argument_outside_the_generator():
    """Parsers built lazily (inside a handler) escape the walk; the source cannot."""
    offenders = []
    for path in sorted((ROOT / "src" / "salun").rglob("*.py")):
        if path.name == "config_cli.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.add_argument\(", line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}")
    assert offenders == []


def _flag_rows(parser: argparse.ArgumentParser) -> dict[str, list]:
    rows = {}
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction | argparse._SubParsersAction):
            continue
        kind = getattr(a.type, "__name__", None) if a.type is not None else None
        rows[a.dest] = [
            list(a.option_strings),
            type(a).__name__,
            repr(a.default),
            None if kind == "str" else kind,  # type=str and no type parse alike
            a.nargs,
            list(a.choices) if a.choices else None,
            a.required,
        ]
    return rows


def test_every_flag_users_scripts_use_is_kept():
    """The flags as they were before the parsers moved onto the generator: spelling, dest,
    default, type, nargs, choices and required are unchanged (new flags may be added)."""
    snapshot = json.loads(SNAPSHOT.read_text())
    now = {path: _flag_rows(p) for path, p in walk(build_parser(), "salun")}
    changed = []
    for verb, flags in snapshot.items():
        for dest, row in flags.items():
            got = now.get(verb, {}).get(dest)
            if got != row:
                changed.append(f"{verb} {dest}: {row} -> {got}")
    assert changed == []
    assert sum(len(f) for f in snapshot.values()) == 316  # the snapshot itself is whole


def test_mutually_exclusive_sources_are_kept():
    parsers = dict(walk(build_parser(), "salun"))
    for verb in ("salun bench", "salun audit"):
        groups = parsers[verb]._mutually_exclusive_groups
        assert [(sorted(a.dest for a in g._group_actions), g.required) for g in groups] == [
            (["config", "preset"], True)
        ]
