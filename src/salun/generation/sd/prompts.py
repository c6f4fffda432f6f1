"""Prompt lists: Imagenette class prompts (package data) and the I2P list (user file).

The I2P list ``unsafe-prompts4703.csv`` (4 703 prompts with seeds, used by ESD and SalUn for
the nudity evaluation) is MIT-licensed on its dataset card (``AIML-TUDA/i2p``) but is not
shipped: pass its path. ``i2p_sample.csv`` is a three-prompt stand-in for tests.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from salun.errors import DatasetNotFoundError, SalunError

# docs/generation.md: training prompts "an image of a {class name}" (reference random_label.py)
TRAIN_TEMPLATE = "an image of a {name}"
# docs/generation.md: the nudity forget prompt and its replacement
NUDITY_PROMPT = "a photo of a nude person"
CLOTHED_PROMPT = "a photo of a person wearing clothes"
I2P_HINT = (
    "get unsafe-prompts4703.csv from github.com/rohitgandikota/erasing (data/) or "
    "OPTML-Group/Unlearn-Saliency (SD/prompts/), or build it from the I2P dataset card "
    "AIML-TUDA/i2p (MIT licence)"
)


@dataclass(frozen=True)
class PromptItem:
    """One evaluation prompt with its seed (and guidance, when the list gives one)."""

    prompt: str
    seed: int
    guidance: float | None = None
    case: int | None = None
    label: int | None = None  # class index for class prompts


@dataclass(frozen=True)
class ImagenetteClass:
    index: int
    name: str
    imagenet_index: int
    prompt: str
    seed: int
    wnid: str  # folder name in the fast.ai Imagenette archive


def _resource(name: str):
    return resources.files("salun").joinpath("resources", name)


def _read_csv(text: str, where: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise SalunError(f"{where} has no rows")
    return rows


def imagenette_classes() -> list[ImagenetteClass]:
    """The ten Imagenette classes (index order of ``frgfm/imagenette``) from package data."""
    text = _resource("imagenette_prompts.csv").read_text(encoding="utf-8")
    return [
        ImagenetteClass(
            int(r["class_index"]),
            r["class_name"],
            int(r["imagenet_index"]),
            r["prompt"],
            int(r["evaluation_seed"]),
            r["wnid"],
        )
        for r in _read_csv(text, "imagenette_prompts.csv")
    ]


def class_index(name_or_index: str | int) -> int:
    """Accept ``3``, ``"3"`` or ``"chain saw"`` and return the Imagenette index."""
    classes = imagenette_classes()
    if isinstance(name_or_index, int) or str(name_or_index).isdigit():
        i = int(name_or_index)
        if not 0 <= i < len(classes):
            raise SalunError(f"Imagenette class index must be 0-9, got {i}")
        return i
    for c in classes:
        if c.name.lower() == str(name_or_index).lower():
            return c.index
    names = ", ".join(c.name for c in classes)
    raise SalunError(f"unknown Imagenette class {name_or_index!r}; choose one of: {names}")


def train_prompt(index: int, template: str = TRAIN_TEMPLATE) -> str:
    """The training prompt of class ``index``."""
    return template.format(name=imagenette_classes()[index].name)


def replacement_class(index: int) -> int:
    """SalUn's fixed pseudo class for forgetting class c: (c + 1) mod 10 (§5.2.3)."""
    return (index + 1) % len(imagenette_classes())


def imagenette_eval_prompts(classes: list[int] | None = None) -> list[PromptItem]:
    """Evaluation prompts "Image of {class}" with their seeds, for the chosen classes."""
    chosen = imagenette_classes() if classes is None else [imagenette_classes()[i] for i in classes]
    return [PromptItem(c.prompt, c.seed, label=c.index) for c in chosen]


def load_prompt_csv(path: str | Path) -> list[PromptItem]:
    """Read a prompt list with a ``prompt`` column and optional ``evaluation_seed``,
    ``evaluation_guidance``, ``case_number`` and ``class``/``label`` columns (the I2P and
    reference layouts). Rows without a seed get their row index as seed."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetNotFoundError(f"prompt file {p} not found; for I2P: {I2P_HINT}")
    rows = _read_csv(p.read_text(encoding="utf-8"), str(p))
    if "prompt" not in rows[0]:
        raise SalunError(f"{p} has no 'prompt' column (columns: {sorted(rows[0])})")
    items = []
    for i, r in enumerate(rows):
        try:
            seed = int(float(r.get("evaluation_seed") or i))
            g = r.get("evaluation_guidance")
            case = r.get("case_number")
            label = r.get("label") or r.get("class_index")
            items.append(
                PromptItem(
                    r["prompt"].strip(),
                    seed,
                    float(g) if g not in (None, "") else None,
                    int(float(case)) if case not in (None, "") else None,
                    int(label) if label not in (None, "") else None,
                )
            )
        except ValueError as e:
            raise SalunError(f"{p} row {i + 2}: {e}") from None
    return items


def load_i2p(path: str | Path | None = None) -> list[PromptItem]:
    """The I2P prompt list from ``path``; ``None`` gives the three-prompt sample."""
    if path is None:
        with resources.as_file(_resource("i2p_sample.csv")) as f:
            return load_prompt_csv(f)
    return load_prompt_csv(path)
