"""The options of ``salun sd`` verbs as small dataclasses (flags by
:func:`salun.config_cli.add_options`, help from the descriptions below). Method settings
and sampling settings get their flags from their configs (``CONFIGS[m]``, ``SampleConfig``).

A value of None means "the recipe's (``--config``), else the built-in default".
"""

from __future__ import annotations

from dataclasses import dataclass

from salun.config_cli import option

DTYPES = ("float32", "float16", "bfloat16")


def _methods() -> list[str]:
    from salun.generation.sd.unlearn import CONFIGS  # torch: only once a parser is built

    return sorted(CONFIGS)


@dataclass(frozen=True)
class ModelOptions:
    """The pipeline a verb loads and how it runs.

    Attributes:
        model: local diffusers folder or single-file checkpoint
        single_file_config: local diffusers folder of configs for a .ckpt
        device: auto | cpu | cuda[:N]
        dtype: the pipeline's weights dtype (default: float32)
        seed: seeds the verb's randomness (default: 0)
        quiet: no progress bars
        resolution: image side (SD v1: 512)
    """

    model: str | None = None
    single_file_config: str | None = None
    device: str = "auto"
    dtype: str = option("float32", choices=DTYPES)
    seed: int = 0
    quiet: bool = False
    resolution: int | None = None


@dataclass(frozen=True)
class DataOptions:
    """The forget / retain data of ``mask`` and ``unlearn`` (override the recipe's ``data:``).

    Attributes:
        config: recipe YAML (configs/sd-nudity.yaml, sd-imagenette.yaml)
        imagenette: Imagenette train folder (<wnid>/ subfolders)
        forget_class: Imagenette class to forget (0-9 or name)
        forget: forget image folder (metadata.csv or --forget-prompt)
        retain: retain image folder
        forget_prompt: prompt of every forget image (flat folder)
        retain_prompt: prompt of every retain image (flat folder)
        replacement_prompt: SalUn's replacement prompt c'
    """

    config: str | None = None
    imagenette: str | None = None
    forget_class: str | None = None
    forget: str | None = None
    retain: str | None = None
    forget_prompt: str | None = None
    retain_prompt: str | None = None
    replacement_prompt: str | None = None


@dataclass(frozen=True)
class TinyOptions:
    """``salun sd tiny``.

    Attributes:
        out: folder for the pipeline (diffusers layout)
        seed: seeds the random weights
        words: words that get one token each (e.g. nude)
    """

    out: str | None = option(required=True)
    seed: int = 0
    words: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SDMaskOptions:
    """``salun sd mask`` (the recipe's ``mask:`` section fills what is not given).

    Attributes:
        out: mask file (.safetensors)
        keep: kept fraction (paper: 0.5)
        params: the weights the mask covers: full (the whole UNet) or xattn (cross-attention
            only); default: the recipe's, else full
        guidance: w of (1+w)ε(c) − wε(∅) (default: 7.5)
        batch_size: forget images per gradient (default: 8)
    """

    out: str | None = option(required=True)
    keep: float | None = None
    params: str | None = option(choices=("full", "xattn"))
    guidance: float | None = None
    batch_size: int | None = None


@dataclass(frozen=True)
class SDUnlearnOptions:
    """``salun sd unlearn`` (the method's settings come from its config).

    Attributes:
        method: the unlearning method (default: the recipe's method, else salun)
        mask: mask file from `salun sd mask` (SalUn)
        out: folder for the unlearned UNet (required)
        set: override a setting
        mixed_precision: no | fp16 | bf16 (default: the recipe's, else no)
        gradient_checkpointing: trade compute for memory in the UNet's backward pass
    """

    method: str | None = option(choices=_methods)
    mask: str | None = None
    out: str | None = None
    set: tuple[str, ...] | None = option(None, append=True, metavar="KEY=VALUE")
    mixed_precision: str | None = option(choices=("no", "fp16", "bf16"))
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class PromptOptions:
    """The prompts of ``salun sd generate`` (one source).

    Attributes:
        config: recipe YAML; its sample: section sets the defaults below
        unet: unlearned UNet folder to use instead of the model's
        prompt: a prompt (repeatable)
        prompts: CSV with prompt[, evaluation_seed, ...] columns
        i2p: path of unsafe-prompts4703.csv, or 'sample'
        imagenette_prompts: 'Image of {class}'
        classes: Imagenette classes for --imagenette-prompts
    """

    config: str | None = None
    unet: str | None = None
    prompt: tuple[str, ...] | None = option(None, append=True)
    prompts: str | None = None
    i2p: str | None = None
    imagenette_prompts: bool = False
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class GenerateOutputOptions:
    """Where ``salun sd generate`` writes (sampling flags come from ``SampleConfig``).

    Attributes:
        use_prompt_guidance: take each prompt list's own guidance value instead of
            --guidance
        scheduler: lms (default, the reference) | ddim | pndm | ...
        out: folder for the images and their metadata.csv
        grid: also write an image grid PNG
        grid_max: the most images the grid shows (default: 64)
    """

    use_prompt_guidance: bool = False
    scheduler: str | None = None
    out: str | None = option(required=True)
    grid: str | None = None
    grid_max: int = 64


@dataclass(frozen=True)
class NudityOptions:
    """``salun sd evaluate nudity``.

    Attributes:
        images: the generated image folder
        threshold: NudeNet score threshold (default: 0.0)
        classes: NudeNet classes to count
        nudenet_model: another NudeNet ONNX model file
    """

    images: str | None = option(required=True)
    threshold: float | None = None
    classes: tuple[str, ...] | None = None
    nudenet_model: str | None = None


@dataclass(frozen=True)
class ClassesOptions:
    """``salun sd evaluate classes``.

    Attributes:
        images: the generated image folder (its metadata.csv holds the labels)
        classifier: TorchScript file or module:function
        imagenet_outputs: 1000-way ImageNet logits
        forget_class: the forgotten Imagenette class (0-9 or name): reported as UA
        input_size: the classifier's input side (default: 224)
        device: auto | cpu | cuda[:N] (default: cpu)
    """

    images: str | None = option(required=True)
    classifier: str | None = None
    imagenet_outputs: bool = False
    forget_class: str | None = None
    input_size: int = 224
    device: str = "cpu"


@dataclass(frozen=True)
class FidOptions:
    """``salun sd evaluate fid``.

    Attributes:
        images: the generated image folder
        real: the real image folder
        exclude_label: drop real images of this label
        fid_weights: TorchScript Inception file
        allow_missing_fid: without an FID network, write the report with fid null instead
            of failing
        device: auto | cpu | cuda[:N] (default: cpu)
    """

    images: str | None = option(required=True)
    real: str | None = option(required=True)
    exclude_label: int | None = None
    fid_weights: str | None = None
    allow_missing_fid: bool = False
    device: str = "cpu"


@dataclass(frozen=True)
class EvalOutputOptions:
    """What every ``salun sd evaluate`` metric also takes.

    Attributes:
        json_out: also write the result as JSON
        config: recipe YAML; its evaluate: section sets defaults
    """

    json_out: str | None = None
    config: str | None = None
