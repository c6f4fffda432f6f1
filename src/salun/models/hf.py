"""Local Hugging Face image-classifier folders (``save_pretrained`` layout) as salun models.

A folder with ``config.json`` and safetensors weights (``model.safetensors`` or a sharded
``model.safetensors.index.json``) is loaded with ``AutoModelForImageClassification``,
offline, without remote code; pickled weights (``*.bin``, ``*.pt``...) are refused, as
every other pickle in salun (docs/safety.md). Its ``preprocessor_config.json``, when
present, gives the normalisation (``image_mean`` / ``image_std``) salun applies to its
[0, 1] images; no resizing is done, so the data must already have the size the model
takes. The unlearned model is written back in the same layout, with salun's record in
``salun_hf.json`` beside it (docs/your-model.md).

``transformers`` is imported only here and only when a folder is read or written
(``pip install salun[hf]``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from salun.errors import ArtifactError, SalunError
from salun.io import to_jsonable
from salun.models.adapter import adapt_model, strip_adapter

RECORD = "salun_hf.json"
FORMAT = "salun-hf-model-1"
PREPROCESSOR = "preprocessor_config.json"
_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def is_hf_folder(path: str | Path) -> bool:
    """A ``save_pretrained`` folder: ``config.json`` and no salun ``model.json``."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and not (p / "model.json").exists()


def _transformers():
    try:
        import transformers
    except ImportError:
        raise SalunError(
            "reading a Hugging Face model folder needs transformers: pip install 'salun[hf]'"
        ) from None
    return transformers


def check_safetensors_only(path: Path) -> None:
    has_safe = (path / "model.safetensors").is_file() or (
        path / "model.safetensors.index.json"
    ).is_file()
    pickles = sorted(q.name for pat in _PICKLES for q in path.glob(pat))
    if not has_safe:
        if pickles:
            raise ArtifactError(
                f"{path} holds pickled weights ({pickles[0]}); salun loads safetensors only "
                "(pickles can run code): re-save it with model.save_pretrained(folder)"
            )
        raise ArtifactError(f"{path} has a config.json but no model.safetensors")


def hf_normalize(path: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` from the folder's image-processor config, or None (no file, or
    ``do_normalize`` off): what the model expects after rescaling to [0, 1]."""
    file = Path(path) / PREPROCESSOR
    if not file.is_file():
        return None
    try:
        pre = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{file} is corrupted: {e}") from None
    if not isinstance(pre, dict) or not pre.get("do_normalize", True):
        return None
    mean, std = pre.get("image_mean"), pre.get("image_std")
    if mean is None or std is None:
        return None
    if isinstance(mean, (int, float)):
        mean, std = [mean], [std]
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_hf_folder(path: str | Path, device="cpu", *, quiet: bool = True) -> tuple[nn.Module, dict]:
    """Load a Hugging Face image classifier folder, adapted for salun's methods (logits
    out, the folder's normalisation in; parameter names unchanged).

    Returns:
        ``(model in eval mode on device, info)`` with ``info``: ``num_labels``,
        ``num_channels`` (None if the config has none) and ``normalize``.
    """
    path = Path(path)
    if not is_hf_folder(path):
        raise ArtifactError(f"{path} is not a Hugging Face model folder (no config.json)")
    check_safetensors_only(path)
    tf = _transformers()
    if quiet:
        tf.utils.logging.disable_progress_bar()
    try:
        model = tf.AutoModelForImageClassification.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(
            f"{path}: transformers could not load it as an image classifier: {e}"
        ) from None
    norm = hf_normalize(path)
    adapt_model(model, norm)
    info = {
        "num_labels": int(model.config.num_labels),
        "num_channels": getattr(model.config, "num_channels", None),
        "normalize": [list(norm[0]), list(norm[1])] if norm else None,
        "architecture": type(model).__name__,
    }
    return model.to(device).eval(), info


def save_hf_folder(
    out: str | Path, model: nn.Module, source: str | Path, record: dict[str, Any]
) -> Path:
    """Write ``model`` in the ``save_pretrained`` layout (safetensors) atomically, with the
    source folder's image-processor config and salun's ``record`` in ``salun_hf.json``."""
    from salun.io import atomic_dir

    strip_adapter(model)  # the saved model is the user's class, as it came in
    text = json.dumps({"format": FORMAT, **record}, indent=2, sort_keys=True, default=to_jsonable)

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        if (
            not (tmp / "model.safetensors").is_file()
            and not (tmp / "model.safetensors.index.json").is_file()
        ):
            raise ArtifactError("transformers wrote no safetensors weights")
        pre = Path(source) / PREPROCESSOR
        if pre.is_file():
            shutil.copyfile(pre, tmp / PREPROCESSOR)
        (tmp / RECORD).write_text(text + "\n")

    atomic_dir(out, write)
    return Path(out)


def is_salun_hf_folder(p: Path) -> bool:
    """A folder :func:`save_hf_folder` wrote (its ``salun_hf.json``); never raises."""
    try:
        return p.is_dir() and json.loads((p / RECORD).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False
