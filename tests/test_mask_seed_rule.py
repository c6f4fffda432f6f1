"""One seed rule for the saliency mask (issue #29): `salun mask` then `salun unlearn --mask`
gives the weights `salun unlearn` alone gives with the same seed."""

import pytest
from safetensors.torch import load_file

from salun.cli import main
from salun.saliency import load_mask


@pytest.mark.parametrize("seed", [0, 3])
def test_two_step_and_one_step_salun_give_bit_identical_weights(tmp_path, seed):
    model, split = tmp_path / "m", tmp_path / "s.json"
    assert main(["split", "--data", "synthetic", "--scenario", "random", "--fraction", "0.2",
                 "--out", str(split)]) == 0  # fmt: skip
    assert main(["train", "--data", "synthetic", "--arch", "mlp", "--epochs", "1", "--quiet",
                 "--split", str(split), "--out", str(model)]) == 0  # fmt: skip
    mask = tmp_path / "mask.safetensors"
    # a mask batch smaller than D_f (120 samples), so the batch order matters to the mask
    assert main(["mask", "--model", str(model), "--forget", str(split), "--quiet",
                 "--seed", str(seed), "--batch-size", "32", "--keep", "0.3",
                 "--out", str(mask)]) == 0  # fmt: skip
    run = ["unlearn", "--model", str(model), "--forget", str(split), "--method", "salun",
           "--epochs", "1", "--seed", str(seed), "--keep", "0.3", "--mask-batch-size", "32",
           "--no-eval", "--quiet"]  # fmt: skip
    assert main([*run, "--mask", str(mask), "--out", str(tmp_path / "two")]) == 0
    assert main([*run, "--out", str(tmp_path / "one")]) == 0
    two = load_file(tmp_path / "two" / "model.safetensors")
    one = load_file(tmp_path / "one" / "model.safetensors")
    assert two.keys() == one.keys()
    assert all(two[k].equal(one[k]) for k in one)
    # and the mask itself is the one salun unlearn builds: not trivially all-or-nothing
    m, _ = load_mask(mask)
    kept = sum(int(v.sum()) for v in m.values()) / sum(v.numel() for v in m.values())
    assert 0.25 < kept < 0.35
