"""The package face: ``from vitune import ...`` gives what a notebook needs, and ``import vitune`` stays light."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import subprocess
import sys

import pytest

import vitune

PUBLIC_NAMES = [
    "build_trainer", "train", "tune", "prepare", "fit_heads", "evaluate", "build_report", "predict", "export_onnx",
    "explain_images", "load_run", "TrainConfig", "PrepareConfig", "EvaluateConfig", "PredictConfig", "HeadsConfig",
    "ExplainConfig", "ExportConfig", "ReportConfig", "TuneConfig", "ServeConfig", "UserError",
    "pretrain", "build_pretrainer", "PretrainConfig", "cross_validate",
]
# Each command's function and the config it takes (its first parameter).
COMMAND_CONFIGS = {
    "prepare": "PrepareConfig", "build_trainer": "TrainConfig", "train": "TrainConfig", "tune": "TuneConfig",
    "fit_heads": "HeadsConfig", "evaluate": "EvaluateConfig", "predict": "PredictConfig",
    "export_onnx": "ExportConfig", "build_report": "ReportConfig", "pretrain": "PretrainConfig",
    "build_pretrainer": "PretrainConfig", "cross_validate": "TrainConfig",
}


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_all_lists_the_version_and_every_public_name():
    assert sorted(vitune.__all__) == sorted(["__version__", *PUBLIC_NAMES])
    assert len(vitune.__all__) == len(set(vitune.__all__))


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_each_public_name_is_the_definition_of_that_name(name):
    value = getattr(vitune, name)
    assert value.__name__ == name
    assert getattr(importlib.import_module(value.__module__), name) is value


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("build_trainer", "vitune.training.fine_tune"),
        ("train", "vitune.training.fine_tune"),
        ("prepare", "vitune.workflows.prepare"),
        ("load_run", "vitune.models.run"),
        ("explain_images", "vitune.explain.explainer"),
        ("UserError", "vitune.errors"),
    ],
)
def test_the_names_come_from_their_homes(name, home):
    assert getattr(vitune, name) is getattr(importlib.import_module(home), name)


def test_the_config_classes_are_the_vitune_config_ones():
    import vitune.config

    for name in PUBLIC_NAMES:
        if name.endswith("Config"):
            assert getattr(vitune, name) is getattr(vitune.config, name)
            assert issubclass(getattr(vitune, name), vitune.config.CommandConfig)


@pytest.mark.parametrize(("function", "config"), sorted(COMMAND_CONFIGS.items()))
def test_each_command_function_takes_its_config(function, config):
    first = next(iter(inspect.signature(getattr(vitune, function)).parameters.values()))
    assert first.annotation in (config, getattr(vitune, config))


def test_the_version_is_the_installed_package_version():
    assert vitune.__version__ == importlib.metadata.version("vitune")


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        vitune.fit  # noqa: B018


def test_dir_offers_every_public_name_before_it_is_imported():
    assert set(vitune.__all__) <= set(dir(vitune))


def test_import_vitune_imports_no_ml_library():
    code = (
        "import json, sys, vitune\n"
        "heavy = ['torch', 'transformers', 'datasets', 'sklearn', 'PIL', 'matplotlib']\n"
        "print(json.dumps([name for name in heavy if name in sys.modules]))\n"
    )
    assert json.loads(run_python(code)) == []


def test_the_config_classes_import_no_ml_library():
    code = (
        "import json, sys\n"
        "from vitune import TrainConfig, EvaluateConfig, UserError\n"
        "print(json.dumps(['torch' in sys.modules, 'transformers' in sys.modules]))\n"
    )
    assert json.loads(run_python(code)) == [False, False]


def test_vitune_explain_is_the_subpackage_and_its_explain_takes_the_config():
    import vitune.explain
    from vitune.config import ExplainConfig
    from vitune.explain.command import explain

    assert vitune.explain.explain is explain
    first = next(iter(inspect.signature(explain).parameters.values()))
    assert first.annotation in ("ExplainConfig", ExplainConfig)


@pytest.mark.slow
def test_a_notebook_trains_and_evaluates_through_the_top_level_names(tiny_vit, dataset_dir_factory, tmp_path):
    from vitune import EvaluateConfig, TrainConfig, build_trainer, evaluate

    data = dataset_dir_factory(task="multi_label")
    out = tmp_path / "run"
    trainer = build_trainer(TrainConfig(data=str(data), model=str(tiny_vit), out=str(out), batch_size=8, epochs=5,
                                        lr=1e-3))
    trainer.train()
    trainer.save_model(str(out / "model"))
    result = evaluate(EvaluateConfig(run=str(out), data=str(data), split="test", bootstrap=50))

    assert (result.task, result.split, result.num_samples) == ("multi_label", "test", 24)
    assert result.metrics["roc_auc_macro"] > 0.8
    assert json.loads(result.path.read_text())["metrics"] == result.metrics
    assert result.path == out / "eval" / "test" / "metrics_test.json"
