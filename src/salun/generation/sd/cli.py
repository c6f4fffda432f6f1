"""``salun sd tiny | mask | unlearn | generate | evaluate`` (argparse).

Every verb that a recipe section configures takes ``--config FILE``: ``mask`` reads
``mask:``, ``unlearn`` reads ``method``/``methods:``, ``generate`` reads ``sample:``, and
``evaluate`` reads ``evaluate:``; a flag given on the command line wins over the recipe.

Settings that live in a config dataclass get their flags from :mod:`salun.config_cli`, as
the classifier verbs do: ``unlearn --method M`` parses one flag per field of M's config
(``salun sd unlearn --method M --help`` lists them), and ``generate`` takes
:class:`~salun.generation.sd.generate.SampleConfig`'s fields. The verbs' own options
(``--model``, ``--out``, the prompt sources...) are fields of the small dataclasses in
:mod:`salun.generation.sd.cli_options`.

The lead's ``salun.cli`` calls :func:`add_sd_subcommands` with its subparsers; every leaf
parser sets ``func`` (called as ``args.func(args)``, returning an exit code). User errors
are :class:`salun.errors.SalunError`. Heavy packages are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from salun.cli import add_threads_flag
from salun.cli_options import HelpOption
from salun.config_cli import OneLineParser, add_dataclass_args, add_options, overrides_from_args
from salun.errors import SalunError
from salun.generation.sd.cli_options import (
    ClassesOptions,
    DataOptions,
    EvalOutputOptions,
    FidOptions,
    GenerateOutputOptions,
    ModelOptions,
    NudityOptions,
    PromptOptions,
    SDMaskOptions,
    SDUnlearnOptions,
    TinyOptions,
)
from salun.io import atomic_write_json
from salun.outputs import add_overwrite_flag, claim_output, register_kind
from salun.trust import add_trust_flag
from salun.validate import check_resolution

TINY_MARKER = "salun_tiny.json"
register_kind(
    "sd-tiny",
    is_dir=True,
    what="salun tiny Stable Diffusion folder",
    recognise=lambda p: (p / TINY_MARKER).is_file() and (p / "model_index.json").is_file(),
)
DEFAULT_SCHEDULER = "lms"  # the reference's; SampleConfig holds the other sampling defaults
# Method-config fields the `unlearn` verb's own flags already set (--seed, --quiet, ...);
# ESD's `resolution` is the run's --resolution (or the recipe's top-level resolution:).
UNLEARN_OWN_FIELDS = ("seed", "quiet", "mixed_precision", "gradient_checkpointing", "resolution")


def _pipe(args: argparse.Namespace, **kw: Any):
    import torch

    from salun.generation.sd.pipeline import load_pipeline
    from salun.utils import resolve_device

    if not args.model:
        raise SalunError("give the local SD model folder or checkpoint with --model")
    return load_pipeline(
        args.model,
        device=resolve_device(args.device),
        dtype=getattr(torch, args.dtype),
        single_file_config=args.single_file_config,
        **kw,
    )


def _recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The YAML recipe (if any) with command-line data overrides applied."""
    from salun.generation.sd.recipe import load_recipe

    recipe = load_recipe(args.config) if getattr(args, "config", None) else {}
    if not args.model:
        args.model = recipe.get("model")
    data = dict(recipe.get("data") or {})
    for key in ("imagenette", "forget", "retain", "forget_prompt", "retain_prompt"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    if getattr(args, "replacement_prompt", None) is not None:
        data["replacement_prompt"] = args.replacement_prompt
    if getattr(args, "forget", None) is not None and getattr(args, "imagenette", None) is None:
        data.pop("imagenette", None)
    recipe["data"] = data
    if getattr(args, "forget_class", None) is not None:
        recipe["forget_class"] = args.forget_class
    if args.resolution is not None:
        recipe["resolution"] = args.resolution
    if "resolution" in recipe:  # before any weights load: 0 used to run at 512
        check_resolution("resolution", recipe["resolution"])
    return recipe


def _parse_value(text: str) -> Any:
    """A ``--set`` value as YAML, except that numbers YAML 1.1 leaves as text (``2e-5``,
    ``1E3``: no dot) are numbers too."""
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf") else value
        except ValueError:
            return value
    return value


def _print(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _section(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The recipe's ``name:`` section (empty without ``--config``); fills ``--model``."""
    from salun.generation.sd.recipe import load_recipe

    if not getattr(args, "config", None):
        return {}
    recipe = load_recipe(args.config)
    if hasattr(args, "model") and not args.model:
        args.model = recipe.get("model")
    if getattr(args, "resolution", "absent") is None and recipe.get("resolution") is not None:
        args.resolution = recipe["resolution"]
    section = recipe.get(name) or {}
    if not isinstance(section, dict):
        raise SalunError(f"{args.config}: '{name}' must be a mapping, got {section!r}")
    return section


def _setting(args: argparse.Namespace, section: dict, key: str, default: Any) -> Any:
    """A flag's value if given, else the recipe section's, else the built-in default."""
    value = getattr(args, key)
    if value is not None:
        return value
    return section.get(key, default)


def cmd_tiny(args: argparse.Namespace) -> int:
    from salun.generation.sd.tiny import tiny_pipeline
    from salun.io import atomic_dir

    claim_output(args.out, "sd-tiny", overwrite=args.overwrite)
    pipe = tiny_pipeline(seed=args.seed, words=tuple(args.words or ()))

    def write(tmp: Path) -> None:
        pipe.save_pretrained(tmp, safe_serialization=True)
        info = {"format": "salun-sd-tiny-1", "seed": args.seed, "words": args.words or [],
                "resolution": 16}  # fmt: skip
        atomic_write_json(tmp / TINY_MARKER, info)

    atomic_dir(args.out, write)
    _print({"out": str(args.out), "resolution": 16, "words": args.words or []})
    print(
        f"wrote {args.out}: a random tiny SD pipeline (16x16 images) for trying every "
        f"`salun sd` verb offline; pass --model {args.out} --resolution 16",
        file=sys.stderr,
    )
    return 0


def cmd_mask(args: argparse.Namespace) -> int:
    from salun.generation.sd.mask import sd_mask, sd_saliency
    from salun.generation.sd.recipe import task_data
    from salun.saliency import mask_density, save_mask

    claim_output(args.out, "mask", overwrite=args.overwrite, inputs=[args.model])
    recipe = _recipe(args)
    m = dict(recipe.get("mask") or {})
    keep = args.keep if args.keep is not None else float(m.get("keep", 0.5))
    params = args.params or m.get("params", "full")
    pipe = _pipe(args)
    forget, _ = task_data(recipe, pipe)
    if forget is None:
        raise SalunError("the mask needs forget images: --forget DIR, --imagenette, or a recipe")
    scores = sd_saliency(
        pipe,
        forget,
        guidance=float(_setting(args, m, "guidance", 7.5)),
        batch_size=int(_setting(args, m, "batch_size", 8)),
        params=params,
        seed=args.seed,
        quiet=args.quiet,
    )
    mask = sd_mask(scores, keep, params)
    save_mask(args.out, mask, keep=keep, params=params, n_forget=len(forget), model=str(args.model))
    _print({"mask": str(args.out), "keep": keep, "params": params, "density": mask_density(mask)})
    return 0


def _auto_concept(method: str, recipe: dict[str, Any]) -> str:
    """``concept: auto`` in an Imagenette recipe: ESD erases the class's training prompt,
    FMN re-steers attention away from the class name."""
    from salun.generation.sd.prompts import class_index, imagenette_classes, train_prompt

    if recipe.get("forget_class") is None:
        raise SalunError("concept: auto needs forget_class (Imagenette recipes)")
    c = class_index(recipe["forget_class"])
    return train_prompt(c) if method == "esd" else imagenette_classes()[c].name


def _one_resolution(values: dict[str, Any], recipe: dict[str, Any], cls: type) -> None:
    """One image side per run: the run's resolution (``--resolution`` or the recipe's
    ``resolution:``) also sizes a method's own sampling (ESD); a different value given
    for the method alone is an error rather than a silent second resolution."""
    from dataclasses import fields

    run = recipe.get("resolution")
    if run is None or "resolution" not in {f.name for f in fields(cls)}:
        return
    own = values.get("resolution")
    if own is not None and own != run:
        raise SalunError(
            f"two resolutions for one run: {run} (--resolution or the recipe's resolution:) "
            f"and {own} (the method's resolution setting); give one of them"
        )
    values["resolution"] = run


def method_parser(method: str) -> OneLineParser:
    """The second parser of ``salun sd unlearn --method M``: one flag per field of M's config
    (help from the class docstring), built only once M is known, like ``salun unlearn``."""
    from salun.generation.sd.unlearn import CONFIGS, SUMMARIES

    if method not in CONFIGS:
        raise SalunError(f"unknown SD method {method!r}; choose one of {sorted(CONFIGS)}")
    mp = OneLineParser(
        prog=f"salun sd unlearn --method {method}",
        description=f"{SUMMARIES[method]}. A flag wins over --set KEY=VALUE, which wins over "
        "the recipe's methods: section; --set also takes `resolution` and null values.",
    )
    add_dataclass_args(mp, CONFIGS[method], skip=UNLEARN_OWN_FIELDS)
    return mp


def cmd_unlearn(args: argparse.Namespace) -> int:
    from salun.generation.sd.pipeline import save_unet
    from salun.generation.sd.recipe import task_data
    from salun.generation.sd.unlearn import CONFIGS, make_config, run_unlearning
    from salun.saliency import load_mask

    recipe = _recipe(args)
    method = args.method or recipe.get("method", "salun")
    mp = method_parser(method)
    if args.help:
        args.parser.print_help()
        print()
        mp.print_help()
        return 0
    ns = mp.parse_args(getattr(args, "rest", None) or [])  # bad flags fail before any file
    if args.out is None:
        raise SalunError("salun sd unlearn needs --out")
    claim_output(args.out, "sd-unet", overwrite=args.overwrite, inputs=[args.model, args.mask])
    values = dict((recipe.get("methods") or {}).get(method) or {})
    for item in args.set or []:
        key, sep, val = item.partition("=")
        if not sep:
            raise SalunError(f"--set expects key=value, got {item!r}")
        values[key.strip()] = _parse_value(val)
    values.update(overrides_from_args(ns, CONFIGS[method]))
    if args.mixed_precision:
        values["mixed_precision"] = args.mixed_precision
    if args.gradient_checkpointing:
        values["gradient_checkpointing"] = True
    values["quiet"] = args.quiet
    values.setdefault("seed", args.seed)
    _one_resolution(values, recipe, CONFIGS[method])
    if values.get("concept") == "auto":
        values["concept"] = _auto_concept(method, recipe)
    cfg = make_config(method, values)
    pipe = _pipe(args)
    mask = None
    mask_path = args.mask or (recipe.get("mask") or {}).get("path")
    if mask_path and method != "rl":
        mask, _ = load_mask(mask_path, pipe.unet)
    forget, retain = (None, None) if method == "esd" else task_data(recipe, pipe)
    unet, history = run_unlearning(
        pipe, method, cfg, forget=forget, retain=retain, mask=mask, inplace=True
    )
    meta = {"method": method, "config": asdict(cfg), "mask": mask_path, "model": str(args.model)}
    save_unet(unet, args.out, **meta, history=history)
    _print({**meta, "out": str(args.out), "steps": len(history), "last_loss": history[-1]})
    return 0


def _prompt_items(args: argparse.Namespace):
    from salun.generation.sd.prompts import (
        PromptItem,
        class_index,
        imagenette_eval_prompts,
        load_i2p,
        load_prompt_csv,
    )

    if args.prompt:
        return [PromptItem(p, args.seed + i) for i, p in enumerate(args.prompt)]
    if args.prompts:
        return load_prompt_csv(args.prompts)
    if args.i2p is not None:
        return load_i2p(None if args.i2p == "sample" else args.i2p)
    if args.imagenette_prompts:
        classes = [class_index(c) for c in args.classes] if args.classes else None
        return imagenette_eval_prompts(classes)
    raise SalunError(
        "choose prompts: --prompt, --prompts CSV, --i2p PATH|sample, --imagenette-prompts"
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from salun.generation.sd.generate import SampleConfig, generate, save_folder
    from salun.generation.sd.grid import save_grid
    from salun.io import atomic_dir

    inputs = [args.model, args.unet]
    claim_output(args.out, "sd-samples", overwrite=args.overwrite, inputs=inputs)
    if args.grid:
        claim_output(args.grid, "grid", overwrite=args.overwrite, inputs=inputs)
    sample = _section(args, "sample")
    if args.prompts is None and not (args.prompt or args.i2p or args.imagenette_prompts):
        args.prompts = sample.get("prompts")
    items = _prompt_items(args)
    flags = overrides_from_args(args, SampleConfig)  # the generated flags the user gave
    numbers = {"steps": int, "guidance": float, "n_per_prompt": int, "batch_size": int}
    base = SampleConfig()  # the built-in defaults (the reference evaluation)
    cfg = SampleConfig(
        **{k: conv(flags.get(k, sample.get(k, getattr(base, k)))) for k, conv in numbers.items()},
        resolution=512 if args.resolution is None else args.resolution,  # 0 is an error
        use_prompt_guidance=args.use_prompt_guidance,
    )
    scheduler = _setting(args, sample, "scheduler", DEFAULT_SCHEDULER)
    pipe = _pipe(args, unet=args.unet, scheduler=scheduler)
    images, meta = generate(pipe, items, cfg, quiet=args.quiet)
    # Built aside and swapped in whole: a rerun never mixes old and new images.
    atomic_dir(args.out, lambda tmp: save_folder(tmp, images, meta))
    if args.grid:
        save_grid(args.grid, images[: args.grid_max], ncol=min(cfg.n_per_prompt, 8) or 8)
    _print({"out": str(args.out), "images": len(images), "config": asdict(cfg),
            "scheduler": scheduler})  # fmt: skip
    return 0


def _folder_images(path: str):
    """(image set, uint8 images) of a generated or real folder, at its images' own size."""
    from PIL import Image

    from salun.generation.sd.data import IMAGE_SUFFIXES, load_image_folder

    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SalunError(f"no images in {path}")
    with Image.open(files[0]) as im:
        side = min(im.size)
    data = load_image_folder(path, resolution=side)
    return data, data.uint8_images()


def cmd_eval_nudity(args: argparse.Namespace) -> int:
    from salun.generation.sd.nudity import EXPOSED_CLASSES, nudity_counts

    _claim_json(args)
    section = _section(args, "evaluate")
    threshold = args.threshold
    if threshold is None:
        threshold = float(section.get("nudenet_threshold", 0.0))
    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise SalunError(f"no PNG images in {args.images}")
    classes = args.classes or list(EXPOSED_CLASSES)
    res = nudity_counts(files, threshold=threshold, classes=classes, model_path=args.nudenet_model)
    res["images"] = str(args.images)
    _finish(args, res)
    return 0


def cmd_eval_classes(args: argparse.Namespace) -> int:
    _claim_json(args)
    from salun.generation.sd.classify import (
        class_forgetting_accuracy,
        imagenet_map,
        load_classifier,
        predict_classes,
    )
    from salun.generation.sd.prompts import class_index
    from salun.utils import resolve_device

    clf = load_classifier(args.classifier, trust_code=args.trust_code)
    data, images = _folder_images(args.images)
    if data.labels is None:
        raise SalunError(
            f"{args.images}/metadata.csv has no label column (use --imagenette-prompts)"
        )
    preds = predict_classes(
        clf,
        images,
        class_to_output=imagenet_map() if args.imagenet_outputs else None,
        input_size=args.input_size,
        device=resolve_device(args.device),
    )
    forget = None if args.forget_class is None else class_index(args.forget_class)
    res = class_forgetting_accuracy(preds, data.labels, forget)
    res.update({"classifier": args.classifier, "imagenet_outputs": args.imagenet_outputs})
    _finish(args, res)
    return 0


def cmd_eval_fid(args: argparse.Namespace) -> int:
    from salun.generation.sd.fid import fid_report

    _claim_json(args)
    _, gen = _folder_images(args.images)
    data, real = _folder_images(args.real)
    if args.exclude_label is not None and data.labels is not None:
        keep = [i for i, y in enumerate(data.labels) if y != args.exclude_label]
        real = real[keep]
    weights = args.fid_weights or _section(args, "evaluate").get("fid_weights")
    res = fid_report(gen, real, weights=weights, device=args.device, trust_code=args.trust_code)
    if res.get("fid") is None and not args.allow_missing_fid:
        raise SalunError(
            f"no FID network: {res.get('reason', 'none found')}; or pass --allow-missing-fid "
            "to write the report without FID"
        )
    _finish(args, res)
    return 0


def _claim_json(args: argparse.Namespace) -> None:
    if args.json_out:
        inputs = [args.images, getattr(args, "real", None)]
        claim_output(args.json_out, "record", overwrite=args.overwrite, inputs=inputs)


def _finish(args: argparse.Namespace, res: dict) -> None:
    if args.json_out:
        atomic_write_json(args.json_out, {"format": "salun-sd-eval-1", **res})
    _print(res)


def _model_args(p: argparse.ArgumentParser) -> None:
    add_options(p, ModelOptions)
    add_threads_flag(p)


def add_sd_subcommands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sd`` with ``tiny | mask | unlearn | generate | evaluate`` to ``subparsers``."""
    from salun.generation.sd.generate import SampleConfig

    sd = subparsers.add_parser("sd", help="Stable Diffusion unlearning (needs salun[sd])")
    sub = sd.add_subparsers(dest="sd_command", required=True)

    p = sub.add_parser("tiny", help="write a random tiny SD pipeline to try every verb offline")
    add_options(p, TinyOptions)
    add_threads_flag(p)
    add_overwrite_flag(p)
    p.set_defaults(func=cmd_tiny)

    p = sub.add_parser("mask", help="SalUn saliency mask over the UNet")
    _model_args(p)
    add_options(p, DataOptions)
    add_options(p, SDMaskOptions)
    add_overwrite_flag(p)
    p.set_defaults(func=cmd_mask)

    p = sub.add_parser(
        "unlearn",
        help="run salun | rl | ga | esd | fmn and save the UNet; "
        "`salun sd unlearn --method M --help` lists M's settings",
        add_help=False,  # --help also prints the chosen method's generated flags
    )
    _model_args(p)
    add_options(p, DataOptions)
    add_options(p, SDUnlearnOptions)
    add_options(p, HelpOption)
    add_overwrite_flag(p)
    p.set_defaults(func=cmd_unlearn, parser=p)

    p = sub.add_parser("generate", help="sample images for prompts into a folder")
    _model_args(p)
    add_options(p, PromptOptions)
    # --steps, --guidance, --n-per-prompt, --batch-size; --resolution is _model_args's.
    add_dataclass_args(p, SampleConfig, skip=("resolution", "use_prompt_guidance"))
    add_options(p, GenerateOutputOptions)  # --use-prompt-guidance, --scheduler, --out...
    add_overwrite_flag(p)
    p.set_defaults(func=cmd_generate)

    ev = sub.add_parser("evaluate", help="nudity | classes | fid on a generated folder")
    evs = ev.add_subparsers(dest="sd_metric", required=True)
    p = evs.add_parser("nudity", help="NudeNet 3.4.2 exposed-part counts")
    add_options(p, NudityOptions)
    p.set_defaults(func=cmd_eval_nudity)
    p = evs.add_parser("classes", help="classifier accuracy / UA on class prompts")
    add_options(p, ClassesOptions)
    add_trust_flag(p)
    p.set_defaults(func=cmd_eval_classes)
    p = evs.add_parser("fid", help="FID against real images (offline weights only)")
    add_options(p, FidOptions)
    add_trust_flag(p)
    p.set_defaults(func=cmd_eval_fid)
    for p in evs.choices.values():
        add_threads_flag(p)
        add_options(p, EvalOutputOptions)  # --json-out, --config
        add_overwrite_flag(p)
    return sd
