"""TrainConfig: defaults, self-validation, YAML round trip, CLI-flag overrides, shipped configs."""

from pathlib import Path

import pytest
import yaml

import vitune
from vitune.config import TrainConfig
from vitune.errors import UserError

CONFIGS = Path(vitune.__file__).parent / "configs"
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
