"""``imagefolder:PATH``: class-per-folder image trees such as Tiny ImageNet or Imagenette.

Layout: ``PATH/train/<class>/**/*.{jpeg,jpg,png}`` and either ``PATH/val/<class>/**``
(Imagenette) or ``PATH/val/images/*`` with ``PATH/val/val_annotations.txt`` (Tiny
ImageNet). Images become RGB squares of ``SALUN_IMAGE_SIZE`` pixels (default 64): an image
of another size has its shorter side resized to that and is centre-cropped.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from salun.data.dataset import DataBundle, ImageDataset, make_bundle
from salun.data.registry import find_first, register_loader
from salun.errors import SalunError

_EXTENSIONS = {".jpeg", ".jpg", ".png"}
DEFAULT_SIZE = 64
# A decompression bomb (a small file that decodes to gigapixels) is refused from its header,
# before decoding: 40 megapixels is above any camera photo a dataset would hold.
MAX_PIXELS = 40_000_000


def image_size() -> int:
    """The side length images are brought to: ``$SALUN_IMAGE_SIZE`` or 64."""
    raw = os.environ.get("SALUN_IMAGE_SIZE", "").strip()
    try:
        size = int(raw) if raw else DEFAULT_SIZE
    except ValueError:
        raise SalunError(f"SALUN_IMAGE_SIZE must be an integer, got {raw!r}") from None
    if size < 1:
        raise SalunError(f"SALUN_IMAGE_SIZE must be positive, got {size}")
    return size


def _images_under(folder: Path, root: Path) -> list[Path]:
    """The images of one class folder; a link to a file outside the dataset ``root`` is
    refused (it would read any file on the machine into the training set)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _EXTENSIONS and p.is_file())
    for p in files:
        if not p.resolve().is_relative_to(root):
            raise SalunError(f"image {p} links to {p.resolve()}, outside the dataset {root}")
    return files


def _read_image(path: Path, size: int) -> np.ndarray:
    """One image as uint8 H×W×3, resized (shorter side) and centre-cropped to size×size."""
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header only
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise SalunError(
                    f"image {path} is {w}x{h} pixels, over the {MAX_PIXELS:,}-pixel limit "
                    "(a decompression bomb, or an image far larger than a dataset needs)"
                )
            im = im.convert("RGB")
            if (w, h) != (size, size):
                scale = size / min(w, h)
                nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
                im = im.resize((nw, nh), Image.Resampling.BILINEAR)
                left, top = (nw - size) // 2, (nh - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError as e:
        raise SalunError(f"image {path} refused as a decompression bomb: {e}") from None
    except (OSError, ValueError) as e:  # ValueError: e.g. an oversized PNG text chunk
        raise SalunError(f"cannot read image {path}: {e}") from None


def _load(files: list[Path], labels: list[int], size: int, what: str) -> ImageDataset:
    if not files:
        raise SalunError(f"no .jpeg/.jpg/.png images found in {what}")
    # Pillow decodes outside the GIL, so threads speed up large folders.
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda p: _read_image(p, size), files))
    images = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())
    return ImageDataset(images, torch.tensor(labels, dtype=torch.int64))


# a folder holding one of these is a salun output (say ``--out`` inside the image tree),
# never a class
_SALUN_OUTPUTS = ("model.json", "bench.json", "audit.json")


def _class_folders(split_dir: Path) -> list[str]:
    """The class folders of ``train/`` or ``val/``: real folders inside the dataset.

    Hidden folders (``.ipynb_checkpoints``, ``.git``) are skipped: they are never classes.
    A link to a folder outside the dataset, or a salun output folder, is an error: either
    would silently become a class of its own.
    """
    root = split_dir.parent.resolve()
    names = []
    for p in sorted(split_dir.iterdir()):
        if p.name.startswith(".") or not p.is_dir():
            continue
        if not p.resolve().is_relative_to(root):
            raise SalunError(
                f"{p} links to {p.resolve()}, outside the dataset {root}; class folders "
                "must lie inside it"
            )
        made = [m for m in _SALUN_OUTPUTS if (p / m).exists()]
        if made:
            raise SalunError(
                f"{p} is a salun output ({made[0]}), not a class of images; move it out of "
                f"{split_dir}"
            )
        names.append(p.name)
    return names


def _from_class_folders(split_dir: Path, index: dict[str, int], size: int) -> ImageDataset:
    files: list[Path] = []
    labels: list[int] = []
    root = split_dir.parent.resolve()
    for name in _class_folders(split_dir):
        if name not in index:
            raise SalunError(f"{split_dir / name}: class {name!r} has no folder in train/")
        found = _images_under(split_dir / name, root)
        if not found:  # a class without an image: a label no sample carries
            raise SalunError(
                f"class folder {split_dir / name} holds no .jpeg/.jpg/.png images; add "
                "images or remove the folder"
            )
        files += found
        labels += [index[name]] * len(found)
    return _load(files, labels, size, str(split_dir))


def _inside(name: str, val_dir: Path, line: int) -> Path:
    """An annotation's file name, confined to ``val/images/``: an absolute path or one
    with ``..`` would read a file from outside the dataset into the test set."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise SalunError(
            f"{val_dir / 'val_annotations.txt'} line {line}: image {name!r} is outside "
            f"{val_dir / 'images'}; entries must be file names relative to that folder"
        )
    return rel


def _from_annotations(val_dir: Path, index: dict[str, int], size: int) -> ImageDataset:
    """Tiny ImageNet's val: ``val_annotations.txt`` lines ``file<TAB>wnid<TAB>box...``."""
    files: list[Path] = []
    labels: list[int] = []
    for n, line in enumerate((val_dir / "val_annotations.txt").read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise SalunError(
                f"{val_dir / 'val_annotations.txt'} line {n}: expected 'file<TAB>class' with a "
                f"class from train/, got {line[:80]!r}"
            )
        path = val_dir / "images" / _inside(parts[0], val_dir, n)
        if not path.resolve().is_relative_to(val_dir.parent.resolve()):  # a link out
            raise SalunError(f"image {path} links to {path.resolve()}, outside the dataset")
        files.append(path)
        labels.append(index[parts[1]])
    return _load(files, labels, size, str(val_dir))


def _readable_names(root: Path, wnids: list[str]) -> tuple[str, ...]:
    # Tiny ImageNet's words.txt maps wnids to "name, synonym, ..."; keep the first name.
    words = root / "words.txt"
    if not words.is_file():
        return tuple(wnids)
    table = {}
    for line in words.read_text(errors="replace").splitlines():
        wnid, _, names = line.partition("\t")
        table[wnid.strip()] = names.split(",")[0].strip()
    return tuple(table.get(w) or w for w in wnids)


@register_loader(
    "imagefolder",
    "Give the dataset folder as imagefolder:PATH, holding train/<class>/ and val/ (e.g. "
    "tiny-imagenet-200 from http://cs231n.stanford.edu/tiny-imagenet-200.zip, or "
    "imagenette2-160 from https://github.com/fastai/imagenette), extracted.",
)
def load_imagefolder(root: Path | None, arg: str | None) -> DataBundle:
    """Images in class folders; PATH is looked up as given, then under the search folders."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise SalunError("imagefolder datasets need Pillow: pip install pillow") from None
    if not arg:
        raise SalunError("imagefolder needs a folder: imagefolder:/data/tiny-imagenet-200")
    # An absolute PATH ignores the search folder it is joined to; a relative one is tried
    # under each search folder and the working directory.
    _, found = find_first("imagefolder", root, [f"{arg}/train", f"{arg}/val"], [os.getcwd()])
    train_dir, val_dir = found[f"{arg}/train"], found[f"{arg}/val"]
    wnids = _class_folders(train_dir)
    if not wnids:
        raise SalunError(f"{train_dir} has no class folders")
    index = {w: i for i, w in enumerate(wnids)}
    size = image_size()
    train = _from_class_folders(train_dir, index, size)
    if (val_dir / "val_annotations.txt").is_file():
        test = _from_annotations(val_dir, index, size)
    else:
        test = _from_class_folders(val_dir, index, size)
    # Named after its folder (e.g. "tiny-imagenet-200") so splits and models tell trees apart.
    name = train_dir.parent.resolve().name
    return make_bundle(name, train, test, _readable_names(train_dir.parent, wnids), flip=True)
