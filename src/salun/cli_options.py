"""The options of the classifier verbs (``salun split | train | evaluate | mask | unlearn``)
as small dataclasses: :func:`salun.config_cli.add_options` turns each field into a flag,
with its description below as the help. Settings of a config (``TrainConfig``, a method's
config) are not repeated here: their flags come from the config itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from salun.config_cli import option


@dataclass(frozen=True)
class ThreadsOption:
    """``--threads N``, applied around the whole command by ``salun.cli``.

    Attributes:
        threads: torch CPU threads (default: torch's); results can differ with the count,
            and 1 is much faster for small models on a busy machine
    """

    threads: int | None = None


@dataclass(frozen=True)
class RunOptions:
    """Where and how loudly a computing verb runs.

    Attributes:
        device: auto, cpu or cuda[:N] (default: auto)
        quiet: no progress bars
    """

    device: str = "auto"
    quiet: bool = False


@dataclass(frozen=True)
class DataOption:
    """The dataset of a verb that reads a model folder.

    Attributes:
        data: the dataset, when it moved since training (default: the one the model
            records); it must have the content the split was drawn from
    """

    data: str | None = None


@dataclass(frozen=True)
class HelpOption:
    """``-h/--help`` as a plain switch, for verbs whose help also lists the flags of a
    second parser (the chosen method's settings).

    Attributes:
        help: show help (with the method's flags)
    """

    help: bool = option(False, short="-h")


@dataclass(frozen=True)
class SplitOptions:
    """``salun split``.

    Attributes:
        data: dataset, e.g. fashion-mnist, cifar10, npz:PATH
        scenario: random data forgetting or class-wise forgetting (not needed with
            --forget-ids)
        fraction: random: fraction of the train set to forget
        count: random: number of samples to forget
        classes: class-wise: classes
        seed: split seed (default: 0)
        val_fraction: fraction of each class held out for validation (default: 0)
        forget_ids: forget exactly the training examples this file names (a deletion
            request): one index per line (# comments allowed) or a JSON list
        out: split file to write (JSON)
    """

    data: str | None = option(required=True)
    scenario: str | None = option(None, choices=["random", "class"])
    fraction: float | None = None
    count: int | None = None
    classes: tuple[int, ...] = option((), nargs="+")
    seed: int = 0
    val_fraction: float = 0.0
    forget_ids: str | None = None
    out: str | None = option(required=True)


@dataclass(frozen=True)
class TrainOptions:
    """``salun train`` (the recipe's flags come from ``TrainConfig``).

    Attributes:
        data: dataset, e.g. fashion-mnist
        arch: resnet18, vgg16_bn, cnn or mlp (default: cnn)
        width: channel width multiplier
        split: train on this split's D_f ∪ D_r (default: the whole train set)
        out: model folder to write
    """

    data: str | None = option(required=True)
    arch: str = "cnn"
    width: float = 1.0
    split: str | None = None
    out: str | None = option(required=True)


@dataclass(frozen=True)
class EvaluateOptions:
    """``salun evaluate``.

    Attributes:
        model: model folder
        forget: split file
        json: print metrics as JSON on stdout
    """

    model: str | None = option(required=True)
    forget: str | None = option(required=True)
    json: bool = False


@dataclass(frozen=True)
class MaskOptions:
    """``salun mask``.

    Attributes:
        model: the original model folder
        forget: split file
        keep: kept fraction; repeat for several masks (default: 0.5)
        scope: global thresholding (paper) or per layer (ablation)
        batch_size: saliency batch size
        seed: the run's seed, as salun unlearn --seed: the same seed gives the mask SalUn
            builds inside salun unlearn (default: 0)
        augment: random crop (the original recipe's padding) + flip of the D_f batches, as
            the reference's mask pass (docs/method.md); off by default
        out: mask file (.safetensors); with several --keep, _keep<r> is appended
    """

    model: str | None = option(required=True)
    forget: str | None = option(required=True)
    keep: tuple[float, ...] | None = option(None, append=True)
    scope: str = option("global", choices=["global", "layer"])
    batch_size: int = 256
    seed: int = 0
    augment: bool = False
    out: str | None = option(required=True)


@dataclass(frozen=True)
class UnlearnOptions:
    """``salun unlearn`` (the method's settings come from its config).

    Attributes:
        model: the original model folder (salun's, or a Hugging Face folder + --data)
        method: method name (see `salun methods`)
        forget: split file
        mask: saliency mask file (any method accepts one)
        out: folder for the unlearned model and its evaluation
        no_eval: skip the evaluation
    """

    model: str | None = None
    method: str = "salun"
    forget: str | None = None
    mask: str | None = None
    out: str | None = None
    no_eval: bool = False


@dataclass(frozen=True)
class TuneOptions:
    """``salun tune`` (docs/your-model.md, "Settings without a Retrain").

    Attributes:
        model: the original model folder
        forget: split file
        method: method name (see `salun methods`)
        grid: a value to try; repeat for several (default: the method's lr_grid, or five
            log-spaced values around its default)
        retrain: a Retrain model folder: tune against it (smallest Avg. Gap) instead of
            the Retrain-free target
        set: a method setting KEY=VALUE, e.g. --set epochs=5; repeat for several
        seed: the method's seed, the MIA's subsample and the test halves (default: 0)
        out: the report to write (JSON: every value tried, its metrics, the pick and why)
    """

    model: str | None = option(required=True)
    forget: str | None = option(required=True)
    method: str = "salun"
    grid: tuple[float, ...] | None = option(None, append=True)
    retrain: str | None = None
    set: tuple[str, ...] | None = option(None, append=True)
    seed: int = 0
    out: str | None = option(required=True)


@dataclass(frozen=True)
class PluginOption:
    """``--plugin MODULE`` of ``salun unlearn | tune | methods | bench`` (docs/plugins.md).

    Attributes:
        plugin: a module of your own that registers methods, e.g. my_pkg.my_methods;
            repeat for several (installed packages' salun.methods entry points load
            without it)
    """

    plugin: tuple[str, ...] | None = option(None, append=True, metavar="MODULE")
