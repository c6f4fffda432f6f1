"""The options of ``salun gen`` verbs as small dataclasses (flags by
:func:`salun.config_cli.add_options`, help from the descriptions below). The verbs'
settings (``DDPMTrainConfig``, ``SamplerConfig``...) get their flags from those configs.
"""

from __future__ import annotations

from dataclasses import dataclass

from salun.config_cli import option


@dataclass(frozen=True)
class GenCommonOptions:
    """Every ``salun gen`` verb; device None means the preset's, else auto.

    Attributes:
        config: preset YAML, e.g. configs/gen-fashion-cpu.yaml
        device: auto, cpu or cuda[:N] (default: auto)
        quiet: no progress bars
    """

    config: str | None = None
    device: str | None = None
    quiet: bool = False


@dataclass(frozen=True)
class GenDataOption:
    """The dataset of ``salun gen train``.

    Attributes:
        dataset: dataset, e.g. fashion-mnist
    """

    dataset: str | None = option(flag="--data")


@dataclass(frozen=True)
class ForgetClassOption:
    """The class a verb forgets, masks or evaluates.

    Attributes:
        forget_class: class to forget
    """

    forget_class: int | None = None


@dataclass(frozen=True)
class WeightsOption:
    """Which weights of a trained DDPM folder a verb reads.

    Attributes:
        weights: weights of a trained DDPM folder to use (default: preset or 'model');
            unlearned folders hold one set, used for either
    """

    weights: str | None = option(choices=["model", "ema"])


@dataclass(frozen=True)
class GenTrainOptions:
    """``salun gen train``.

    Attributes:
        out: DDPM model folder to write
        exclude_class: leave this class out (= Retrain)
        checkpoint_every: steps between checkpoints
        resume: continue an unfinished --out folder
    """

    out: str | None = option(required=True)
    exclude_class: int | None = None
    checkpoint_every: int = 500
    resume: bool = False


@dataclass(frozen=True)
class GenMaskOptions:
    """``salun gen mask``.

    Attributes:
        model: the original DDPM folder
        out: mask file to write (.safetensors)
        random: a random mask (the ablation)
    """

    model: str | None = option(required=True)
    out: str | None = option(required=True)
    random: bool = False


@dataclass(frozen=True)
class GenUnlearnOptions:
    """``salun gen unlearn``.

    Attributes:
        model: the original DDPM folder
        mask: mask file (required for --method salun)
        out: unlearned DDPM folder to write
        checkpoint_every: steps between checkpoints of --out (Retrain: training steps;
            the others: iterations); rerunning the same command continues from the last
    """

    model: str | None = option(required=True)
    mask: str | None = None
    out: str | None = option(required=True)
    checkpoint_every: int = 500


@dataclass(frozen=True)
class GenSampleOptions:
    """``salun gen sample``.

    Attributes:
        model: DDPM folder
        classes: classes to draw (default: all)
        n_per_class: images per class (default: 8)
        out: PNG grid to write
        npz: also save the uint8 images and labels to this .npz
    """

    model: str | None = option(required=True)
    classes: tuple[int, ...] | None = option(None, nargs="+")
    n_per_class: int = 8
    out: str | None = option(required=True)
    npz: str | None = None


@dataclass(frozen=True)
class GenEvaluateOptions:
    """``salun gen evaluate``.

    Attributes:
        model: DDPM folder
        classifier: classifier folder (from `salun train`)
        grid: also write a per-class PNG grid of the samples
        out: write the record as JSON here
        json: print the record as JSON on stdout
    """

    model: str | None = option(required=True)
    classifier: str | None = option(required=True)
    grid: str | None = None
    out: str | None = None
    json: bool = False
