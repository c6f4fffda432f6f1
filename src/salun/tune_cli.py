"""``salun tune``: find a method's learning rate on a model folder and a split without a
Retrain (:func:`salun.tune`; docs/your-model.md, "Settings without a Retrain").

It writes a JSON report (every value tried, its metrics and score, the pick and why) and
prints the table and the ``salun unlearn`` command that runs the pick.
"""

from __future__ import annotations

import sys
from typing import Any

from salun.errors import SalunError
from salun.outputs import _json_format, register_kind

FORMAT = "salun-tune-1"
register_kind("tune", is_dir=False, what="salun tune report", recognise=_json_format(FORMAT))


def add_tune_subcommands(sub) -> None:
    from salun.cli import _common
    from salun.cli_options import DataOption, PluginOption, TuneOptions
    from salun.config_cli import add_options
    from salun.outputs import add_overwrite_flag

    p = sub.add_parser(
        "tune", help="find a method's learning rate without a Retrain (a table of what it tried)"
    )
    add_options(p, TuneOptions)
    add_overwrite_flag(p)
    add_options(p, DataOption)
    add_options(p, PluginOption)  # methods of the user's own modules (docs/plugins.md)
    _common(p)
    p.set_defaults(handler=cmd_tune)


def parse_settings(items) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs; values read as YAML scalars (``5``, ``0.5``, ``true``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SalunError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, str):  # 2e-5 is text to YAML 1.1: a number here
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip().replace("-", "_")] = parsed
    return out


def cmd_tune(args) -> None:
    from salun.artifacts import load_model
    from salun.io import atomic_write_json
    from salun.methods import make_config
    from salun.methods.plugins import load_plugins, plugin_record
    from salun.outputs import claim_output
    from salun.tune import tune
    from salun.workflows import load_for_split

    load_plugins(args.plugin or ())  # before the method is looked up, as salun unlearn
    settings = parse_settings(args.set)
    make_config(args.method, settings)  # bad settings fail before any file is read
    claim_output(args.out, "tune", overwrite=args.overwrite,
                 inputs=[args.model, args.forget, args.retrain])  # fmt: skip
    model, _, bundle, split, dev, spec = load_for_split(
        args.model, args.forget, args.device, args.data
    )
    retrain = load_model(args.retrain, dev)[0] if args.retrain else None
    res = tune(
        model,
        bundle.train.subset(split.forget),
        bundle.train.subset(split.retain),
        bundle.test,
        args.method,
        grid=args.grid or None,
        scenario="class" if split.scenario == "class" else "random",
        retrain=retrain,
        device=str(dev),
        seed=args.seed,
        quiet=args.quiet,
        **settings,
    )
    report = {
        "format": FORMAT,
        "method": res.method,
        "field": res.field,
        "value": res.value,
        "scenario": res.scenario,
        "target": res.target,
        "reference": res.reference,
        "table": res.table,
        "reason": res.reason,
        "settings": settings,
        "model": str(args.model),
        "split_file": str(args.forget),
        "split_hash": split.hash,
        "data_spec": spec,
    }
    if plugin := plugin_record(res.method):  # a method of the user's own module
        report["plugin"] = plugin
    atomic_write_json(args.out, report)
    print(res.markdown(), file=sys.stderr)
    print(
        f"wrote {args.out}; run the pick with: salun unlearn"
        + "".join(f" --plugin {m}" for m in args.plugin or ())
        + f" --model {args.model} --forget "
        f"{args.forget} --method {res.method} --{res.field.replace('_', '-')} {res.value:g}"
        + "".join(f" --{k.replace('_', '-')} {v}" for k, v in settings.items())
        + " --out OUT",
        file=sys.stderr,
    )
