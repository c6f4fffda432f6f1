"""``salun <verb>``: split | train | evaluate | mask | unlearn | methods (+ bench, report, gen, sd).

User errors (:class:`SalunError`) print one line and exit with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from dataclasses import dataclass

from salun.cli_options import (
    DataOption,
    EvaluateOptions,
    HelpOption,
    MaskOptions,
    PluginOption,
    RunOptions,
    SplitOptions,
    ThreadsOption,
    TrainOptions,
    UnlearnOptions,
)
from salun.config_cli import (
    OneLineParser,
    UsageError,
    add_dataclass_args,
    add_options,
    dataclass_from_args,
    overrides_from_args,
)
from salun.errors import SalunError
from salun.outputs import add_overwrite_flag
from salun.train import TrainConfig
from salun.validate import check_each, check_int, check_range, check_seed


@dataclass(frozen=True)
class TopOptions:
    """The options of ``salun`` itself (before the verb).

    Attributes:
        version: print salun's version and exit
    """

    version: bool = False


def _common(p: argparse.ArgumentParser) -> None:
    from salun.precision import add_policy_arguments

    add_options(p, RunOptions)  # --device, --quiet
    add_threads_flag(p)
    add_policy_arguments(p)  # --precision, --channels-last, --deterministic, --compile


def add_threads_flag(p: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU thread count for the command (see :func:`_run`)."""
    add_options(p, ThreadsOption)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with ``torch.set_num_threads(n)`` (None: unchanged); restored afterwards, so an
    in-process caller (tests, notebooks) keeps its own setting."""
    if n is None:
        yield
        return
    from salun.validate import check_threads

    check_threads("--threads", n)  # 100000 threads segfaulted: at most the CPUs
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(  # every subcommand inherits its one-line errors
        prog="salun",
        description="Machine unlearning with weight saliency (SalUn, ICLR 2024).",
    )
    add_options(parser, TopOptions)  # --version (answered in _run before the verb is needed)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("split", help="write a forget/retain split file")
    add_options(p, SplitOptions)
    add_overwrite_flag(p)
    p.set_defaults(handler=cmd_split)

    p = sub.add_parser("train", help="train an original model (or any model from scratch)")
    add_options(p, TrainOptions)
    add_overwrite_flag(p)
    add_dataclass_args(p, TrainConfig)
    _common(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("evaluate", help="UA, RA, TA and MIA-efficacy of a model on a split")
    add_options(p, EvaluateOptions)
    add_options(p, DataOption)
    _common(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("mask", help="saliency masks from the forget set (one gradient pass)")
    add_options(p, MaskOptions)
    add_overwrite_flag(p)
    add_options(p, DataOption)
    _common(p)
    p.set_defaults(handler=cmd_mask)

    p = sub.add_parser(
        "unlearn",
        help="run an unlearning method; `salun unlearn --method NAME --help` lists its settings",
        add_help=False,
    )
    add_options(p, UnlearnOptions)
    add_overwrite_flag(p)
    add_options(p, DataOption)
    add_options(p, HelpOption)
    add_options(p, PluginOption)  # methods of the user's own modules (docs/plugins.md)
    _common(p)
    p.set_defaults(handler=cmd_unlearn, parser=p)

    p = sub.add_parser("methods", help="list the unlearning methods")
    add_options(p, PluginOption)
    p.set_defaults(handler=cmd_methods)

    for module, fn in (
        ("salun.bench.cli", "add_bench_subcommands"),
        ("salun.generation.ddpm.cli", "add_gen_subcommands"),
        ("salun.generation.sd.cli", "add_sd_subcommands"),
        ("salun.audit_cli", "add_audit_subcommands"),
        ("salun.tune_cli", "add_tune_subcommands"),  # salun tune (docs/your-model.md)
    ):
        _add_optional(sub, module, fn)
    _name_presets(sub)
    return parser


def _name_presets(sub: argparse._SubParsersAction) -> None:
    """``--preset``'s help lists the presets that exist for the verb (configs/*.yaml, read
    when the parser is built), so no help text names a stale or partial list."""
    from salun.bench.presets import preset_help

    for verb in ("bench", "audit"):
        parser = sub.choices.get(verb)
        for action in parser._actions if parser is not None else ():
            if "--preset" in action.option_strings:
                action.help = preset_help(verb).replace("%", "%%")


def _add_optional(sub, module: str, fn: str) -> None:
    """Subcommands that live in other packages; absent modules are simply not offered."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            return
        raise
    getattr(mod, fn)(sub)


def cmd_split(args) -> None:
    from salun.data import load_dataset, make_split, save_split
    from salun.data.forget_ids import split_request
    from salun.data.registry import canonical_spec
    from salun.outputs import claim_output

    claim_output(args.out, "split", overwrite=args.overwrite, inputs=[args.data, args.forget_ids])
    scenario, ids = split_request(args.scenario, args.forget_ids)  # a deletion request, or drawn
    bundle = load_dataset(args.data)
    split = make_split(
        bundle,
        scenario,
        ids=ids,
        fraction=args.fraction,
        count=args.count,
        classes=args.classes,
        seed=args.seed,
        val_fraction=args.val_fraction,
        data_spec=canonical_spec(args.data),
    )
    save_split(split, args.out)
    print(f"wrote {args.out}: {split.describe()}", file=sys.stderr)


def cmd_train(args) -> None:
    from salun.data import check_split_fits, load_dataset, load_split
    from salun.data.registry import canonical_spec
    from salun.outputs import claim_output
    from salun.workflows import train_original

    claim_output(args.out, "model", overwrite=args.overwrite, inputs=[args.data, args.split])
    bundle = load_dataset(args.data)
    split = None
    if args.split:
        split = load_split(args.split)
        check_split_fits(split, bundle, canonical_spec(args.data))
    cfg = dataclass_from_args(args, TrainConfig)
    meta = train_original(
        bundle,
        args.arch,
        cfg,
        args.out,
        split=split,
        split_file=args.split,
        width=args.width,
        device=args.device,
        quiet=args.quiet,
        data_spec=canonical_spec(args.data),
    )
    m = meta["metrics"]
    print(
        f"wrote {args.out}: train acc {m['train_acc']:.2f} %, test acc {m['test_acc']:.2f} % "
        f"({meta['train_seconds']:.0f} s, {meta['images_per_second']:.0f} img/s)",
        file=sys.stderr,
    )


def cmd_evaluate(args) -> None:
    from salun.workflows import evaluate_model_folder

    metrics = evaluate_model_folder(args.model, args.forget, device=args.device, data=args.data)
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        for k in ("UA", "RA", "TA", "MIA"):
            print(f"{k:4s} {metrics[k]:7.2f}")


def cmd_mask(args) -> None:
    from salun.outputs import claim_output
    from salun.workflows import mask_paths, write_masks

    keeps = args.keep or [0.5]
    check_each("--keep", keeps, check_range, 0, 1, low_open=True, high_open=False)
    check_int("--batch-size", args.batch_size, 1)
    check_seed("--seed", args.seed)
    paths = mask_paths(args.out, keeps)
    for path in paths:
        claim_output(path, "mask", overwrite=args.overwrite, inputs=[args.model, args.forget])
    write_masks(
        args.model,
        args.forget,
        keeps,
        args.out,
        scope=args.scope,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        quiet=args.quiet,
        data=args.data,
        augment=args.augment,
    )
    for p, keep in zip(paths, keeps):
        print(f"wrote {p} (keep {keep:g})", file=sys.stderr)
    if len(paths) > 1:  # --out named none of them: say which names the next verb takes
        print("one file per --keep value: pass one of them to `salun unlearn --mask`",
              file=sys.stderr)  # fmt: skip


def method_parser(name: str) -> OneLineParser:
    """The second parser of ``salun unlearn --method NAME``: one flag per field of the
    method's config, built once the method is known."""
    from salun.methods import get_method

    spec = get_method(name)
    mp = OneLineParser(
        prog=f"salun unlearn --method {spec.name}", description=f"{spec.name}: {spec.summary}"
    )
    add_dataclass_args(mp, spec.config)
    return mp


def cmd_unlearn(args) -> None:
    from salun.methods import get_method, make_config
    from salun.methods.plugins import load_plugins
    from salun.workflows import unlearn_model_folder

    load_plugins(args.plugin or ())  # before the method is looked up
    spec = get_method(args.method)
    mp = method_parser(spec.name)
    if args.help:
        args.parser.print_help()
        print()
        mp.print_help()
        return
    ns = mp.parse_args(args.rest)
    missing = [f"--{k}" for k in ("model", "forget", "out") if getattr(args, k) is None]
    if missing:
        raise SalunError(f"salun unlearn needs {', '.join(missing)}")
    from salun.hf_workflows import is_hf_folder  # also registers the hf-model output kind
    from salun.outputs import claim_output

    kind = "hf-model" if is_hf_folder(args.model) else "model"  # written as it came in
    claim_output(
        args.out, kind, overwrite=args.overwrite, inputs=[args.model, args.forget, args.mask]
    )
    overrides = overrides_from_args(ns, spec.config)
    make_config(spec.name, overrides)  # bad settings fail before any file is read
    record = unlearn_model_folder(
        args.model,
        args.forget,
        args.method,
        overrides,
        args.out,
        mask_file=args.mask,
        device=args.device,
        quiet=args.quiet,
        evaluate=not args.no_eval,
        data=args.data,
    )
    m = record.get("metrics", {})
    summary = ", ".join(f"{k} {m[k]:.2f}" for k in ("UA", "RA", "TA", "MIA") if k in m)
    print(
        f"wrote {args.out}: {args.method} in {record['rte_seconds']:.1f} s. {summary}",
        file=sys.stderr,
    )


def cmd_methods(args) -> None:
    from salun.methods import get_method, list_methods
    from salun.methods.plugins import load_plugins, plugin_record

    load_plugins(args.plugin or ())
    for name in list_methods():
        spec = get_method(name)
        origin = plugin_record(name)
        where = f"  (plugin {origin['module']} {origin['version']})" if origin else ""
        print(f"{name:12s} {spec.summary}  [{_default_step(spec.config())}]{where}")


def _default_step(cfg) -> str:
    """The default learning rate, or the setting the benchmark searches instead (IU's
    ``alpha``), or what a method without one uses: one spelling for every method."""
    field = getattr(type(cfg), "grid_field", "lr")  # as salun.bench.plan.grid_field
    value = getattr(cfg, field, None)
    if value is None and field == "lr":
        return "lr: the original's"  # Retrain: the original recipe's learning rate
    return f"{field} {value:g}" if isinstance(value, float) else f"{field} {value}"


def _late_flags(prog: str) -> list[str]:
    """Flags of the parsers built after the first parse (``salun unlearn --method M``),
    for the "did you mean" of a misspelt method setting."""
    parts = prog.split()
    if parts[:3] != ["salun", "unlearn", "--method"] or len(parts) < 4:
        return []
    try:
        mp = method_parser(parts[3])
    except SalunError:
        return []
    return [s for a in mp._actions for s in a.option_strings if s.startswith("--")]


def _one_line(text: object) -> str:
    """The CLI's contract is one line per user error: a multi-line message is joined."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return " | ".join(lines) or "(no message)"


def _os_message(e: OSError) -> str:
    """``Permission denied: /ro/out`` rather than ``[Errno 13] ...`` and a traceback."""
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    what = e.strerror or str(e)
    return f"{what}: {' -> '.join(paths)}" if paths else what


def _replay(caught: list) -> None:
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _run(argv: list[str]) -> int:
    parser = build_parser()
    if argv[:1] == ["--version"]:
        from salun import __version__

        print(f"salun {__version__}")
        return 0
    # The unlearn verbs parse their method's generated flags with a second parser.
    if argv[:1] == ["unlearn"] or argv[:2] == ["sd", "unlearn"]:
        args, rest = parser.parse_known_args(argv)
        args.rest = rest
    else:
        args = parser.parse_args(argv)
    handler = getattr(args, "handler", None) or args.func
    if hasattr(args, "precision"):  # the verbs of _common: the device policy (docs/gpu.md)
        from salun.precision import apply_policy_arguments

        apply_policy_arguments(args)
    from salun.utils import progress_lines

    # train, unlearn and gen write a plain line every so often when stderr is a log file
    lines = argv[:1] in (["train"], ["unlearn"], ["gen"])
    with torch_threads(getattr(args, "threads", None)), progress_lines(lines):
        code = handler(args)
    return code if isinstance(code, int) else 0


def main(argv: list[str] | None = None) -> int:
    """Run ``salun ARGV``; return the exit code.

    A user error (:class:`SalunError`, a bad command line, or an OS error such as a
    read-only ``--out``) prints exactly one line, ``salun: error: ...``, and returns 2.
    Warnings raised meanwhile are held back and shown only if the command succeeds or
    fails unexpectedly, so they never bury the error line. Any other exception is a bug
    and keeps its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            code = _run(argv)
    except UsageError as e:  # the parser's own prog is not repeated after `salun: error:`
        from salun.cli_errors import usage_line

        line = usage_line(str(e), argv, build_parser(), _late_flags)
        print(f"salun: error: {_one_line(line)}", file=sys.stderr)
        return 2
    except SalunError as e:
        print(f"salun: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # permissions, a full disk, a folder where a file goes: the user's
        print(f"salun: error: {_one_line(_os_message(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("salun: interrupted", file=sys.stderr)
        return 130
    except BaseException:
        _replay(caught)
        raise
    _replay(caught)
    return code


if __name__ == "__main__":
    sys.exit(main())
