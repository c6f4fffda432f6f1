"""Methods from the user's own modules (docs/plugins.md), and Ray's token-auth message.

The doc's example method is executed as written: its code block becomes a module on
``sys.path`` and ``salun bench --plugin`` runs it beside a built-in, both protocols.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from salun.bench.config import parse_config
from salun.bench.presets import preset_path
from salun.cli import main
from salun.errors import SalunError
from salun.methods import plugins, registry

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def clean_registry(plugin_registry_restored):
    """Every test leaves the registry, the plugin records and sys.modules as found."""


def doc_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/plugins.md has one python block: the example method"
    return blocks[0]


def write_module(folder: Path, name: str, code: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(code))
    return path


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


# ---- the doc's example, through `salun bench --plugin` -----------------------------------


def tiny_bench(tmp_path: Path, methods: dict, **extra) -> Path:
    """configs/ci.yaml's data, model and original; one scenario, both protocols."""
    ci = yaml.safe_load(preset_path("ci").read_text())
    raw = {
        "name": "plugin",
        "dataset": ci["dataset"],
        "arch": ci["arch"],
        "width": ci["width"],
        "original": ci["original"],
        "scenarios": ["random10"],
        "seeds": [0],
        "protocol": ["paper", "tuned"],
        "tune_seeds": [1],
        "methods": methods,
        **extra,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_doc_example_runs_in_the_bench_beside_a_builtin(plugin_dir, tmp_path, capsys):
    write_module(plugin_dir, "my_methods", doc_code())
    config = tiny_bench(
        tmp_path,
        {
            "ft": {"epochs": 1, "batch_size": 64, "lr": 0.01, "lr_grid": []},
            "ft_l2": {"epochs": 2, "batch_size": 64, "l2": 0.1, "lr_grid": [0.003, 0.01]},
        },
    )
    out = tmp_path / "out"
    argv = ["bench", "--config", str(config), "--out", str(out), "--plugin", "my_methods"]
    assert main([*argv, "--quiet", "--device", "cpu", "--threads", "1"]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    mine = [r for r in records if r["method"] == "ft_l2"]
    # paper + tuned finals, and the search's two grid values on the tuning seed
    assert {r["key"] for r in mine} == {
        "final.paper.random10.s0.ft_l2",
        "final.tuned.random10.s0.ft_l2",
        "tune.random10.s1.ft_l2.lr0.003",
        "tune.random10.s1.ft_l2.lr0.01",
    }
    assert all(r["status"] == "ok" for r in mine)
    assert all(r["plugin"] == {"module": "my_methods", "version": "0.1.0"} for r in mine)
    assert all(r["config"]["l2"] == 0.1 for r in mine)
    tuned = next(r for r in mine if r["key"].startswith("final.tuned"))
    assert tuned["lr_choice"]["grid"] == [0.003, 0.01]
    builtin = [r for r in records if r["method"] == "ft"]
    assert builtin and all("plugin" not in r for r in builtin)
    report = (out / "report.md").read_text()
    assert re.search(r"^\|\s*ft_l2\s*\|", report, flags=re.M), "ft_l2 has rows in report.md"
    assert "--plugin my_methods" in report  # the recorded command reruns it


def test_doc_example_is_fine_tuning_plus_the_l2_pull(plugin_dir):
    """Two full-batch SGD steps (no momentum, no weight decay), worked out here: step 1 is
    plain CE (θ = θ_o, the pull is 0), step 2 adds 2·l2·(θ1 − θ_o)."""
    from salun.data import ImageDataset
    from salun.methods import UnlearnContext, make_config, run_method

    write_module(plugin_dir, "my_methods", doc_code())
    plugins.load_plugin("my_methods")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 4, 4), generator=g, dtype=torch.uint8)
    data = ImageDataset(images, torch.randint(0, 3, (24,), generator=g))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    lr, l2 = 0.5, 0.3
    settings = {"epochs": 2, "batch_size": 24, "momentum": 0.0, "weight_decay": 0.0}
    cfg = make_config("ft_l2", {**settings, "lr": lr, "l2": l2})
    ctx = UnlearnContext(num_classes=3)
    got = run_method("ft_l2", model, data, data, cfg, ctx).model

    x, y = images.float() / 255.0, data.labels  # salun's batches: uint8 / 255
    theta0 = [p.detach().clone() for p in model.parameters()]

    def ce_grad(params):
        w, b = (p.clone().requires_grad_(True) for p in params)
        loss = torch.nn.functional.cross_entropy(x.flatten(1) @ w.T + b, y)
        return torch.autograd.grad(loss, (w, b))

    theta1 = [p - lr * g for p, g in zip(theta0, ce_grad(theta0))]
    theta2 = [p - lr * (g + 2 * l2 * (p - p0)) for p, g, p0 in zip(theta1, ce_grad(theta1), theta0)]
    for mine, want in zip(got.parameters(), theta2):
        torch.testing.assert_close(mine.detach(), want, rtol=1e-5, atol=1e-6)
    # and with l2 = 0 it is salun's own FT, step for step
    ft = run_method("ft", model, data, data, make_config("ft", {**settings, "lr": lr}), ctx)
    no_pull = make_config("ft_l2", {**settings, "lr": lr, "l2": 0.0})
    plain = run_method("ft_l2", model, data, data, no_pull, ctx)
    for a, b in zip(ft.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---- the command line ---------------------------------------------------------------------


GOOD = """
    from dataclasses import dataclass
    from salun.methods import SGDConfig, register

    @dataclass(frozen=True)
    class Cfg(SGDConfig):
        \"\"\"A do-nothing method.\"\"\"

    @register("{name}", Cfg, "returns the model unchanged")
    def run(model, forget, retain, cfg, ctx, mask=None):
        return model
"""


def test_methods_lists_a_plugin_with_its_module_and_version(plugin_dir, capsys):
    write_module(plugin_dir, "noop_methods", GOOD.format(name="noop"))
    assert main(["methods", "--plugin", "noop_methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (row,) = [line for line in lines if line.startswith("noop ")]
    assert row.endswith("(plugin noop_methods unknown)")  # no __version__, not installed
    assert not [line for line in lines if line.startswith("ft ") and "plugin" in line]


def test_unlearn_help_lists_the_plugin_methods_flags(plugin_dir, capsys):
    write_module(plugin_dir, "my_methods", doc_code())
    assert main(["unlearn", "--plugin", "my_methods", "--method", "ft_l2", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--l2 L2" in text and "weight of the squared distance" in text


PLAIN = GOOD.replace(
    '(SGDConfig):\n        """A do-nothing method."""', ":\n        epochs: int = 1"
)

BROKEN = {
    "import_fails": ("raise RuntimeError('boom')", "failed to import: RuntimeError: boom"),
    "registers_nothing": ("X = 1", "registers no method"),
    "takes_a_builtin_name": (
        GOOD.format(name="ft"),
        "method 'ft' is already registered (by salun.methods.ft)",
    ),
    "config_not_frozen": (  # a class of its own: a non-frozen SGDConfig subclass fails to import
        PLAIN.replace("@dataclass(frozen=True)", "@dataclass").format(name="bad_cfg"),
        "must be frozen",
    ),
    "config_not_a_dataclass": (  # (an undecorated SGDConfig subclass is still a dataclass)
        PLAIN.replace("@dataclass(frozen=True)\n    ", "").format(name="bad_cfg"),
        "must be a @dataclass(frozen=True) class",
    ),
    "config_needs_arguments": (
        GOOD.replace(
            '(SGDConfig):\n        """A do-nothing method."""', ":\n        need: int"
        ).format(name="bad_cfg"),
        "must build with its defaults",
    ),
    "signature": (
        GOOD.replace("forget, retain, cfg, ctx, mask=None", "cfg").format(name="bad_fn"),
        "must take (model, forget, retain, cfg, ctx, mask)",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("verb", ["methods", "bench"])
def test_a_broken_plugin_is_one_line_naming_it_before_any_work(
    case, verb, plugin_dir, tmp_path, capsys
):
    code, message = BROKEN[case]
    module = f"plugin_{case}"
    write_module(plugin_dir, module, textwrap.dedent(code))
    before = set(registry._REGISTRY)
    argv = ["methods", "--plugin", module]
    if verb == "bench":
        config = tiny_bench(tmp_path, {"ft": {"epochs": 1}})
        argv = ["bench", "--config", str(config), "--out", str(tmp_path / "out")]
        argv += ["--plugin", module, "--quiet"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"salun: error: plugin {module}"), err
    assert message in err[0]
    assert captured.out == ""
    assert set(registry._REGISTRY) == before  # nothing half-registered
    assert registry._REGISTRY["ft"].fn.__module__ == "salun.methods.ft"
    assert not (tmp_path / "out").exists()  # before any work


def test_a_missing_module_says_how_to_make_it_importable(capsys):
    assert main(["methods", "--plugin", "no_such_module_here"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("salun: error: plugin no_such_module_here: no module named")
    assert "PYTHONPATH" in err


def test_an_unknown_method_points_at_plugin(capsys):
    with pytest.raises(SalunError, match="--plugin MODULE"):
        registry.get_method("ft_l2_not_loaded")


# ---- the bench config's plugins: list -----------------------------------------------------


def test_config_plugins_list_loads_before_methods_and_keeps_old_hashes(plugin_dir, tmp_path):
    write_module(plugin_dir, "noop_methods", GOOD.format(name="noop"))
    raw = yaml.safe_load(tiny_bench(tmp_path, {"ft": {"epochs": 1}}).read_text())
    plain = parse_config(raw)
    with pytest.raises(SalunError, match="unknown method 'noop'.*--plugin"):
        parse_config({**raw, "methods": {"noop": {}}})
    cfg = parse_config({**raw, "plugins": ["noop_methods"], "methods": {"noop": {}}})
    assert cfg.plugins == ("noop_methods",)
    assert [m.method for m in cfg.methods] == ["noop"]
    assert plugins.plugin_record("noop") == {"module": "noop_methods", "version": "unknown"}
    # a config without plugins hashes as before the key existed
    assert parse_config({**raw, "plugins": []}).hash() == plain.hash()
    assert cfg.hash() != parse_config({**raw, "methods": {"noop": {}}}).hash()
    with pytest.raises(SalunError, match="plugins must be a list of module names"):
        parse_config({**raw, "plugins": [3]})


def test_bench_json_keeps_the_plugins_without_importing_them(plugin_dir, tmp_path):
    """A report of a plugin's benchmark folder needs no plugin code."""
    from dataclasses import asdict

    from salun.bench.config import config_from_dict

    write_module(plugin_dir, "noop_methods", GOOD.format(name="noop"))
    raw = yaml.safe_load(tiny_bench(tmp_path, {"ft": {"epochs": 1}}).read_text())
    cfg = parse_config({**raw, "plugins": ["noop_methods"], "methods": {"noop": {}}})
    stored = json.loads(json.dumps(asdict(cfg)))
    del sys.modules["noop_methods"]
    back = config_from_dict(stored)
    assert back == cfg and back.hash() == cfg.hash()
    assert "noop_methods" not in sys.modules


# ---- entry points and versions ------------------------------------------------------------


def test_entry_point_plugin_loads_with_its_distribution_version(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "acme_unlearn").mkdir(parents=True)
    (site / "acme_unlearn" / "__init__.py").write_text("")
    write_module(site / "acme_unlearn", "methods", GOOD.format(name="acme"))
    dist = site / "acme_unlearn-2.3.4.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-unlearn\nVersion: 2.3.4\n")
    (dist / "top_level.txt").write_text("acme_unlearn\n")
    (dist / "entry_points.txt").write_text("[salun.methods]\nacme = acme_unlearn.methods\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_DONE", False)
    assert "acme" in registry.list_methods()  # loaded with the built-ins, no --plugin
    assert plugins.plugin_record("acme") == {
        "module": "acme_unlearn.methods",
        "version": "2.3.4",
    }
    assert plugins.plugin_record("ft") is None


def test_a_broken_entry_point_names_it(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "broken_pkg-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[salun.methods]\nbroken = broken_pkg_missing\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_DONE", False)
    with pytest.raises(SalunError, match=r"entry point 'broken' \(salun.methods\): plugin "):
        registry.list_methods()


def test_version_prefers_the_packages_own_version(plugin_dir):
    write_module(
        plugin_dir, "versioned", '__version__ = "9.9"\n' + textwrap.dedent(GOOD.format(name="v"))
    )
    assert plugins.load_plugin("versioned").record() == {"module": "versioned", "version": "9.9"}


# ---- Ray: workers import the plugins; the token message -----------------------------------


def test_ray_worker_entry_imports_the_plugins_before_the_task(tmp_path, monkeypatch):
    """What a fresh Ray worker does: the module's folder is not on its sys.path yet."""
    from salun.bench import executors

    folder = tmp_path / "elsewhere"
    folder.mkdir()
    write_module(folder, "worker_methods", GOOD.format(name="worker_noop"))
    assert str(folder) not in sys.path
    seen = {}
    monkeypatch.setattr(
        executors,
        "execute",
        lambda task: seen.setdefault("has", "worker_noop" in registry._REGISTRY),
    )
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored afterwards
    assert executors.execute_with_plugins("task", ["worker_methods"], [str(folder)]) is True
    assert seen == {"has": True}


def test_ray_executor_passes_the_loaded_plugins_with_each_task(plugin_dir, monkeypatch):
    from salun.bench import executors

    write_module(plugin_dir, "noop_methods", GOOD.format(name="noop"))
    plugins.load_plugin("noop_methods")
    sent = []

    class FakeRemote:
        def remote(self, task, modules, folders):
            sent.append((task, modules, folders))
            return task

    ex = executors.RayExecutor.__new__(executors.RayExecutor)
    ex.files = executors.SHARED  # the shared-folder path: the task goes as it is
    ex._remote = FakeRemote()
    ex._ray = type(
        "R", (), {"wait": staticmethod(lambda refs, num_returns, timeout=None: (refs[:1], []))}
    )
    ex._get = lambda ref, task: {"ok": ref}
    ex.run(["t1"], lambda task, result: None)
    assert sent == [("t1", ["noop_methods"], [str(plugin_dir)])]


@pytest.fixture
def refused_ray(monkeypatch, tmp_path):
    """ray.init raising what Ray raises for a cluster that refused us (no real cluster)."""
    ray = pytest.importorskip("ray")
    from salun.bench import executors

    monkeypatch.setattr(executors, "probe_address", lambda address: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ray/auth_token
    return ray


def test_refused_connection_says_the_cluster_may_want_a_token(refused_ray, monkeypatch):
    from salun.bench.executors import RayExecutor

    def init(address=None, **kwargs):  # Ray's worker.py, when the GCS will not talk to us
        raise ConnectionError(f"Failed to connect to Ray cluster at {address}")

    monkeypatch.setattr(refused_ray, "init", init)
    with pytest.raises(SalunError) as e:
        RayExecutor("10.0.0.7:6379")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(
        "cannot connect to the Ray cluster at 10.0.0.7:6379: Failed to connect to Ray cluster"
    )
    assert "may want a token" in msg and "no token is set here" in msg
    for how in ("RAY_AUTH_TOKEN environment variable", "~/.ray/auth_token", "ray get-auth-token"):
        assert how in msg


def test_a_token_that_is_set_is_named_in_the_message(refused_ray, monkeypatch, capsys, tmp_path):
    def init(address=None, **kwargs):
        raise refused_ray.exceptions.AuthenticationError(
            "Token authentication is enabled but the authentication token is invalid"
        )

    monkeypatch.setattr(refused_ray, "init", init)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "wrong")
    out = tmp_path / "out"
    argv = ["bench", "--preset", "ci", "--out", str(out), "--executor", "ray"]
    assert main([*argv, "--ray-address", "10.0.0.7:6379", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("salun: error: the Ray cluster at 10.0.0.7:6379 refused the connection")
    assert "token is invalid" in err
    assert "RAY_AUTH_TOKEN is set here: check that it is the cluster's token" in err
    assert not out.exists()  # nothing made for a cluster that refused us
