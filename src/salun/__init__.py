__version__ = "0.1.0"

# The one-call API (docs/your-model.md), imported on first use so `import salun` stays light.
_API = ("unlearn", "evaluate", "UnlearnResult", "tune", "TuneResult", "split_by_ids")


def __getattr__(name: str):
    if name in _API:
        from salun import api

        return getattr(api, name)
    raise AttributeError(f"module 'salun' has no attribute {name!r}")


__all__ = ["__version__", *_API]
