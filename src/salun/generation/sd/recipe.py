"""Recipes (``configs/sd-*.yaml``): model, task data, mask, method and sampling settings.

A recipe's ``data`` section names where D_f and D_r come from:

- ``imagenette: <train folder>`` with ``forget_class``: D_f = that class, D_r = the rest,
  replacement prompt = the next class's prompt (docs/generation.md);
- ``forget`` / ``retain``: an image folder (with ``metadata.csv`` or ``*_prompt``), or
  ``{generate: {prompt, n, seed}}`` to sample the images from the model itself (§5.2.4);
- ``replacement_prompt``: SalUn's c' for folder data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from salun.errors import SalunError
from salun.generation.sd.data import (
    ImagePromptSet,
    from_tensors,
    load_image_folder,
    load_imagenette,
    split_class,
)
from salun.generation.sd.prompts import PromptItem, class_index, replacement_class, train_prompt
from salun.yaml_file import read_yaml


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe (a mapping)."""
    p = Path(path).expanduser()
    data = read_yaml(p, f"recipe {p} not found (see configs/sd-nudity.yaml for an example)")
    if not isinstance(data, dict):
        raise SalunError(f"{p} must hold a mapping at the top level")
    return data


def _one_set(pipe: Any, spec: Any, prompt: str | None, resolution: int, what: str):
    if spec is None:
        return None
    if isinstance(spec, Mapping) and "generate" in spec:
        from salun.generation.sd.generate import SampleConfig, generate

        g = dict(spec["generate"])
        if "prompt" not in g:
            raise SalunError(f"data.{what}.generate needs a prompt")
        n = int(g.pop("n", 8))
        item = PromptItem(g.pop("prompt"), int(g.pop("seed", 0)))
        cfg = SampleConfig(resolution=resolution, n_per_prompt=n, **g)
        images, _ = generate(pipe, [item], cfg)
        return from_tensors(images, [item.prompt] * len(images), resolution)
    if isinstance(spec, (str, Path)):
        return load_image_folder(spec, prompt=prompt, resolution=resolution)
    raise SalunError(f"data.{what} must be a folder or {{generate: {{prompt, n}}}}, got {spec!r}")


def task_data(
    recipe: Mapping[str, Any], pipe: Any = None
) -> tuple[ImagePromptSet | None, ImagePromptSet | None]:
    """(D_f with replacement prompts, D_r) for a recipe."""
    data = dict(recipe.get("data") or {})
    res = int(recipe.get("resolution", 512))
    if data.get("imagenette"):
        if recipe.get("forget_class") is None:
            raise SalunError("an Imagenette recipe needs forget_class (0-9 or a class name)")
        c = class_index(recipe["forget_class"])
        forget, retain = split_class(load_imagenette(data["imagenette"], resolution=res), c)
        return forget.with_replacements(train_prompt(replacement_class(c))), retain
    forget = _one_set(pipe, data.get("forget"), data.get("forget_prompt"), res, "forget")
    retain = _one_set(pipe, data.get("retain"), data.get("retain_prompt"), res, "retain")
    rep = data.get("replacement_prompt")
    if forget is not None and rep:
        forget = forget.with_replacements(str(rep))
    return forget, retain
