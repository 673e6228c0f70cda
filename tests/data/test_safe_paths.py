"""The one gate every file name from a label file goes through."""

import pytest

from vitune.data.sources.base import UnsafePath, safe_relative_path


def test_relative_path_inside_root(tmp_path):
    (tmp_path / "images").mkdir()
    assert safe_relative_path(tmp_path, "images/a.png") == (tmp_path / "images" / "a.png").resolve()


@pytest.mark.parametrize("name", ["../secret.png", "images/../../x.png", "/etc/passwd", "C:/x.png", ""])
def test_escapes_and_absolute_paths_refused(tmp_path, name):
    with pytest.raises(UnsafePath):
        safe_relative_path(tmp_path, name)


def test_symlink_out_of_root_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(UnsafePath, match="outside"):
        safe_relative_path(root, "link/x.png")
