"""Benchmark runner: a grid of methods × scenarios × seeds, resumable, local or on Ray."""

from salun.bench.config import BenchConfig, MethodEntry, Scenario, load_config, parse_config
from salun.bench.presets import list_presets, load_preset, preset_path
from salun.bench.runner import BenchOptions, run_bench
from salun.bench.store import ResultStore, read_records

__all__ = [
    "BenchConfig",
    "BenchOptions",
    "MethodEntry",
    "ResultStore",
    "Scenario",
    "list_presets",
    "load_config",
    "load_preset",
    "parse_config",
    "preset_path",
    "read_records",
    "run_bench",
]
