"""Methods from the user's own modules (docs/plugins.md).

A plugin is a Python module that registers one or more methods with the same
:func:`~salun.methods.register` decorator and config-dataclass contract as the built-ins.
It comes in three ways: ``--plugin my_pkg.my_methods`` on the command line, a ``plugins:``
list in a benchmark config, or the ``salun.methods`` entry-point group of an installed
package (loaded with the built-ins). Each is checked when it loads: a module that fails to
import, registers nothing, takes a built-in's name or breaks the contract is one
:class:`SalunError` naming it, before any work, and its methods are taken back out.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salun.errors import SalunError
from salun.methods import registry

ENTRY_POINT_GROUP = "salun.methods"
BUILTIN_PREFIX = "salun."  # methods defined inside salun are not plugins


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin module.

    Attributes:
        module: the module's import name (``my_pkg.my_methods``).
        version: its package's ``__version__`` or installed version, else ``unknown``.
        methods: the method names it registered.
        path: the folder its top package was imported from (Ray workers add it to
            ``sys.path``), or None.
    """

    module: str
    version: str
    methods: tuple[str, ...]
    path: str | None = None

    def record(self) -> dict[str, str]:
        """What every result of one of its methods records."""
        return {"module": self.module, "version": self.version}


_LOADED: dict[str, Plugin] = {}  # module name -> plugin, in load order
_BY_METHOD: dict[str, Plugin] = {}  # method name -> its plugin
_ENTRY_POINTS_DONE = False


def load_plugins(modules: Iterable[str]) -> list[Plugin]:
    """Import every module of ``modules`` (once each) and check what it registered."""
    return [load_plugin(m) for m in modules]


def load_plugin(module: str) -> Plugin:
    """Import ``module`` as a plugin; see the module docstring for what is checked."""
    if not isinstance(module, str) or not module.strip():
        raise SalunError(f"plugin {module!r}: give a module name, e.g. my_pkg.my_methods")
    module = module.strip()
    if module in _LOADED:
        return _LOADED[module]
    registry.load_builtins()  # a plugin naming a built-in collides at its own register
    _cwd_on_path()
    before = set(registry._REGISTRY)
    try:
        mod = importlib.import_module(module)
    except SalunError as e:  # the registry's "already registered" among them
        _forget(set(registry._REGISTRY) - before)
        raise SalunError(f"plugin {module}: {e}") from None
    except ModuleNotFoundError as e:
        _forget(set(registry._REGISTRY) - before)
        if e.name and module.startswith(e.name):
            raise SalunError(
                f"plugin {module}: no module named {e.name!r}; install it or put its folder "
                "on PYTHONPATH (the current folder is searched too)"
            ) from None
        raise SalunError(f"plugin {module} failed to import: {e}") from None
    except Exception as e:  # its own bug: one line naming it, not a traceback
        _forget(set(registry._REGISTRY) - before)
        raise SalunError(f"plugin {module} failed to import: {type(e).__name__}: {e}") from None
    new = set(registry._REGISTRY) - before
    if not new:  # imported earlier (a test, a notebook): its methods are already here
        new = {n for n, s in registry._REGISTRY.items() if _defined_in(s, module)}
    if not new:
        raise SalunError(
            f"plugin {module} registers no method: decorate a function with "
            "@salun.methods.register(name, ConfigClass, summary) (docs/plugins.md)"
        )
    try:
        for name in sorted(new):
            check_contract(registry._REGISTRY[name])
    except SalunError as e:
        _forget(new)
        raise SalunError(f"plugin {module}: {e}") from None
    plugin = Plugin(module, version_of(module), tuple(sorted(new)), _top_folder(mod, module))
    _LOADED[module] = plugin
    for name in new:
        _BY_METHOD[name] = plugin
    return plugin


def load_entry_points() -> list[Plugin]:
    """The ``salun.methods`` entry points of installed packages, loaded once per process.

    An entry point names a module (``my_methods = "my_pkg.methods"``) or an object in it;
    either way the module is imported as a plugin.
    """
    global _ENTRY_POINTS_DONE
    if _ENTRY_POINTS_DONE:
        return []
    _ENTRY_POINTS_DONE = True
    out = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = ep.value.split(":", 1)[0].strip()
        try:
            out.append(load_plugin(module))
        except SalunError as e:
            raise SalunError(f"entry point {ep.name!r} ({ENTRY_POINT_GROUP}): {e}") from None
    return out


def check_contract(spec: registry.MethodSpec) -> None:
    """The built-ins' contract: a frozen dataclass config that builds with its defaults,
    and ``fn(model, forget, retain, cfg, ctx, mask)``."""
    cfg = spec.config
    what = f"method {spec.name!r}"
    if not (isinstance(cfg, type) and dataclasses.is_dataclass(cfg)):
        raise SalunError(f"{what}: its config {cfg!r} must be a @dataclass(frozen=True) class")
    if not cfg.__dataclass_params__.frozen:
        raise SalunError(
            f"{what}: its config {cfg.__name__} must be frozen: @dataclass(frozen=True)"
        )
    try:
        cfg()
    except Exception as e:  # every field needs a default: `salun methods` and bench build it
        raise SalunError(
            f"{what}: {cfg.__name__}() must build with its defaults: {type(e).__name__}: {e}"
        ) from None
    if not callable(spec.fn):
        raise SalunError(f"{what}: registered object {spec.fn!r} is not a function")
    try:
        inspect.signature(spec.fn).bind(*(object(),) * 6)
    except TypeError:
        raise SalunError(
            f"{what}: {getattr(spec.fn, '__name__', spec.fn)} must take "
            "(model, forget, retain, cfg, ctx, mask); it is "
            f"{getattr(spec.fn, '__name__', '')}{inspect.signature(spec.fn)}"
        ) from None
    except ValueError:  # a builtin without a signature: let it be
        pass
    if not isinstance(spec.summary, str) or not spec.summary.strip():
        raise SalunError(f"{what}: its summary (the register's third argument) is empty")


def plugin_record(method: str | None) -> dict[str, str] | None:
    """``{module, version}`` of the plugin behind ``method``; None for a built-in.

    A method registered outside a plugin load (a script calling ``register`` itself) is
    recorded by the module that defines its function.
    """
    if not method:
        return None
    if method in _BY_METHOD:
        return _BY_METHOD[method].record()
    spec = registry._REGISTRY.get(method)
    module = getattr(spec.fn, "__module__", None) if spec else None
    if not module or module.startswith(BUILTIN_PREFIX) or module == "salun":
        return None
    return {"module": module, "version": version_of(module)}


def loaded_plugins() -> list[Plugin]:
    """The plugins loaded in this process (Ray workers load the same ones)."""
    return list(_LOADED.values())


def load_in_worker(modules: Iterable[str], folders: Iterable[str | None] = ()) -> None:
    """A Ray worker's import of the driver's plugins: their folders first (a local Ray or
    a shared file system has them at the same path), then the modules."""
    for folder in folders:
        if folder and os.path.isdir(folder) and folder not in sys.path:
            sys.path.append(folder)
    load_plugins(modules)


def version_of(module: str) -> str:
    """``__version__`` of the top package, else its installed distribution's version."""
    top = module.split(".", 1)[0]
    mod = sys.modules.get(top)
    version = getattr(mod, "__version__", None)
    if isinstance(version, str) and version:
        return version
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _defined_in(spec: registry.MethodSpec, module: str) -> bool:
    where = getattr(spec.fn, "__module__", "") or ""
    return where == module or where.startswith(module + ".")


def _forget(names: Iterable[str]) -> None:
    """Take a failed plugin's methods back out: nothing half-registered stays."""
    for name in names:
        registry._REGISTRY.pop(name, None)
        _BY_METHOD.pop(name, None)


def _top_folder(mod: Any, module: str) -> str | None:
    """The ``sys.path`` entry the plugin's top package was found in."""
    top = sys.modules.get(module.split(".", 1)[0], mod)
    file = getattr(top, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    return str(path.parent.parent if path.name == "__init__.py" else path.parent)


def _cwd_on_path() -> None:
    # `salun` is a console script, whose sys.path lacks the current folder; a researcher's
    # my_methods.py next to the config should load as it would with `python -m`
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
