import os

import pytest
import torch

os.environ.setdefault("SALUN_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# tests use tiny models: one thread avoids oversubscribing a shared 2-core machine
torch.set_num_threads(1)

# shared fixtures that live in their own module (tests/ is on sys.path under pytest)
pytest_plugins = ["sd_fixtures"]


def pytest_collection_modifyitems(config, items):
    # `cuda` tests need a GPU: without one they are skipped (and counted as skipped)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu/check.sh runs these)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def synthetic():
    from salun.data.sources.synthetic import synthetic_bundle

    return synthetic_bundle(n_train=240, n_test=80, num_classes=4, size=8, seed=0)


@pytest.fixture
def plugin_registry_restored(monkeypatch):
    """The method registry, the plugin records and sys.modules left as found (other test
    files list every registered method); no installed entry point is looked at."""
    import sys
    from pathlib import Path

    import salun
    from salun.methods import plugins, registry

    registry.load_builtins()
    methods = dict(registry._REGISTRY)
    loaded, by_method = dict(plugins._LOADED), dict(plugins._BY_METHOD)
    modules = set(sys.modules)
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_DONE", True)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(methods)
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)
    plugins._BY_METHOD.clear()
    plugins._BY_METHOD.update(by_method)
    # only the modules the tests wrote (plugins in tmp folders): dropping a library's
    # lazily imported C extension (numpy.fft) breaks its re-import for later test files
    installed = (sys.prefix, sys.base_prefix, str(Path(salun.__file__).parent))
    for name in set(sys.modules) - modules:
        file = getattr(sys.modules[name], "__file__", None)
        if file and not file.startswith(installed):
            del sys.modules[name]
