"""The configs: defaults, self-validation, YAML round trip, CLI-flag overrides, shipped configs, no file read
on construction."""

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
        ({"out": ""}, "missing --out"),
        ({"fsdp": "hybrid_shard"}, "--fsdp 'hybrid_shard' is not supported: use one of full_shard, shard_grad_op"),
        ({"fsdp": "full_shard", "deepspeed": "zero2"}, "--deepspeed and --fsdp are two ways to shard a run: choose one"),
        ({"deepspeed": "zero3", "ema": 0.999}, "--ema keeps a full copy of the weights on each process, which "
                                               "--deepspeed shards: drop --ema or --deepspeed"),
        ({"fsdp": "shard_grad_op", "ema": 0.999}, "which --fsdp shards: drop --ema or --fsdp"),
        ({"fsdp": "full_shard", "lora": 8}, "--lora trains adapters small enough to keep whole on each process, "
                                            "which --fsdp shards"),
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


def test_deepspeed_presets_are_shipped_and_a_path_is_taken_as_given():
    from vitune.config.train import DEEPSPEED_PRESETS, deepspeed_config_path

    assert [deepspeed_config_path(name) for name in DEEPSPEED_PRESETS] == [CONFIGS / "ds_zero2.json",
                                                                          CONFIGS / "ds_zero3.json"]
    assert all(deepspeed_config_path(name).is_file() for name in DEEPSPEED_PRESETS)
    assert deepspeed_config_path("my/ds.json") == Path("my/ds.json")


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
    "PretrainConfig", "PrepareConfig", "ShowConfig", "HeadsConfig", "EvaluateConfig", "PredictConfig", "ExportConfig", "ReportConfig",
    "DemoConfig", "ExplainConfig"))]


@pytest.mark.parametrize("config_cls", ALL_CONFIGS, ids=lambda cls: cls.__name__)
def test_every_field_has_its_help_in_the_docstring(config_cls):
    from dataclasses import fields

    import docstring_parser

    own = {param.arg_name for param in docstring_parser.parse(config_cls.__doc__).params}
    helps = {f.name: config_cls.field_help(f.name) for f in fields(config_cls)}
    assert all(text is not None and len(text) > 5 for text in helps.values()), helps
    assert own <= set(helps)  # the docstring documents no setting the config lacks


def test_cli_help_shows_the_dataclass_defaults(monkeypatch, capsys):
    from tiny_run import run_cli

    from vitune.config import EvaluateConfig

    monkeypatch.setenv("COLUMNS", "200")  # one line per flag: the phrases below are not wrapped
    code, out, _ = run_cli(monkeypatch, capsys, "train", "--help")
    assert code == 0 and "Training epochs. (default: 3)" in out and "Peak learning rate. (default: 0.0002)" in out
    assert "--resume, --no-resume" in out and "--config FILE.yaml" in out and "--print-config" in out
    assert "--batch-size INT" in out and "--report-to A,B" in out
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", "--help")
    assert code == 0 and f"(default: {EvaluateConfig.default('bootstrap')})" in out and "RUN_DIR" in out
    code, out, _ = run_cli(monkeypatch, capsys, "heads", "--help")
    assert "--C " in out and "(default: svm,logreg,mlp,ensemble)" in out
    code, out, _ = run_cli(monkeypatch, capsys, "data", "prepare", "--help")
    assert "SOURCE" in out and "--format STR" in out and "--no-finding-as-label" in out and "--label-column A,B" in out


def test_cli_flags_reach_the_config(monkeypatch, capsys, tmp_path):
    """Each command receives its config built from the flags (defaults from the dataclass)."""
    from tiny_run import run_cli

    from vitune.config import EvaluateConfig, PredictConfig

    seen = []
    monkeypatch.setattr("vitune.evaluation.evaluate.evaluate", lambda config: seen.append(config) or _Stop())
    monkeypatch.setattr("vitune.inference.predict.predict", lambda config: seen.append(config) or _Stop())
    run_cli(monkeypatch, capsys, "evaluate", tmp_path, "--split", "validation", "--bootstrap", "7")
    run_cli(monkeypatch, capsys, "predict", tmp_path, "a.png", "b.png", "--head", "svm")
    assert seen[0] == EvaluateConfig(run=str(tmp_path), split="validation", bootstrap=7)
    assert seen[1] == PredictConfig(run=str(tmp_path), inputs=["a.png", "b.png"], head="svm")


class _Stop:
    """A result whose use ends the command (the test only looks at the config)."""

    def __getattr__(self, name):
        raise SystemExit(0)


def test_train_flags_override_the_config_file(tmp_path):
    TrainConfig(**BASE, epochs=5, lr=1e-3).save(tmp_path / "c.yaml")
    config = TrainConfig.from_flags({"epochs": 2.0}, tmp_path / "c.yaml")
    assert (config.epochs, config.lr) == (2.0, 1e-3)
    assert TrainConfig.from_flags(BASE).epochs == TrainConfig.default("epochs")
    assert TrainConfig.from_flags({"max_steps": None}, tmp_path / "c.yaml").max_steps is None  # a flag given as None


def test_flags_over_a_recipe_over_the_defaults():
    strong = TrainConfig.from_flags({**BASE, "recipe": "strong", "lr": 1e-3})
    assert (strong.lr, strong.epochs, strong.layer_decay) == (1e-3, 75, 0.55)


@pytest.mark.parametrize("config_cls", ALL_CONFIGS + [vitune.config.TuneConfig, vitune.config.ServeConfig],
                         ids=lambda cls: cls.__name__)
def test_constructing_a_config_reads_no_file(config_cls, tmp_path, monkeypatch):
    """Paths are checked where the command runs, not when a config is built (a notebook, --print-config)."""
    import builtins
    import os
    from dataclasses import fields

    values = {"data": "d", "model": "m", "out": "o", "run": "r", "inputs": ["x.png"], "source": str(tmp_path),
              "dataset_dir": "d", "onnx": "m.onnx", "deepspeed": "ds.json", "space": "space.yaml", "base": "b.yaml",
              "heads": "svm,mlp", "views": "PA", "label_column": "a,b", "report_to": "tensorboard", "labels": "A"}
    names = {f.name for f in fields(config_cls)}

    def no_file(*args, **kwargs):
        raise AssertionError(f"a file was touched: {args}")

    for function in ("stat", "lstat", "listdir", "scandir", "access"):
        monkeypatch.setattr(os, function, no_file)
    monkeypatch.setattr(builtins, "open", no_file)
    config = config_cls(**{name: value for name, value in values.items() if name in names})
    monkeypatch.undo()
    assert config.to_dict()


@pytest.mark.parametrize("config_cls, values, message", [
    ("EvaluateConfig", {"run": "r", "batch_size": 0}, "--batch-size must be at least 1 (got 0)"),
    ("EvaluateConfig", {"run": "r", "bootstrap": -1}, "--bootstrap must be at least 0"),
    ("PredictConfig", {"run": "r", "inputs": ["x"], "head": "knn"}, "unknown --head 'knn'"),
    ("ExportConfig", {"run": "r", "onnx": "m.onnx", "tolerance": 0}, "--tolerance 0 must be a positive number"),
    ("HeadsConfig", {"model": "m", "data": "d", "out": "o", "pooling": "max"}, "unknown pooling 'max'"),
    ("HeadsConfig", {"model": "m", "data": "d", "heads": ", "}, "unknown head(s) (none given)"),
    ("PrepareConfig", {"source": "s", "out": "o", "views": " , "}, "--views ' , ' names no view"),
    ("PrepareConfig", {"source": "s", "out": "o", "label_column": "a,a"}, "names a column twice or none"),
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


def test_evaluate_by_and_age_bins_are_checked():
    from vitune.config import EvaluateConfig

    assert EvaluateConfig(run="r", by="sex,age", age_bins="18,65").age_bins == [18, 65]
    assert EvaluateConfig(run="r").age_bins == [40, 60, 80]
    for bad in ("60,40", "x", "0,40"):
        with pytest.raises(UserError, match="--age-bins"):
            EvaluateConfig(run="r", age_bins=bad)
