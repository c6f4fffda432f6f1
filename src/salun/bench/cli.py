"""``salun bench`` and ``salun report``: argparse subcommands for the main CLI.

The main CLI calls :func:`add_bench_subcommands` on its subparsers; each subcommand sets
``handler`` (called with the parsed namespace). Handlers raise
:class:`~salun.errors.SalunError` for user errors, which the main CLI prints as one line.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from salun.bench.cli_options import BenchTarget, ReportTarget
from salun.bench.config import BenchConfig, load_config
from salun.bench.presets import load_preset
from salun.bench.runner import BenchOptions, run_bench
from salun.cli_options import PluginOption
from salun.config_cli import add_options, options_from_args
from salun.errors import SalunError
from salun.outputs import add_overwrite_flag
from salun.validate import check_nonnegative, check_positive, check_threads


def add_bench_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` and ``report`` to the main parser's subcommands."""
    p = subparsers.add_parser(
        "bench",
        help="run (or resume) a benchmark grid: methods × scenarios × seeds",
        description=(
            "Run a benchmark from a preset (configs/NAME.yaml) or a YAML file into --out. "
            "Rerunning the same command resumes: finished runs are skipped. One process at a "
            "time writes a folder (a second one exits naming the first). The report "
            "(report.md, report.html) is written at the end."
        ),
    )
    add_options(p, BenchTarget)  # --preset | --config, --out, --no-report
    # --executor, --ray-address, --ray-files, --device, --quiet, --cpus-per-run,
    # --gpus-per-run, --threads
    add_options(p, BenchOptions, skip=("command", "report"))
    add_options(p, PluginOption)  # --plugin MODULE (docs/plugins.md)
    p.set_defaults(handler=cmd_bench)

    r = subparsers.add_parser(
        "report",
        help="write report.md and report.html for a benchmark folder",
        description="Write report.md, report.html and plots/*.png into a benchmark folder.",
    )
    add_options(r, ReportTarget)
    add_overwrite_flag(r)  # a report.md salun did not write is replaced only with it
    r.set_defaults(handler=cmd_report)


def command_line(args: argparse.Namespace) -> str:
    """The exact command, rebuilt from the parsed arguments (recorded in the report)."""
    parts = ["salun", "bench"]
    parts += ["--preset", args.preset] if args.preset else ["--config", args.config]
    parts += ["--out", args.out]
    for module in getattr(args, "plugin", None) or ():
        parts += ["--plugin", module]
    if args.executor != "local":
        parts += ["--executor", args.executor]
    if args.ray_address:
        parts += ["--ray-address", args.ray_address]
    if args.ray_files != "auto":
        parts += ["--ray-files", args.ray_files]
    if args.cpus_per_run != 1:
        parts += ["--cpus-per-run", f"{args.cpus_per_run:g}"]
    if args.gpus_per_run is not None:
        parts += ["--gpus-per-run", f"{args.gpus_per_run:g}"]
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    parts += ["--quiet"] * bool(args.quiet) + ["--no-report"] * bool(args.no_report)
    return shlex.join(parts)


def _config(args: argparse.Namespace) -> BenchConfig:
    if args.preset:
        return load_preset(args.preset)
    return load_config(args.config)


NO_REPORT = "move it away, or run salun bench with --no-report"


def cmd_bench(args: argparse.Namespace) -> int:
    """Handler of ``salun bench``."""
    if args.ray_address and args.executor != "ray":
        raise SalunError("--ray-address needs --executor ray")
    if args.threads is not None:
        check_threads("--threads", args.threads)  # at most the CPUs (100000 segfaulted)
    check_positive("--cpus-per-run", args.cpus_per_run)
    if args.gpus_per_run is not None:
        check_nonnegative("--gpus-per-run", args.gpus_per_run)
    from salun.methods.plugins import load_plugins

    load_plugins(args.plugin or ())  # before the config names their methods
    cfg = _config(args)
    if not args.no_report:  # a report.md / report.html of the user's: refused before training
        from salun.report.build import check_report_outputs

        check_report_outputs(Path(args.out), cfg.name, refusal=NO_REPORT)
    options = options_from_args(
        args, BenchOptions, command=command_line(args), report=not args.no_report
    )
    try:
        out = run_bench(cfg, args.out, options)
    except KeyboardInterrupt:  # re-raised: Ctrl-C exits 130 (salun.cli.main), as before the lock
        print(
            f"salun: finished runs are saved in {args.out}: rerun the same command to resume",
            file=sys.stderr,
        )
        raise
    results = Path(out) / "results.jsonl"
    print(results, flush=True)  # stdout: the records, for scripts
    if args.no_report:
        print(f"results: {results} (no report: --no-report)", file=sys.stderr)
    else:  # the log's last line
        print(f"report: {out / 'report.md'} and {out / 'report.html'}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Handler of ``salun report``."""
    from salun.bench.lock import report_lock
    from salun.report import write_report
    from salun.report.inputs import read_bench_json

    if not Path(args.dir).is_dir():
        raise SalunError(f"{args.dir} is not a folder; pass the --out folder of salun bench")
    read_bench_json(Path(args.dir))  # not a (sound) benchmark folder: nothing written into it
    # a running benchmark may be adding records: the report reads complete records only
    # (each is written atomically) and takes turns with the benchmark's own final report
    with report_lock(args.dir):
        paths = write_report(args.dir, overwrite=args.overwrite)
    print(paths["md"])
    print(paths["html"])
    return 0
