"""Datasets as in-memory tensors, their sources, forget/retain splits and batching."""

from salun.data.batches import Augment, augment_batch, iterate_batches, num_batches, to_float
from salun.data.dataset import DataBundle, ImageDataset, channel_stats, make_bundle, to_nchw
from salun.data.registry import list_datasets, load_dataset, register_loader
from salun.data.splits import Split, check_split_fits, load_split, make_split, save_split

__all__ = [
    "Augment",
    "DataBundle",
    "ImageDataset",
    "Split",
    "augment_batch",
    "channel_stats",
    "check_split_fits",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "load_split",
    "make_bundle",
    "make_split",
    "num_batches",
    "register_loader",
    "save_split",
    "to_float",
    "to_nchw",
]
