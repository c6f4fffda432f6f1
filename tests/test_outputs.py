"""The output policy, the crash-safe writers and the integrity checks, in process."""

import json
import os
import stat
import time

import numpy as np
import pytest
import torch

from salun import io as sio
from salun.artifacts import load_model, save_model
from salun.errors import ArtifactError, SalunError
from salun.models import build_from_kwargs, model_kwargs_for
from salun.outputs import claim_output


def _model(tmp_path, synthetic, name="m", seed=0, meta=None):
    kwargs = model_kwargs_for(synthetic, "mlp", width=0.1)
    torch.manual_seed(seed)
    model = build_from_kwargs(kwargs)
    save_model(tmp_path / name, model, kwargs, {"dataset": "synthetic", **(meta or {})})
    return tmp_path / name, model


# ---------------------------------------------------------------- claim_output


def test_a_user_folder_or_file_is_never_claimed(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(SalunError, match="is not a salun model folder"):
            claim_output(user, "model", overwrite=overwrite)
    f = tmp_path / "notes.json"
    f.write_text('{"format": "something else"}')
    with pytest.raises(SalunError, match="is not a salun split file"):
        claim_output(f, "split", overwrite=True)
    assert (user / "thesis.tex").read_text() == "precious"


def test_same_kind_needs_overwrite(tmp_path, synthetic):
    m, _ = _model(tmp_path, synthetic)
    with pytest.raises(SalunError, match="pass --overwrite"):
        claim_output(m, "model", overwrite=False)
    assert claim_output(m, "model", overwrite=True) == m
    # a model folder is not a DDPM folder, nor a benchmark folder
    with pytest.raises(SalunError, match="not a salun DDPM folder"):
        claim_output(m, "ddpm", overwrite=True)
    with pytest.raises(SalunError, match="not a salun benchmark folder"):
        claim_output(m, "bench", overwrite=True)
    # a new path is fine without --overwrite
    assert claim_output(tmp_path / "new" / "deeper", "model", overwrite=False)
    # a model folder the user also keeps a file in is not replaced: the file would go too
    (m / "notes.txt").write_text("mine")
    with pytest.raises(SalunError, match="also holds 'notes.txt'"):
        claim_output(m, "model", overwrite=True)
    assert (m / "notes.txt").read_text() == "mine"


def test_file_where_a_folder_is_written_and_back(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(SalunError, match="exists and is a file"):
        claim_output(tmp_path / "plain", "model", overwrite=True)
    (tmp_path / "d").mkdir()
    with pytest.raises(SalunError, match="is a folder, but a file is written"):
        claim_output(tmp_path / "d", "split", overwrite=True)
    with pytest.raises(SalunError, match="is a file, not a folder"):
        claim_output(tmp_path / "plain" / "below", "model", overwrite=False)


def test_inputs_and_the_working_directory_are_refused(tmp_path, synthetic, monkeypatch):
    m, _ = _model(tmp_path, synthetic)
    with pytest.raises(SalunError, match="it is the input"):
        claim_output(m, "model", overwrite=True, inputs=[m])
    with pytest.raises(SalunError, match="it contains the input"):
        claim_output(tmp_path, "model", overwrite=True, inputs=[m / "model.json"])
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.npz").write_bytes(b"")
    with pytest.raises(SalunError, match="contains the input npz:"):
        claim_output(data, "model", overwrite=True, inputs=[f"npz:{data / 'x.npz'}"])
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for out in (tmp_path / "a", work, "."):
        with pytest.raises(SalunError, match="contains the working directory"):
            claim_output(out, "model", overwrite=True)
    assert claim_output("sub", "model", overwrite=False)  # below the cwd is fine
    # a built-in dataset's name is not a path: `train --data digits --out digits` is fine
    assert claim_output("digits", "model", overwrite=False, inputs=["digits", "synthetic:9"])


def test_read_only_parent_is_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(SalunError, match="read-only for you"):
        claim_output(tmp_path / "x" / "m", "model", overwrite=False)


def test_unknown_kind_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="unknown output kind"):
        claim_output(tmp_path / "x", "nonsense", overwrite=False)


# ---------------------------------------------------------------- crash-safe writes


def test_replace_keeps_nothing_beside_the_folder(tmp_path, synthetic):
    m, _ = _model(tmp_path, synthetic, seed=0)
    _, new = _model(tmp_path, synthetic, seed=1)
    loaded, _ = load_model(m)
    assert torch.equal(loaded.head.weight, new.head.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_leftovers_of_dead_writers_are_cleaned_live_ones_kept(tmp_path, synthetic):
    m, _ = _model(tmp_path, synthetic)
    dead = tmp_path / ".m.salun-tmp.999999999.0badf00d"  # no such pid
    dead.mkdir()
    (dead / "model.json").write_text("half")
    live = tmp_path / f".m.salun-tmp.{os.getppid()}.0badf00d"  # a running process
    live.mkdir()
    aside = tmp_path / ".m.salun-old.0"
    aside.mkdir()  # m exists, so this aside copy is stale: renamed to carry its inode
    marked = aside.with_name(f".m.salun-old.{aside.stat().st_ino}")
    aside.rename(marked)
    # names without salun's marker are the user's, whatever they look like
    users = [tmp_path / n for n in (".m.old", ".m.999999999.0badf00d.tmp", ".m.k3j_x9ab.tmp")]
    users.append(tmp_path / ".m.salun-old.12345")  # the marker's number is not its inode
    for u in users:
        u.mkdir()
        os.utime(u, (0, time.time() - 7200))
    _model(tmp_path, synthetic, seed=3)
    assert not dead.exists() and not marked.exists()
    assert live.exists(), "another process's work in progress must not be touched"
    assert all(u.is_dir() for u in users), "salun deletes only what carries its marker"


def test_fallback_replace_killed_between_renames_is_recovered(tmp_path, synthetic, monkeypatch):
    m, old = _model(tmp_path, synthetic, seed=0)
    ino = m.stat().st_ino
    monkeypatch.setattr(sio, "_exchange", lambda a, b: False)

    def killed(a, b):  # the new folder moving in: the "kill" lands here
        raise KeyboardInterrupt

    monkeypatch.setattr(sio, "rename_noreplace", killed)
    with pytest.raises(KeyboardInterrupt):
        _model(tmp_path, synthetic, seed=1)
    monkeypatch.undo()
    aside = tmp_path / f".m.salun-old.{ino}"
    assert not m.exists() and (aside / "model.json").is_file()
    loaded, _ = load_model(m)  # the loader applies the recovery rule
    assert torch.equal(loaded.head.weight, old.head.weight)
    assert not aside.exists()
    # the fallback completes normally, leaving only the folder
    monkeypatch.setattr(sio, "_exchange", lambda a, b: False)
    _, new = _model(tmp_path, synthetic, seed=2)
    assert torch.equal(load_model(m)[0].head.weight, new.head.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("umask,fmode,dmode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_artifacts_honour_the_umask(tmp_path, synthetic, umask, fmode, dmode):
    old = os.umask(umask)
    try:
        m, _ = _model(tmp_path, synthetic)
        sio.atomic_write_json(tmp_path / "s.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(m.stat().st_mode) == dmode
    assert stat.S_IMODE((m / "model.safetensors").stat().st_mode) == fmode
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == fmode


def test_atomic_savefig_and_open(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    sio.atomic_savefig(fig, tmp_path / "p.png")
    plt.close(fig)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(RuntimeError):
        with sio.atomic_open(tmp_path / "q.txt", "w") as f:
            f.write("half")
            raise RuntimeError("killed")
    assert not (tmp_path / "q.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


# ---------------------------------------------------------------- integrity


def test_flipped_byte_in_weights_is_a_clear_error(tmp_path, synthetic):
    m, _ = _model(tmp_path, synthetic)
    w = m / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x01  # a weight's bit, not the header: safetensors itself would accept it
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 .* differs"):
        load_model(m)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d.pop("dataset"), "'dataset' is missing"),
        (lambda d: d["model"].pop("arch"), "'model.arch' is missing"),
        (lambda d: d["model"].update(depth=3), "unexpected key model.depth"),
        (lambda d: d["model"].update(num_classes="4"), "model.num_classes has the wrong type"),
        (lambda d: d["model"].update(mean=[0.1, 0.2]), "one number per input channel"),
        (lambda d: d.update(weights_sha256=5), "not a sha256"),
    ],
)
def test_model_json_schema_one_message_each(tmp_path, synthetic, edit, message):
    m, _ = _model(tmp_path, synthetic)
    meta = json.loads((m / "model.json").read_text())
    edit(meta)
    (m / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=message):
        load_model(m)


def test_model_json_holding_a_list(tmp_path, synthetic):
    m, _ = _model(tmp_path, synthetic)
    (m / "model.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="must hold a JSON object, not a list"):
        load_model(m)


def test_committed_folders_without_sha_still_load():
    from pathlib import Path

    from salun.artifacts import read_meta

    results = Path(__file__).parent.parent / "benchmarks" / "gen" / "results"
    meta = read_meta(results / "classifier")  # written before the sha256 was recorded
    assert "weights_sha256" not in meta and meta["dataset"] == "fashion-mnist"
    pytest.importorskip("diffusers")
    from salun.generation.ddpm.model import load_denoiser

    model, meta = load_denoiser(results / "original")
    assert meta["complete"] and model.num_classes == 10


def test_identical_masks_are_byte_identical(tmp_path):
    from salun.saliency import load_mask, save_mask

    mask = {"a.weight": torch.tensor([True, False, True]), "b.bias": torch.ones(4, dtype=bool)}
    meta = dict(model_fingerprint="f", keep=0.5, scope="global", split_hash="h", kind="saliency")
    blobs = set()
    for i in range(6):  # safetensors orders its metadata by a per-call random hash
        save_mask(tmp_path / f"m{i}.safetensors", mask, **meta)
        blobs.add((tmp_path / f"m{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    got, got_meta = load_mask(tmp_path / "m0.safetensors")
    assert torch.equal(got["a.weight"], mask["a.weight"]) and got_meta["keep"] == 0.5


def test_mask_with_non_bool_tensors_or_bad_metadata(tmp_path):
    from safetensors.torch import save_file

    from salun.saliency import MASK_FORMAT, load_mask

    save_file({"a": torch.ones(3)}, str(tmp_path / "f.safetensors"), {"format": MASK_FORMAT})
    with pytest.raises(ArtifactError, match="is not bool"):
        load_mask(tmp_path / "f.safetensors")
    bad = {"format": MASK_FORMAT, "keep": "{not json"}
    save_file({"a": torch.ones(3, dtype=bool)}, str(tmp_path / "g.safetensors"), bad)
    with pytest.raises(ArtifactError, match="metadata is corrupted"):
        load_mask(tmp_path / "g.safetensors")


# ---------------------------------------------------------------- splits


def _split_file(tmp_path, synthetic, **edits):
    from salun.data import make_split, save_split

    split = make_split(synthetic, "random", count=10, seed=0, data_spec="synthetic")
    save_split(split, tmp_path / "s.json")
    d = json.loads((tmp_path / "s.json").read_text())
    d.update(edits)
    return d


def _rehash(tmp_path, d):
    from salun.data.splits import Split

    s = Split(
        d["dataset"],
        d["scenario"],
        np.asarray(d["forget"]),
        np.asarray(d["retain"]),
        np.asarray(d["val"]),
        tuple(d["classes"]),
        d["seed"],
        d["n_train"],
        data_spec=d.get("data_spec"),
        fingerprint=d.get("fingerprint"),
    )
    d["hash"] = s.hash
    (tmp_path / "s.json").write_text(json.dumps(d))
    return tmp_path / "s.json"


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.update(forget=[-1] + d["forget"][1:]), "forget index -1 is out of range"),
        (lambda d: d.update(forget=d["forget"][:-1] + [240]), "forget index 240 is out of range"),
        (lambda d: d.update(retain=d["retain"] + [d["forget"][0]]), "overlap"),
        (lambda d: d.update(forget=[]), "the forget set is empty"),
        (lambda d: d.update(forget=[d["forget"][0]] * 2), "duplicate"),
    ],
)
def test_split_indices_are_checked(tmp_path, synthetic, change, message):
    from salun.data import load_split

    d = _split_file(tmp_path, synthetic)
    change(d)
    with pytest.raises(ArtifactError, match=message):
        load_split(_rehash(tmp_path, d))


def test_split_records_spec_and_fingerprint(tmp_path, synthetic):
    from salun.data import check_split_fits, load_split
    from salun.data.sources.synthetic import synthetic_bundle
    from salun.data.splits import data_fingerprint

    d = _split_file(tmp_path, synthetic)
    assert d["data_spec"] == "synthetic" and d["fingerprint"] == data_fingerprint(synthetic)
    split = load_split(tmp_path / "s.json")
    check_split_fits(split, synthetic)
    # same name, same size, other pixels: refused
    other = synthetic_bundle(n_train=240, n_test=80, num_classes=4, size=8, seed=1)
    assert other.name == synthetic.name and len(other.train) == len(synthetic.train)
    with pytest.raises(ArtifactError, match="has other content"):
        check_split_fits(split, other)


def test_old_split_files_keep_their_hash(tmp_path, synthetic):
    from salun.data import check_split_fits, load_split

    d = _split_file(tmp_path, synthetic)
    del d["data_spec"], d["fingerprint"]
    path = _rehash(tmp_path, d)
    split = load_split(path)
    assert split.fingerprint is None
    check_split_fits(split, synthetic)  # checked by name and size, as before


def test_canonical_spec():
    from salun.data.registry import canonical_spec

    here = os.path.abspath(__file__)
    assert canonical_spec(f"NPZ:{os.path.relpath(here)}") == f"npz:{here}"
    assert canonical_spec("digits") == "digits"
    assert canonical_spec("synthetic:100") == "synthetic:100"


def test_ddpm_folders_record_and_check_their_sha256(tmp_path):
    pytest.importorskip("diffusers")
    from salun.generation.ddpm.model import (
        DenoiserConfig,
        build_denoiser,
        load_denoiser,
        save_denoiser,
    )

    cfg = DenoiserConfig(
        image_size=8,
        in_channels=1,
        num_classes=3,
        block_out_channels=(8, 16),
        attention_levels=(),
        norm_num_groups=4,
    )
    model = build_denoiser(cfg, seed=0)
    save_denoiser(tmp_path / "d", model, {"dataset": "synthetic"}, ema=build_denoiser(cfg, 1))
    meta = json.loads((tmp_path / "d" / "model.json").read_text())
    assert set(meta["file_sha256"]) == {"model.safetensors", "ema.safetensors"}
    load_denoiser(tmp_path / "d", weights="ema")
    w = tmp_path / "d" / "ema.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x10
    w.write_bytes(bytes(data))
    load_denoiser(tmp_path / "d")  # the raw weights are intact
    with pytest.raises(ArtifactError, match="ema.safetensors is corrupted: its sha256"):
        load_denoiser(tmp_path / "d", weights="ema")
