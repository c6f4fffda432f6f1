"""The per-example privacy audit as a resumable workflow (docs/audit.md).

``salun.metrics.audit`` holds the statistics (plain functions); this package trains the
shadow models, runs the methods on them, stores one record per (method, shadow) and writes
the report.
"""

from salun.audit.config import AuditConfig, load_audit_config, parse_audit_config
from salun.audit.workflow import AuditStore, run_audit, summarise

__all__ = [
    "AuditConfig",
    "AuditStore",
    "load_audit_config",
    "parse_audit_config",
    "run_audit",
    "summarise",
]
