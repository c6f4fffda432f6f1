"""``salun audit``: run (or resume) a per-example privacy audit and write its report."""

from __future__ import annotations

import argparse
import shlex
import sys

from salun.audit.cli_options import AuditOptions
from salun.config_cli import add_options
from salun.errors import SalunError


def add_audit_subcommands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit",
        help="per-example likelihood-ratio audit (U-LiRA style) of unlearning methods",
        description=(
            "Train K shadow pairs (original → unlearned; Retrain without D_f) and report per "
            "method the attack AUC and TPR at 1 % / 0.1 % FPR next to the SVC MIA-efficacy "
            "(docs/audit.md). Rerunning the same command resumes; adding a method or raising "
            "--shadows reuses the finished shadows."
        ),
    )
    add_options(p, AuditOptions)
    p.set_defaults(handler=cmd_audit)


def cmd_audit(args) -> None:
    from dataclasses import replace

    import torch

    from salun.audit import load_audit_config, run_audit
    from salun.bench.presets import preset_path

    path = preset_path(args.preset) if args.preset else args.config
    cfg = load_audit_config(path)
    if args.shadows is not None:
        cfg = replace(cfg, shadows=args.shadows)
    for key in ("variance", "location", "queries"):  # the attack's settings (docs/audit.md)
        if getattr(args, key) is not None:
            cfg = replace(cfg, **{key: getattr(args, key)})
    if args.methods:
        unknown = [m for m in args.methods if m not in cfg.labels]
        if unknown:
            raise SalunError(f"no method {unknown[0]!r} in {path}; it has: {', '.join(cfg.labels)}")
        cfg = replace(cfg, methods=tuple(m for m in cfg.methods if m[0] in args.methods))
    if args.threads is not None and args.threads < 1:
        raise SalunError(f"--threads must be >= 1, got {args.threads}")
    before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "salun " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    try:
        summary = run_audit(cfg, args.out, device=args.device, quiet=args.quiet, command=command)
    finally:
        torch.set_num_threads(before)  # an in-process caller keeps its own setting
    for label, row in summary["methods"].items():
        if row["status"] == "ok":
            print(
                f"{label:14s} AUC {row['auc']:.3f} [{row['auc_ci'][0]:.3f}, "
                f"{row['auc_ci'][1]:.3f}]  TPR@1%FPR {100 * row['tpr']['0.01']:.2f} %  "
                f"MIA {row['metrics']['MIA'][0]:.2f}",
                file=sys.stderr,
            )
        else:
            print(f"{label:14s} {row['status']}", file=sys.stderr)
    print(f"wrote {args.out}/report.md", file=sys.stderr)
