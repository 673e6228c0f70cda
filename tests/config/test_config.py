"""TrainConfig: defaults, self-validation, YAML round trip, CLI-flag overrides, shipped configs."""

from pathlib import Path

import pytest
import yaml

import vitune
import vitune.config
from vitune.config import TrainConfig
from vitune.errors import UserError

CONFIGS = Path(vitune.__file__).parent / "config" / "presets"
BASE = {"data": "data/ds", "model": "vit-base-p16-224", "out": "runs/x"}


def test_defaults_are_the_seed_recipe():
    config = TrainConfig(**BASE)
    assert (config.epochs, config.lr, config.warmup, config.scheduler) == (3, 2e-4, 0.25, "cosine")
    assert (config.precision, config.seed, config.resume, config.augment_hflip) == ("auto", 0, False, False)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"precision": "fp64"}, "--precision 'fp64' is not supported: use one of auto, fp32, bf16, fp16"),
        ({"warmup": 1.5}, "--warmup 1.5 is a fraction"),
        ({"lr": 0}, "--lr 0 must be a positive number"),
        ({"batch_size": -1}, "--batch-size -1 must be a positive number"),
        ({"regression_loss": "l1"}, "use one of mse, bce"),
        ({"augment": "heavy"}, "use one of none, light"),
        ({"deepspeed": "/nope/ds.json"}, "does not exist"),
        ({"out": ""}, "missing --out"),
    ],
)
def test_invalid_settings_say_what_to_do(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        TrainConfig(**{**BASE, **override})


def test_yaml_round_trip_is_identical(tmp_path):
    config = TrainConfig(**BASE, epochs=5, lr=1e-3, augment="light", pos_weight="auto", max_steps=7)
    path = tmp_path / "config.yaml"
    config.save(path)
    again = TrainConfig.from_yaml(path)
    assert again == config
    assert again.to_yaml() == path.read_text()
    assert list(yaml.safe_load(path.read_text())) == [f for f in config.to_dict()]


def test_saved_config_never_asks_to_resume(tmp_path):
    TrainConfig(**BASE, resume=True).save(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml").resume is False


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    TrainConfig(**BASE, epochs=5).save(path)
    config = TrainConfig.from_yaml(path, epochs=2, lr=None, out="runs/y")
    assert (config.epochs, config.lr, config.out) == (2, 2e-4, "runs/y")


def test_unknown_key_and_missing_fields_are_user_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "learning_rate": 1}))
    with pytest.raises(UserError, match="unknown training setting\\(s\\) learning_rate"):
        TrainConfig.from_yaml(path)
    with pytest.raises(UserError, match="missing --data, --out"):
        TrainConfig.from_dict({"model": "m"})
    with pytest.raises(UserError, match="does not exist"):
        TrainConfig.from_yaml(tmp_path / "absent.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = TrainConfig.from_yaml(path)
    assert config.model and config.data and config.out
    assert TrainConfig.from_dict(yaml.safe_load(config.to_yaml())) == config


def test_shipped_configs_exist():
    assert {"chestxray14.yaml", "cifar100.yaml", "regression.yaml"} <= {p.name for p in CONFIGS.glob("*.yaml")}
    assert TrainConfig.from_yaml(CONFIGS / "chestxray14.yaml").augment_hflip is False


def test_saved_config_holds_absolute_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "ds").mkdir(parents=True)
    TrainConfig(**BASE).save(tmp_path / "c.yaml")
    saved = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert saved["data"] == str(tmp_path / "data" / "ds")
    assert saved["model"] == "vit-base-p16-224"  # an alias, not a local path: kept as typed
    assert saved["out"] == "runs/x"  # not created yet: kept as typed


def test_yaml_numbers_in_exponent_notation_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: d\nmodel: m\nout: o\nlr: 2e-4\nepochs: '5'\nbatch_size: 16\n")
    config = TrainConfig.from_yaml(path)
    assert (config.lr, config.epochs, config.batch_size) == (2e-4, 5.0, 16)
    path.write_text("data: d\nmodel: m\nout: o\nlr: fast\n")
    with pytest.raises(UserError, match="--lr 'fast' must be a positive number"):
        TrainConfig.from_yaml(path)


ALL_CONFIGS = [TrainConfig, *(getattr(vitune.config, name) for name in (
    "PrepareConfig", "ShowConfig", "HeadsConfig", "EvaluateConfig", "PredictConfig", "ExportConfig", "ReportConfig",
    "DemoConfig", "ExplainConfig"))]


@pytest.mark.parametrize("config_cls", ALL_CONFIGS, ids=lambda cls: cls.__name__)
def test_every_field_has_its_help_in_the_docstring(config_cls):
    from dataclasses import fields

    helps = config_cls.field_help()
    assert sorted(helps) == sorted(f.name for f in fields(config_cls))
    assert all(len(text) > 5 for text in helps.values())


def test_cli_help_shows_the_dataclass_defaults(monkeypatch, capsys):
    from tiny_run import run_cli

    from vitune.config import EvaluateConfig, HeadsConfig

    code, out, _ = run_cli(monkeypatch, capsys, "train", "--help")
    assert code == 0 and "Training epochs. [3]" in out and "Peak learning rate. [0.0002]" in out
    assert "--resume / --no-resume" in out and "--config" in out
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", "--help")
    assert code == 0 and f"[default: {EvaluateConfig.default('bootstrap')}]" in " ".join(out.split()) and "RUN_DIR" in out
    code, out, _ = run_cli(monkeypatch, capsys, "heads", "--help")
    assert "--C" in out and HeadsConfig.default("heads") in out.replace("\n", "").replace(" ", "")


def test_cli_flags_reach_the_config(monkeypatch, tmp_path):
    """Each command receives its config built from the flags (defaults from the dataclass)."""
    from typer.testing import CliRunner

    import vitune.cli as cli
    from vitune.config import EvaluateConfig, PredictConfig

    seen = []
    monkeypatch.setattr("vitune.evaluation.evaluate.evaluate", lambda config: seen.append(config) or _Stop())
    monkeypatch.setattr("vitune.inference.predict.predict", lambda config: seen.append(config) or _Stop())
    runner = CliRunner()
    runner.invoke(cli.app, ["evaluate", str(tmp_path), "--split", "validation", "--bootstrap", "7"])
    runner.invoke(cli.app, ["predict", str(tmp_path), "a.png", "b.png", "--head", "svm"])
    assert seen[0] == EvaluateConfig(run=str(tmp_path), split="validation", bootstrap=7)
    assert seen[1] == PredictConfig(run=str(tmp_path), inputs=["a.png", "b.png"], head="svm")


class _Stop:
    """A result whose use ends the command (the test only looks at the config)."""

    def __getattr__(self, name):
        raise SystemExit(0)


def test_train_flags_override_the_config_file(tmp_path):
    TrainConfig(**BASE, epochs=5, lr=1e-3).save(tmp_path / "c.yaml")
    flags = {name: None for name in TrainConfig.field_help()}
    config = TrainConfig.from_cli({**flags, "config": tmp_path / "c.yaml", "epochs": 2.0})
    assert (config.epochs, config.lr) == (2.0, 1e-3)
    assert TrainConfig.from_cli({**flags, **BASE, "config": None}).epochs == TrainConfig.default("epochs")


@pytest.mark.parametrize("config_cls, values, message", [
    ("EvaluateConfig", {"run": "r", "batch_size": 0}, "--batch-size must be at least 1 (got 0)"),
    ("EvaluateConfig", {"run": "r", "bootstrap": -1}, "--bootstrap must be at least 0"),
    ("PredictConfig", {"run": "r", "inputs": ["x"], "head": "knn"}, "unknown --head 'knn'"),
    ("ExportConfig", {"run": "r", "onnx": "m.onnx", "tolerance": 0}, "--tolerance 0 must be a positive number"),
    ("HeadsConfig", {"model": "m", "data": "d", "out": "o", "pooling": "max"}, "unknown pooling 'max'"),
    ("HeadsConfig", {"model": "not-a-run", "data": "d"}, "not-a-run is not a RUN_DIR: give --out DIR"),
    ("ShowConfig", {"dataset_dir": "d", "rows": 0}, "--rows must be at least 1"),
    ("ExplainConfig", {"run": "r", "inputs": ["x"], "out": "o", "top": 0}, "--top must be at least 1 (got 0)"),
    ("ExplainConfig", {"run": "r", "inputs": ["x"], "out": "o", "labels": "a", "top": 2}, "--labels and --top both"),
    ("ExplainConfig", {"run": "r", "inputs": ["x"], "out": "o", "labels": " , "}, "--labels is empty"),
    ("ExplainConfig", {"run": "r", "inputs": ["x"], "out": "o", "method": "lime"}, "--method 'lime' is not supported"),
    ("PredictConfig", {"run": "r", "inputs": ["x"], "head": "svm", "explain": "e"}, "not the svm head"),
])
def test_command_configs_check_themselves(config_cls, values, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        getattr(vitune.config, config_cls)(**values)
