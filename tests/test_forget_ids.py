"""Forgetting the examples a user names (issue #29): ids files, checks, split files, CLI, API."""

import json
import re

import numpy as np
import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from salun.cli import main
from salun.data import ImageDataset, load_split, make_split, save_split
from salun.data.forget_ids import check_forget_ids, read_forget_ids, split_by_ids
from salun.data.sources.synthetic import synthetic_bundle
from salun.errors import SalunError


def test_a_text_file_gives_one_id_per_line_with_comments_and_blanks_skipped(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("# deletion request 2026-12-04\n12\n\n  7  # user 44\n1003\n")
    assert read_forget_ids(f) == [12, 7, 1003]


def test_a_json_list_is_read_as_it_is(tmp_path):
    f = tmp_path / "ids.json"
    f.write_text("[5, 3, 9]")
    assert read_forget_ids(f) == [5, 3, 9]


@pytest.mark.parametrize(
    "text, wanted",
    [
        ("3\nfour\n", "line 2: 'four' is not an integer index"),
        ("3\n2.5\n", "line 2: '2.5' is not an integer index"),
        ("[1, 2.0]", "entry 1 is 2.0, not an integer index"),
        ('[1, "2"]', "entry 1 is '2', not an integer index"),
        ("[1, true]", "entry 1 is True, not an integer index"),
        ('{"ids": [1]}', "not a JSON list of ids"),
        ("[1, 2", "not a JSON list of ids"),
    ],
)
def test_a_file_that_is_not_a_list_of_integers_is_one_clear_error(tmp_path, text, wanted):
    f = tmp_path / "ids"
    f.write_text(text)
    with pytest.raises(SalunError, match=re.escape(wanted)):
        read_forget_ids(f)


@pytest.mark.parametrize(
    "ids, wanted",
    [
        ([], "the request is empty"),
        ([1, 5, 1], "id 1 is listed 2 times"),
        ([3, 10], r"id 10 is out of range: the training set has 10 examples \(0..9\)"),
        ([-1], "id -1 is out of range"),
        ([2**70], f"id {2**70} is out of range"),
        ([1, 2.0], "2.0 is not an integer index"),
        ([True], "True is not an integer index"),
        (list(range(10)), "every example is named"),
        ("12", "must be a list of integer indices"),
    ],
)
def test_every_bad_request_is_its_own_error(ids, wanted):
    with pytest.raises(SalunError, match=wanted):
        check_forget_ids(ids, 10)


def test_good_ids_come_back_sorted_int64_from_lists_and_arrays():
    assert check_forget_ids([7, 2, 5], 10).tolist() == [2, 5, 7]
    out = check_forget_ids(np.array([4, 0], dtype=np.int32), 10)
    assert out.dtype == np.int64 and out.tolist() == [0, 4]


def test_an_ids_split_forgets_exactly_the_named_examples_and_keeps_its_hash(tmp_path):
    bundle = synthetic_bundle()
    named = [599, 3, 42, 100]
    split = make_split(bundle, "ids", ids=named)
    assert split.scenario == "ids" and split.classes == ()
    assert split.forget.tolist() == sorted(named)
    # D_r is every other training example: the complement, built here by a loop
    assert split.retain.tolist() == [i for i in range(600) if i not in named]
    path = tmp_path / "split.json"
    save_split(split, path)
    back = load_split(path)  # the hash and the index checks hold for the new scenario
    assert back.hash == split.hash and back.forget.tolist() == sorted(named)
    assert "named ids" in back.describe()


def test_validation_is_drawn_only_from_the_examples_not_named():
    bundle = synthetic_bundle()
    named = list(range(0, 600, 3))
    split = make_split(bundle, "ids", ids=named, val_fraction=0.2, seed=1)
    assert len(np.intersect1d(split.val, named)) == 0
    assert len(split.val) == 80  # 20 % of the 100 unnamed examples of each of 4 classes
    assert sorted([*split.forget, *split.retain, *split.val]) == list(range(600))


def test_make_split_refuses_ids_with_another_scenario_and_ids_without_them():
    bundle = synthetic_bundle()
    with pytest.raises(SalunError, match="ids= goes with scenario 'ids'"):
        make_split(bundle, "random", fraction=0.1, ids=[1])
    with pytest.raises(SalunError, match="ids= goes with scenario 'ids'"):
        make_split(bundle, "ids")
    with pytest.raises(SalunError, match="takes no fraction"):
        make_split(bundle, "ids", ids=[1], fraction=0.1)


def test_split_by_ids_views_a_torch_dataset_and_an_image_dataset():
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1) / 10
    y = torch.arange(6) % 2
    forget, retain = split_by_ids(TensorDataset(x, y), [4, 1])
    assert isinstance(forget, Subset) and forget.indices == [1, 4]
    assert retain.indices == [0, 2, 3, 5]
    img = ImageDataset((x * 255).round().to(torch.uint8), y)
    f2, r2 = split_by_ids(img, [4, 1])
    assert torch.equal(f2.images, img.images[[1, 4]]) and torch.equal(r2.labels, y[[0, 2, 3, 5]])
    with pytest.raises(SalunError, match="id 1 is listed 2 times"):
        split_by_ids(img, [1, 1])


def test_salun_split_forget_ids_writes_the_named_split(tmp_path, capsys):
    ids = tmp_path / "request.txt"
    ids.write_text("17\n5\n230\n")
    out = tmp_path / "split.json"
    assert main(["split", "--data", "synthetic", "--forget-ids", str(ids), "--out", str(out)]) == 0
    split = load_split(out)
    assert split.forget.tolist() == [5, 17, 230] and split.scenario == "ids"
    assert json.loads(out.read_text())["hash"] == split.hash
    assert "forget 3, retain 597" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, extra, wanted",
    [
        ("5\n5\n", [], "id 5 is listed 2 times"),
        ("600\n", [], "id 600 is out of range: the training set has 600 examples"),
        ("# nothing\n", [], "the request is empty"),
        ("x\n", [], "line 1: 'x' is not an integer index"),
        ("5\n", ["--scenario", "random"], "drop --scenario random"),
    ],
)
def test_salun_split_bad_requests_are_one_line_exit_2_and_write_nothing(
    tmp_path, capsys, content, extra, wanted
):
    ids = tmp_path / "request.txt"
    ids.write_text(content)
    out = tmp_path / "split.json"
    argv = ["split", "--data", "synthetic", "--forget-ids", str(ids), "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("salun: error: ") and err.count("\n") == 1 and wanted in err
    assert not out.exists()


def test_salun_split_without_scenario_or_ids_says_what_it_needs(tmp_path, capsys):
    assert main(["split", "--data", "synthetic", "--out", str(tmp_path / "s.json")]) == 2
    assert "needs --scenario random|class, or --forget-ids FILE" in capsys.readouterr().err
