"""The README's quick start and "Command line" block, run as written at toy scale.

Each line of the block is read from README.md itself, so a README edit that breaks the
sequence (a flag that does not exist, a file name the next command cannot find) fails
here. Toy scale: the data becomes ``synthetic``, training and unlearning one epoch, the
``quick`` benchmark the ``ci`` one; the heavy verbs (the audit, its benchmark) are parsed
with the README's arguments but not run. Every command's output must exist and be
accepted by the next command that names it.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from salun.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

# what changes to run the block at toy scale: (written, substituted)
TOY = [
    ("--data fashion-mnist", "--data synthetic"),
    ("--epochs 8", "--epochs 1"),
    ("--preset quick", "--preset ci"),
]
PARSE_ONLY = ("audit", "audit-bench-cpu")  # minutes to hours even at their smallest
ASSUMED = {
    "split.json": "split",
    "class3.json": "split",
    "original": "train",
    "mask.safetensors": "mask",
    "unlearned": "unlearn",
    "runs/quick": "bench",
}


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"README has no section {title!r}"
    return m.group(1)


def command_block() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", readme_section("Command line"), re.S)
    assert block, "the Command line section has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def as_argv(line: str) -> list[str] | None:
    """The arguments after ``salun`` (None for a line that is no single salun command):
    comments and ``[optional parts]`` dropped, the toy substitutions applied."""
    line = line.split("#", 1)[0]
    line = re.sub(r"\[[^\]]*\]", "", line).strip()
    if not line.startswith("salun ") or "..." in line:
        return None
    for written, toy in TOY:
        line = line.replace(written, toy)
    return shlex.split(line)[1:]


def test_the_quick_start_says_how_salun_gets_on_path():
    quick = readme_section("Quick start")
    assert ". .venv/bin/activate" in quick and ".venv/bin/salun" in quick
    # the commands below it call `salun` itself: the block starts by activating
    assert command_block()[0].startswith(". .venv/bin/activate")
    # and the venv's salun is the package's console script, next to its python
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\[project\.scripts\]\nsalun = "salun\.cli:main"', pyproject, re.M)
    assert (Path(sys.executable).parent / "salun").is_file()


def test_the_command_line_block_runs_in_order_and_each_output_feeds_the_next(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SALUN_CONFIGS", str(ROOT / "configs"))
    lines = command_block()
    commands = [argv for argv in map(as_argv, lines) if argv is not None]
    verbs = [a[0] if a[0] != "--version" else "--version" for a in commands]
    # the sequence a new user follows is all there (a block that lost a step fails here)
    for verb in ("split", "train", "mask", "unlearn", "evaluate", "bench", "report"):
        assert verb in verbs, verb
    made: dict[str, str] = {}
    ran = 0
    for argv in commands:
        if argv[0] == "unlearn" and "--help" not in argv:
            argv = [*argv, "--epochs", "1"]
        if argv[0] in PARSE_ONLY or any(p in argv for p in PARSE_ONLY):
            build_parser().parse_args(argv)  # the flags as written are accepted
            continue
        inputs = [a for a in argv[1:] if a in ASSUMED]
        for name in inputs:
            if name != _out(argv):
                assert name in made, f"{' '.join(argv)}: {name} was not made by an earlier line"
        with _exit_code() as code:
            code.value = main([*argv, "--quiet"] if _computes(argv) else argv)
        out, err = capsys.readouterr()
        assert code.value == 0, f"salun {' '.join(argv)} failed: {err}"
        ran += 1
        target = _out(argv)
        if target is not None:
            assert (tmp_path / target).exists(), f"salun {' '.join(argv)} did not write {target}"
            made[target] = argv[0]
        if argv[0] == "evaluate":
            metrics = json.loads(out)
            assert set(metrics) >= {"UA", "RA", "TA", "MIA"}
        if argv[0] == "report":
            assert (tmp_path / argv[1] / "report.md").is_file()
            assert (tmp_path / argv[1] / "report.html").is_file()
    assert ran >= 10
    # every file the block names as an input was made by the block itself
    assert {"split.json", "original", "mask.safetensors", "unlearned", "runs/quick"} <= set(made)
    assert json.loads((tmp_path / "unlearned" / "model.json").read_text())["mask"]["keep"] == 0.5


def _out(argv: list[str]) -> str | None:
    if "--out" in argv:
        return argv[argv.index("--out") + 1]
    return None


def _computes(argv: list[str]) -> bool:
    return argv[0] in ("train", "mask", "unlearn", "evaluate", "bench") and "--help" not in argv


class _exit_code:
    """``main`` returns a code; ``--help`` exits through SystemExit(0) instead."""

    value: int | None = None

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is SystemExit:
            self.value = exc.code or 0
            return True
        return False


def test_toy_substitutions_only_touch_scale():
    """The substitutions must leave every line's verb and file names as the README has them."""
    for line in command_block():
        argv = as_argv(line)
        if argv is None:
            continue
        written = shlex.split(re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]))[1:]
        assert argv[0] == written[0]
        assert [a for a in argv if a in ASSUMED] == [a for a in written if a in ASSUMED]


@pytest.mark.parametrize("line", ["salun gen ... / salun sd ...", "# a comment"])
def test_placeholder_lines_are_not_commands(line):
    assert as_argv(line) is None
