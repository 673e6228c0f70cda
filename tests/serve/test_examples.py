"""The page's example images: positives of different labels first, from the validation split."""

import numpy as np
from PIL import Image
from tiny_run import tiny_run_copy

from vitune.data.dataset_dir import load_dataset_dir
from vitune.serve.examples import MAX_EXAMPLES, pick_rows, spread_rows, write_examples
from vitune.storage.layout import RunDir


def test_labels_take_turns_and_no_row_is_shown_twice():
    targets = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [np.nan, 1, 0], [1, 0, 0]])
    assert pick_rows(targets, limit=6) == [(0, 0), (2, 1), (1, 0), (4, 1), (3, 0), (5, 0)]
    assert pick_rows(targets, limit=2) == [(0, 0), (2, 1)]
    assert pick_rows(np.zeros((4, 2))) == []


def test_regression_examples_spread_over_the_range():
    values = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0])
    rows = spread_rows(values, limit=3)
    assert [values[row] for row in rows] == [0.0, 4.0, 9.0]
    assert spread_rows(np.array([1.0, 2.0]), limit=6) == [0, 1]


def test_written_examples_are_validation_images_of_the_labels_they_name(tmp_path, tmp_path_factory, tiny_vit):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    dataset, info = load_dataset_dir(RunDir(run_dir).dataset_dir())
    validation = dataset["validation"]
    examples = write_examples(run_dir, tmp_path)
    assert 1 < len(examples) <= MAX_EXAMPLES
    for example in examples:
        label = example.caption.removeprefix("positive for ").split(" (")[0]
        file = example.caption.split(" (")[1].rstrip(")")
        row = list(validation["file"]).index(file)
        assert validation[row]["labels"][info.labels.index(label)] == 1
        with Image.open(example.path) as image:
            assert np.array_equal(np.asarray(image).transpose(2, 0, 1), validation[row]["pixel_values"])
    assert len({example.caption.split(" (")[0] for example in examples[:len(info.labels)]}) > 1


def test_a_run_without_its_dataset_has_no_examples(tmp_path, tmp_path_factory, tiny_vit):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    (run_dir / "config.yaml").write_text("model: x\n")
    assert write_examples(run_dir, tmp_path) == []
