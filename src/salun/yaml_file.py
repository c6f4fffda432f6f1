"""Reading a YAML file a user hands us (benchmark, audit and generation configs).

One place for the failures every config reader must report clearly: the file is not
there, it is not YAML, or it is a YAML bomb. What the content must look like is each
reader's business.

A config is a few hundred lines, so the reader is bounded on every axis a hostile file
could use: its size (``MAX_BYTES``), its nesting (``MAX_DEPTH``: PyYAML's composer
recurses once per level, so 100 000 nested brackets were a ``RecursionError``) and what
its aliases expand to (``MAX_NODES``: nine nested anchors of ten aliases each, the
"billion laughs", expand to 10**9 nodes; PyYAML shares them, but anything that walks the
config, a hash or a copy, then took minutes and gigabytes). Each limit is checked on the
parser's events or the composed node graph, before any Python object is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from salun.errors import SalunError

MAX_BYTES = 1 << 20  # 1 MiB: the largest preset is about 3 KiB
MAX_DEPTH = 64  # nesting levels of mappings/sequences
MAX_NODES = 100_000  # scalars, mappings and sequences after every alias is expanded


def read_yaml(path: str | Path, missing: str) -> Any:
    """Parse ``path`` as safe YAML (never arbitrary objects), within the limits above.

    ``missing`` is the message raised when the file does not exist, so each caller can say
    what the file was meant to be. An empty file reads as ``None``.
    """
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise SalunError(missing)
    with open(p, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise SalunError(f"{p} is larger than {MAX_BYTES // 1024} KiB; a YAML config was expected")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SalunError(f"{p} is not UTF-8 text; a YAML config was expected") from None
    try:
        _check_depth(yaml.parse(text, Loader=yaml.SafeLoader), p)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_expanded_size(node, p)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise SalunError(f"{p} is not valid YAML: {e}") from None


def _check_depth(events, path: Path) -> None:
    """Nesting counted on the parser's flat event stream (no recursion here)."""
    import yaml

    depth = 0
    for event in events:
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise SalunError(
                    f"{path} nests deeper than {MAX_DEPTH} levels; a YAML config was expected"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_expanded_size(root, path: Path) -> None:
    """The number of nodes once every alias is expanded, computed once per distinct node
    (a billion laughs costs a few dozen steps here, not 10**9)."""
    import yaml

    size: dict[int, int] = {}
    open_: set[int] = set()  # nodes whose children are being counted
    stack = [(root, False)]
    while stack:  # post-order without recursion
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        if isinstance(node, yaml.ScalarNode):
            size[id(node)] = 1
            continue
        if isinstance(node, yaml.MappingNode):
            kids = [x for pair in node.value for x in pair]
        else:
            kids = node.value
        if not children_done:
            if id(node) in open_:  # an alias inside its own anchor: &a [*a]
                raise SalunError(f"{path} refers to itself through an alias; a config cannot")
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
            continue
        open_.discard(id(node))
        size[id(node)] = 1 + sum(size[id(k)] for k in kids)
        if size[id(node)] > MAX_NODES:
            raise SalunError(
                f"{path} expands to more than {MAX_NODES} values through its aliases "
                "(&anchor/*alias); a YAML config was expected"
            )
