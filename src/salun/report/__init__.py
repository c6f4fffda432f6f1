"""Benchmark reports: Table-1-style tables and PNG plots as Markdown and HTML."""

from salun.report.build import write_report

__all__ = ["write_report"]
