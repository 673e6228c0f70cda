"""The entry point: every flag or command mistake is one `error:` line and exit code 2, never a traceback;
`--config FILE.yaml` and `--print-config` on every command; list flags as `a,b`."""

import pytest
import yaml
from tiny_run import run_cli

from vitune.config import EvaluateConfig, HeadsConfig, PrepareConfig


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--bogus"], "error: No such option: --bogus"),
        (["data", "prepare", "somewhere"], "error: missing --out: `vitune data prepare SOURCE --out DATASET_DIR`"),
        (["train", "--epochs", "abc"], "error: Invalid value for '--epochs'"),
        (["nosuch"], "error: No such command 'nosuch'."),
        (["data", "nosuch"], "error: No such command 'nosuch'."),
        (["report", "run", "extra"], "error: Unexpected argument(s): extra (see `vitune report --help`)"),
        (["evaluate", "run", "--split"], "error: Invalid value for '--split'"),
        (["heads", "--model", "m", "--data", "d", "--heads", "svm,knn"], "error: unknown head(s) knn"),
        (["evaluate", "--config", "absent.yaml"], "error: config file absent.yaml does not exist"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(monkeypatch, capsys, argv, message):
    code, out, err = run_cli(monkeypatch, capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(message) and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bare_command_shows_the_help(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys)
    commands = ("models", "data", "train", "tune", "heads", "evaluate", "predict", "explain", "serve", "export",
                "report", "demo")
    assert code == 2 and all(f"• {name} " in out for name in commands)
    code, out, _ = run_cli(monkeypatch, capsys, "data")
    assert code == 2 and "• prepare " in out and "• show " in out


def test_models_lists_aligned_aliases(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["alias", "size", "hub"]
    size_column = {line.index(" 224 ") if " 224 " in line else line.index(" 384 ") for line in lines[1:]}
    assert len(size_column) == 1  # one column, however long the alias
    assert any(line.startswith("vit-large-p32-384") and "google/vit-large-patch32-384" in line for line in lines)


def test_a_path_the_system_refuses_is_one_line(monkeypatch, capsys, tmp_path):
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / "src" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "src" / name / f"{i}.png")
    (tmp_path / "a-file").write_text("x")
    code, _, err = run_cli(monkeypatch, capsys, "data", "prepare", tmp_path / "src", "--out", tmp_path / "a-file" / "d",
                           "--image-size", "8")
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {tmp_path / 'a-file'}: File exists"
    assert "Traceback" not in err


def captured_config(monkeypatch, target: str) -> list:
    """Replace the library function ``target`` with one that records its config and ends the command."""
    seen = []

    def record(config):
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(target, record)
    return seen


def test_config_file_of_a_non_train_command_with_flags_over_it(monkeypatch, capsys, tmp_path):
    seen = captured_config(monkeypatch, "vitune.evaluation.evaluate.evaluate")
    path = tmp_path / "evaluate.yaml"
    path.write_text(yaml.safe_dump({"run": "runs/a", "split": "validation", "bootstrap": 50, "seed": 3}))
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--config", path, "--bootstrap", "7")
    assert code == 0, err
    assert seen == [EvaluateConfig(run="runs/a", split="validation", bootstrap=7, seed=3)]
    code, _, _ = run_cli(monkeypatch, capsys, "evaluate", "runs/b", "--config", path)
    assert code == 0 and seen[-1].run == "runs/b"  # a positional argument given wins too
    path.write_text("run: r\nlearning_rate: 1\n")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--config", path)
    assert code == 2 and err.strip().splitlines() == [
        "error: unknown setting(s) learning_rate: known ones are run, data, split, bootstrap, seed, batch_size, device, "
        "backend, by, age_bins, no_calibrate, tta"]


def test_print_config_prints_yaml_that_config_reads_back(monkeypatch, capsys, tmp_path):
    argv = ["data", "prepare", tmp_path / "src", "--out", tmp_path / "ds", "--views", "PA,AP", "--label-column",
            "Edema", "Effusion", "--seed", "4", "--no-finding-as-label"]
    code, out, _ = run_cli(monkeypatch, capsys, *argv, "--print-config")
    assert code == 0 and not (tmp_path / "ds").exists()
    printed = yaml.safe_load(out)
    expected = PrepareConfig(source=tmp_path / "src", out=tmp_path / "ds", views=["PA", "AP"], seed=4,
                             label_column=["Edema", "Effusion"], no_finding_as_label=True)
    assert printed == expected.to_dict() and printed["views"] == ["PA", "AP"]
    (tmp_path / "prepare.yaml").write_text(out)
    code, again, _ = run_cli(monkeypatch, capsys, "data", "prepare", "--config", tmp_path / "prepare.yaml",
                             "--print-config")
    assert code == 0 and again == out


@pytest.mark.parametrize("flags", [["svm,logreg"], ["svm", "logreg"], ["logreg,svm"]])
def test_list_flags_take_a_comma_list_or_several_values(monkeypatch, capsys, flags):
    code, out, _ = run_cli(monkeypatch, capsys, "heads", "--model", "m", "--data", "d", "--heads", *flags,
                           "--print-config")
    assert code == 0 and yaml.safe_load(out)["heads"] == ["svm", "logreg"]
    assert HeadsConfig.from_dict(yaml.safe_load(out)) == HeadsConfig(model="m", data="d", heads=["svm", "logreg"])


def test_an_old_config_yaml_with_comma_strings_still_loads(tmp_path):
    from vitune.config import ExplainConfig, TrainConfig

    path = tmp_path / "config.yaml"
    path.write_text("data: d\nmodel: m\nout: o\nreport_to: tensorboard,mlflow\nlora: 8\nlora_targets: query, value\n")
    config = TrainConfig.from_yaml(path)
    assert config.report_to == ["tensorboard", "mlflow"] and config.lora_targets == ["query", "value"]
    path.write_text("data: d\nmodel: m\nout: o\nreport_to: none\n")
    assert TrainConfig.from_yaml(path).report_to == []
    path.write_text("model: m\ndata: d\nheads: mlp,svm\n")
    assert HeadsConfig.from_yaml(path).heads == ["svm", "mlp"]
    path.write_text("source: s\nout: o\nviews: PA,AP\nlabel_column: Edema,Effusion\n")
    assert (PrepareConfig.from_yaml(path).views, PrepareConfig.from_yaml(path).label_column) == (
        ["PA", "AP"], ["Edema", "Effusion"])
    assert ExplainConfig(run="r", inputs=["x"], out="o", labels="A, B").labels == ["A", "B"]


def test_ctrl_c_is_exit_130_with_one_line(monkeypatch, capsys):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr("vitune.evaluation.evaluate.evaluate", interrupted)
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "run")
    assert code == 130 and err.strip().splitlines() == ["interrupted: nothing half-written was kept"]
