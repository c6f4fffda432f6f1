"""``salun gen train | mask | unlearn | sample | evaluate``: the class-conditional DDPM.

Settings come from three layers: the config dataclasses' defaults (the paper's values),
then a preset YAML (``--config configs/gen-fashion-cpu.yaml``; sections ``model``,
``train``, ``mask``, ``unlearn``, ``sample``, ``evaluate`` plus top-level ``dataset``,
``forget_class``, ``weights``), then the flags given on the command line. Flags are
generated from the dataclass fields, so they never drift from the API.

Typical run (see ``benchmarks/gen/README.md``)::

    salun gen train --config configs/gen-fashion-cpu.yaml --out runs/gen/original
    salun gen mask --config ... --model runs/gen/original --out runs/gen/mask.safetensors
    salun gen unlearn --config ... --model runs/gen/original --method salun \\
        --mask runs/gen/mask.safetensors --out runs/gen/salun
    salun gen evaluate --config ... --model runs/gen/salun --classifier runs/gen/clf
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from salun.config_cli import (
    add_dataclass_args,
    add_options,
    dataclass_from_args,
    overrides_from_args,
)
from salun.errors import SalunError
from salun.generation.ddpm.cli_options import (
    ForgetClassOption,
    GenCommonOptions,
    GenDataOption,
    GenEvaluateOptions,
    GenMaskOptions,
    GenSampleOptions,
    GenTrainOptions,
    GenUnlearnOptions,
    WeightsOption,
)
from salun.generation.ddpm.evaluate import GenEvalConfig
from salun.generation.ddpm.mask import DDPMMaskConfig
from salun.generation.ddpm.model import DenoiserConfig
from salun.generation.ddpm.sampler import SamplerConfig
from salun.generation.ddpm.train import DDPMTrainConfig
from salun.generation.ddpm.unlearn import METHODS, GenUnlearnConfig
from salun.outputs import add_overwrite_flag, claim_output
from salun.trust import add_trust_flag
from salun.validate import check_each, check_int
from salun.yaml_file import read_yaml

SECTIONS = ("model", "train", "mask", "unlearn", "sample", "evaluate")
TOP_LEVEL = ("dataset", "forget_class", "weights", "device", "description")
ARCH_SKIP = ("image_size", "in_channels", "num_classes", "extra")
TRAIN_FIELDS = {f.name for f in fields(DDPMTrainConfig)}


def load_preset(path: str | None) -> dict[str, Any]:
    """Read a gen preset YAML; unknown sections or keys are errors, not silently ignored."""
    if not path:
        return {}
    data = read_yaml(path, f"config file {path} does not exist") or {}
    if not isinstance(data, dict):
        raise SalunError(f"{path} must be a mapping of sections")
    unknown = sorted(set(data) - set(SECTIONS) - set(TOP_LEVEL))
    if unknown:
        raise SalunError(f"{path}: unknown keys {unknown}; allowed: {SECTIONS + TOP_LEVEL}")
    return data


def section(preset: dict, name: str, cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """One preset section checked against the dataclass fields."""
    values = dict(preset.get(name) or {})
    allowed = {f.name for f in fields(cls)} - set(skip)
    bad = sorted(set(values) - allowed)
    if bad:
        raise SalunError(f"preset section {name!r}: unknown keys {bad}; allowed: {sorted(allowed)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def build(ns: argparse.Namespace, preset: dict, name: str, cls: type, **fixed):
    try:
        return dataclass_from_args(ns, cls, **{**section(preset, name, cls), **fixed})
    except TypeError as e:
        raise SalunError(f"bad {name} settings: {e}") from None


def _pick(ns, preset: dict, key: str, default=None):
    """A top-level setting: the flag if given, else the preset's, else ``default``."""
    v = getattr(ns, key, None)
    return v if v is not None else preset.get(key, default)


def _require(value, flag: str):
    if value is None:
        raise SalunError(f"{flag} is required (or set it in the --config preset)")
    return value


def _common(p: argparse.ArgumentParser, *, data: bool = False, forget: bool = False) -> None:
    add_options(p, GenCommonOptions)  # --config, --device, --quiet
    from salun.cli import add_threads_flag  # applied by the main CLI for every verb

    add_threads_flag(p)
    if data:
        add_options(p, GenDataOption)
    if forget:
        add_options(p, ForgetClassOption)


def add_gen_subcommands(subparsers) -> None:
    """Register ``salun gen ...`` on the top-level CLI's subparsers."""
    gen = subparsers.add_parser("gen", help="class-conditional DDPM: train, mask, unlearn, ...")
    sub = gen.add_subparsers(dest="gen_command", required=True, metavar="GEN_COMMAND")

    p = sub.add_parser("train", help="train the Original DDPM (or Retrain with --exclude-class)")
    _common(p, data=True)
    add_options(p, GenTrainOptions)
    add_overwrite_flag(p)
    add_dataclass_args(p, DenoiserConfig, skip=ARCH_SKIP)
    add_dataclass_args(p, DDPMTrainConfig)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("mask", help="SalUn saliency mask of a DDPM for one class")
    _common(p, forget=True)
    add_options(p, WeightsOption)
    add_options(p, GenMaskOptions)
    add_overwrite_flag(p)
    add_dataclass_args(p, DDPMMaskConfig)
    p.set_defaults(handler=cmd_mask)

    p = sub.add_parser("unlearn", help="forget a class: salun, rl, ga, esd or retrain")
    _common(p, forget=True)
    add_options(p, WeightsOption)
    add_options(p, GenUnlearnOptions)
    add_overwrite_flag(p)
    add_dataclass_args(p, GenUnlearnConfig)
    p.set_defaults(handler=cmd_unlearn)

    p = sub.add_parser("sample", help="generate images per class and save a PNG grid")
    _common(p)
    add_options(p, WeightsOption)
    add_options(p, GenSampleOptions)
    add_overwrite_flag(p)
    add_dataclass_args(p, SamplerConfig)
    p.set_defaults(handler=cmd_sample)

    p = sub.add_parser("evaluate", help="UA, retained accuracy, feature FD (+ Inception FID)")
    _common(p, forget=True)
    add_options(p, WeightsOption)
    add_options(p, GenEvaluateOptions)
    add_trust_flag(p)  # --inception reads a TorchScript network
    add_overwrite_flag(p)
    add_dataclass_args(p, GenEvalConfig)
    add_dataclass_args(p, SamplerConfig)
    p.set_defaults(handler=cmd_evaluate)


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


def cmd_train(args) -> None:
    from salun.generation.ddpm.workflows import train_to_folder

    preset = load_preset(args.config)
    arch = {**section(preset, "model", DenoiserConfig, ARCH_SKIP)}
    arch.update(overrides_from_args(args, DenoiserConfig))
    cfg = build(args, preset, "train", DDPMTrainConfig)
    data = _require(_pick(args, preset, "dataset"), "--data")
    # --resume continues an existing DDPM folder: that is its normal use, not a replace.
    claim_output(args.out, "ddpm", overwrite=args.overwrite or args.resume, inputs=[data])
    meta = train_to_folder(
        data,
        arch,
        cfg,
        args.out,
        exclude_class=args.exclude_class,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        device=_pick(args, preset, "device", "auto"),
        quiet=args.quiet,
    )
    last = meta["history"][-1]["loss"] if meta.get("history") else float("nan")
    _say(args, f"wrote {args.out}: {meta['steps_done']} steps, last loss {last:.4f}")


def cmd_mask(args) -> None:
    from salun.generation.ddpm.workflows import mask_to_file

    preset = load_preset(args.config)
    cfg = build(args, preset, "mask", DDPMMaskConfig)
    claim_output(args.out, "mask", overwrite=args.overwrite, inputs=[args.model])
    record = mask_to_file(
        args.model,
        _require(_pick(args, preset, "forget_class"), "--forget-class"),
        cfg,
        args.out,
        weights=_pick(args, preset, "weights", "model"),
        random=args.random,
        device=_pick(args, preset, "device", "auto"),
    )
    _say(args, f"wrote {args.out}: {record['kind']} mask, keep {record['keep']}")


def cmd_unlearn(args) -> None:
    from salun.generation.ddpm.model import read_denoiser_meta
    from salun.generation.ddpm.unlearn_state import matching_run
    from salun.generation.ddpm.workflows import train_to_folder, unlearn_record, unlearn_to_folder

    preset = load_preset(args.config)
    forget_class = _require(_pick(args, preset, "forget_class"), "--forget-class")
    device = _pick(args, preset, "device", "auto")
    method = args.cfg_method or section(preset, "unlearn", GenUnlearnConfig).get("method", "salun")
    if method == "retrain":
        # Retrain resumes an unfinished --out folder of its own kind, as `gen train --resume`
        claim_output(args.out, "ddpm", overwrite=True, inputs=[args.model])
        # Retrain = the Original's recorded recipe and architecture on D_r only (a preset's
        # train section, if given, overrides the recorded values)
        meta = read_denoiser_meta(args.model)
        recorded = {k: v for k, v in meta.get("train", {}).items() if k in TRAIN_FIELDS}
        recorded.update(section(preset, "train", DDPMTrainConfig))
        cfg = DDPMTrainConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()}
        )
        train_to_folder(
            meta.get("data_spec", meta["dataset"]),
            meta["denoiser"],
            cfg,
            args.out,
            exclude_class=forget_class,
            checkpoint_every=args.checkpoint_every,
            resume=True,
            device=device,
            quiet=args.quiet,
        )
        _say(args, f"wrote {args.out}: retrained without class {forget_class}")
        return
    if method is not None and method not in METHODS:
        raise SalunError(f"unknown method {method!r}; choose one of {METHODS + ('retrain',)}")
    unlearn_section = {**section(preset, "unlearn", GenUnlearnConfig), "method": method}
    try:
        cfg = dataclass_from_args(args, GenUnlearnConfig, **unlearn_section)
    except TypeError as e:
        raise SalunError(f"bad unlearn settings: {e}") from None
    weights = _pick(args, preset, "weights", "model")
    # the same command on an --out that holds this very run continues it (or finds it done)
    previous = None
    if not args.overwrite and (Path(args.out) / "model.json").is_file():
        identity = unlearn_record(
            args.model, forget_class, cfg, mask_file=args.mask, weights=weights
        )
        previous = matching_run(args.out, identity)
    if previous is not None and previous.get("complete") is not False:
        _say(args, f"{args.out} already holds this finished {cfg.method} run; nothing to do")
        return
    claim_output(
        args.out,
        "ddpm",
        overwrite=args.overwrite or previous is not None,
        inputs=[args.model, args.mask],
    )
    record = unlearn_to_folder(
        args.model,
        forget_class,
        cfg,
        args.out,
        mask_file=args.mask,
        weights=weights,
        device=device,
        quiet=args.quiet,
        checkpoint_every=args.checkpoint_every,
        resume=previous is not None,
    )
    resumed = f", resumed at step {record['resumed_at_step']}" if previous is not None else ""
    _say(
        args,
        f"wrote {args.out}: {cfg.method} (alpha {record['alpha_used']:.4g}) "
        f"in {record['seconds']:.0f} s{resumed}",
    )


def cmd_sample(args) -> None:
    import numpy as np
    import torch

    from salun.generation.ddpm.model import load_denoiser
    from salun.generation.ddpm.sampler import sample
    from salun.generation.ddpm.workflows import weights_for
    from salun.generation.grids import save_class_grid
    from salun.io import atomic_write
    from salun.utils import resolve_device

    check_int("--n-per-class", args.n_per_class, 1)
    preset = load_preset(args.config)
    cfg = build(args, preset, "sample", SamplerConfig)
    claim_output(args.out, "grid", overwrite=args.overwrite, inputs=[args.model])
    if args.npz:
        claim_output(args.npz, "samples-npz", overwrite=args.overwrite, inputs=[args.model])
    dev = resolve_device(_pick(args, preset, "device", "auto"))
    weights = weights_for(args.model, _pick(args, preset, "weights", "model"))
    model, meta = load_denoiser(args.model, dev, weights=weights)
    classes = args.classes if args.classes else list(range(model.num_classes))
    check_each("--classes", classes, check_int, 0, model.num_classes - 1)
    labels = torch.tensor([c for c in classes for _ in range(args.n_per_class)])
    images = sample(model, labels, cfg, quiet=args.quiet)
    save_class_grid(
        args.out,
        images,
        labels,
        classes=classes,
        n_per_class=args.n_per_class,
        names=meta.get("classes"),
    )
    if args.npz:

        def write_npz(tmp: str) -> None:
            with open(tmp, "wb") as f:
                fmt = np.array("salun-samples-1")  # recognised by the output policy
                np.savez(f, images=images.numpy(), labels=labels.numpy(), salun_format=fmt)

        atomic_write(args.npz, write_npz)
    _say(args, f"wrote {args.out}: {len(images)} samples ({cfg.steps} steps, w={cfg.guidance})")


def cmd_evaluate(args) -> None:
    from salun.generation.ddpm.workflows import evaluate_folder

    preset = load_preset(args.config)
    eval_cfg = build(args, preset, "evaluate", GenEvalConfig)
    sampler = build(args, preset, "sample", SamplerConfig)
    inputs = [args.model, args.classifier]
    if args.grid:
        claim_output(args.grid, "grid", overwrite=args.overwrite, inputs=inputs)
    if args.out:
        claim_output(args.out, "record", overwrite=args.overwrite, inputs=inputs)
    record = evaluate_folder(
        args.model,
        args.classifier,
        _require(_pick(args, preset, "forget_class"), "--forget-class"),
        eval_cfg,
        sampler,
        weights=_pick(args, preset, "weights", "model"),
        grid=args.grid,
        out=args.out,
        device=_pick(args, preset, "device", "auto"),
        quiet=args.quiet,
        trust_code=args.trust_code,
    )
    if args.json:
        print(json.dumps(record, indent=2, sort_keys=True, default=str))
    else:
        m = record["metrics"]
        line = (
            f"UA {m['ua']:.1f} %  retained acc {m['retain_acc']:.1f} %  "
            f"feature FD {m['feature_fd']:.3f}"
        )
        if "inception_fid" in m:
            fid = m["inception_fid"]
            line += (
                f"  Inception FID {fid:.2f}"
                if fid is not None
                else f"  ({m['inception_fid_note']})"
            )
        print(line)


def config_dump(preset_path: str | None) -> dict[str, Any]:
    """The fully resolved settings of a preset (for records and docs)."""
    preset = load_preset(preset_path)
    ns = argparse.Namespace()
    return {
        "model": {
            **asdict(DenoiserConfig()),
            **section(preset, "model", DenoiserConfig, ARCH_SKIP),
        },
        "train": asdict(build(ns, preset, "train", DDPMTrainConfig)),
        "mask": asdict(build(ns, preset, "mask", DDPMMaskConfig)),
        "unlearn": asdict(build(ns, preset, "unlearn", GenUnlearnConfig)),
        "sample": asdict(build(ns, preset, "sample", SamplerConfig)),
        "evaluate": asdict(build(ns, preset, "evaluate", GenEvalConfig)),
    }
