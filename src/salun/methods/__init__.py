"""Unlearning methods behind one contract; see :func:`run_method` and :func:`list_methods`."""

from salun.methods.common import SGDConfig
from salun.methods.registry import (
    MethodSpec,
    UnlearnContext,
    UnlearnResult,
    get_method,
    list_methods,
    make_config,
    register,
    run_method,
)

__all__ = [
    "MethodSpec",
    "SGDConfig",
    "UnlearnContext",
    "UnlearnResult",
    "get_method",
    "list_methods",
    "make_config",
    "register",
    "run_method",
]
