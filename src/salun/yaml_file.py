"""Reading a YAML file a user hands us (benchmark, audit and generation configs).

One place for the two failures every config reader must report clearly: the file is not
there, or it is not YAML. What the content must look like is each reader's business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from salun.errors import SalunError


def read_yaml(path: str | Path, missing: str) -> Any:
    """Parse ``path`` with ``yaml.safe_load`` (never arbitrary objects).

    ``missing`` is the message raised when the file does not exist, so each caller can say
    what the file was meant to be. An empty file reads as ``None``.
    """
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise SalunError(missing)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SalunError(f"{p} is not UTF-8 text; a YAML config was expected") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SalunError(f"{p} is not valid YAML: {e}") from None
