"""The CLI's steps on a Hugging Face model folder: it records no dataset, so ``--data``
names the data its split was drawn from (docs/your-model.md, "From the command line")."""

from __future__ import annotations

from pathlib import Path

from salun.data import check_split_fits, load_dataset, load_split
from salun.data.registry import canonical_spec
from salun.errors import SalunError
from salun.models.hf import is_hf_folder, is_salun_hf_folder, load_hf_folder
from salun.outputs import register_kind

# `salun unlearn --out` of a Hugging Face input is this kind: --overwrite may replace one
register_kind(
    "hf-model", is_dir=True, what="salun-written Hugging Face folder", recognise=is_salun_hf_folder
)


def load_hf_for_split(model_dir, split_file, dev, data: str | None, quiet: bool = True):
    """Like :func:`salun.workflows.load_for_split` for a Hugging Face folder: returns
    ``(model, meta, bundle, split, device, spec)``; ``meta['layout'] == 'hf'``."""
    if not data:
        raise SalunError(
            f"{model_dir} is a Hugging Face model folder and records no dataset: pass "
            "--data SPEC with the data the split file was drawn from"
        )
    if split_file is None or not Path(split_file).is_file():
        raise SalunError(f"the split file {split_file} does not exist; write one with salun split")
    spec = canonical_spec(data)
    bundle = load_dataset(spec)
    split = load_split(split_file)
    check_split_fits(split, bundle, spec)
    model, info = load_hf_folder(model_dir, dev, quiet=quiet)
    channels = info["num_channels"]
    if channels is not None and int(channels) != bundle.in_channels:
        raise SalunError(
            f"{model_dir} takes {channels}-channel images but {spec} has {bundle.in_channels}"
        )
    if info["num_labels"] < bundle.num_classes:
        raise SalunError(
            f"{model_dir} has {info['num_labels']} labels but {spec} has "
            f"{bundle.num_classes} classes"
        )
    meta = {
        "layout": "hf",
        "dataset": bundle.name,
        "data_spec": spec,
        "model": {},
        "train": {},
        "hf": info,
    }
    return model, meta, bundle, split, dev, spec


__all__ = ["is_hf_folder", "load_hf_for_split"]
