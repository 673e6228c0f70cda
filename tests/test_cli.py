"""The entry point: every flag or command mistake is one `error:` line and exit code 2, never a traceback."""

import pytest
from tiny_run import run_cli


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--bogus"], "error: No such option: --bogus"),
        (["data", "prepare", "somewhere"], "error: Missing option '--out'."),
        (["train", "--epochs", "abc"], "error: Invalid value for '--epochs'"),
        (["nosuch"], "error: No such command 'nosuch'."),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(monkeypatch, capsys, argv, message):
    code, out, err = run_cli(monkeypatch, capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(message) and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bare_command_shows_the_help(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys)
    assert code == 2 and "Commands" in out and "demo" in out


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
