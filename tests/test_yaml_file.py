"""Every config reader reports a missing file, broken YAML and unsafe tags in one message."""

from __future__ import annotations

import re

import pytest

from salun.audit.config import load_audit_config
from salun.bench.config import load_config
from salun.errors import SalunError
from salun.generation.ddpm.cli import load_preset
from salun.generation.sd.recipe import load_recipe
from salun.yaml_file import read_yaml

READERS = {
    "bench": (load_config, "config file {} does not exist"),
    "audit": (load_audit_config, "audit config {} does not exist"),
    "gen preset": (load_preset, "config file {} does not exist"),
    "sd recipe": (load_recipe, "recipe {} not found"),
}


@pytest.mark.parametrize("name", READERS)
def test_missing_file_names_the_file_and_what_it_was_meant_to_be(tmp_path, name):
    reader, message = READERS[name]
    path = tmp_path / "absent.yaml"
    with pytest.raises(SalunError, match=re.escape(message.format(path))):
        reader(path)


@pytest.mark.parametrize("name", READERS)
def test_broken_yaml_is_one_clear_error(tmp_path, name):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SalunError, match="is not valid YAML"):
        READERS[name][0](path)


@pytest.mark.parametrize("name", READERS)
def test_a_binary_file_is_one_clear_error(tmp_path, name):
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(SalunError, match="is not UTF-8 text"):
        READERS[name][0](path)


@pytest.mark.parametrize("name", READERS)
def test_python_object_tags_are_refused_not_constructed(tmp_path, name):
    # safe_load only: a config must never be able to run code on load
    path = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SalunError, match="is not valid YAML"):
        READERS[name][0](path)
    assert not marker.exists()


def test_read_yaml_returns_the_parsed_value_and_none_for_an_empty_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb: [x, 2.5]\n")
    assert read_yaml(path, "unused") == {"a": 1, "b": ["x", 2.5]}
    path.write_text("")
    assert read_yaml(path, "unused") is None
