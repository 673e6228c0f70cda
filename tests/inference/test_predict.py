"""`vitune predict`: folders, bad files with reasons, probabilities equal to the model's, CSV, CLI."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import run_cli, tiny_run_copy

from vitune.config import HeadsConfig, PredictConfig
from vitune.data.images import decode_image
from vitune.data.inputs import expand_inputs
from vitune.errors import UserError
from vitune.inference.predict import predict as predict_config
from vitune.models.forward import normalize
from vitune.models.run import load_run
from vitune.storage.layout import RunDir
from vitune.tasks import get_task


def predict(run_dir, inputs, **settings):
    return predict_config(PredictConfig(run=run_dir, inputs=inputs, **settings))


@pytest.fixture
def image_folder(tmp_path):
    """Good images (RGB, RGBA, 16-bit grey, nested) beside an empty, a truncated, a fake and a text file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / "b_rgb.png")
    Image.fromarray(rng.integers(0, 255, (33, 33, 4), dtype=np.uint8), "RGBA").save(folder / "nested" / "c_rgba.png")
    Image.fromarray(rng.integers(0, 65535, (30, 20), dtype=np.uint16)).save(folder / "a_grey16.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "d.jpg", quality=90)
    (folder / "empty.png").write_bytes(b"")
    full = (folder / "b_rgb.png").read_bytes()
    (folder / "truncated.png").write_bytes(full[: len(full) // 2])
    (folder / "fake.jpg").write_text("not a picture")
    (folder / "notes.txt").write_text("hello")
    (folder / ".DS_Store").write_bytes(b"\0")
    return folder


GOOD = ["a_grey16.png", "b_rgb.png", "d.jpg", "nested/c_rgba.png"]


def model_probabilities(run_dir, paths):
    """What the saved model says for ``paths``, computed without vitune.inference.predict."""
    run = load_run(run_dir, "cpu")
    pixels = np.stack([decode_image(p, run.prep.image_size) for p in paths])
    with torch.no_grad():
        logits = run.model(pixel_values=normalize(torch.from_numpy(pixels), run.prep)).logits.numpy()
    return get_task(run.task).scores(logits, run.model.config)


def test_expand_inputs_sorted_recursive_and_reports_non_images(image_folder):
    files, skipped = expand_inputs([image_folder, image_folder / "d.jpg"])
    names = [p.relative_to(image_folder).as_posix() for p in files]
    assert names == ["a_grey16.png", "b_rgb.png", "d.jpg", "empty.png", "fake.jpg", "truncated.png",
                     "nested/c_rgba.png", "d.jpg"]
    assert [(s.file.split("/")[-1], s.reason) for s in skipped] == [("notes.txt", "not an image file (.txt)")]
    with pytest.raises(UserError, match="does not exist"):
        expand_inputs([image_folder / "missing.png"])


def test_predict_multi_label_folder(tmp_path, tmp_path_factory, tiny_vit, image_folder):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    thresholds = {"a": 0.3, "b": 0.5, "c": 0.7}
    (run_dir / "thresholds.json").write_text(json.dumps({"thresholds": thresholds}))
    result = predict(run_dir, [image_folder], out=tmp_path / "preds.csv", batch_size=3)

    assert [r["file"] for r in result.rows] == [str(image_folder / name) for name in GOOD]
    reasons = {s.file.split("/")[-1]: s.reason for s in result.skipped}
    assert reasons["empty.png"] == "empty file" and reasons["truncated.png"] == "truncated image"
    assert reasons["fake.jpg"].startswith("unreadable image") and reasons["notes.txt"].startswith("not an image")
    assert len(reasons) == 4

    expected = model_probabilities(run_dir, [image_folder / name for name in GOOD])
    got = np.array([[row[label] for label in "abc"] for row in result.rows])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    for row, probs in zip(result.rows, expected):
        assert row["predicted"] == "|".join(n for n, p in zip("abc", probs) if p >= thresholds[n])

    with open(tmp_path / "preds.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["file", "a", "b", "c", "predicted"]
    assert [float(r["b"]) for r in table] == pytest.approx(expected[:, 1].tolist())
    assert result.scores.shape == (4, 3) and result.out == tmp_path / "preds.csv"


def test_a_failed_predict_leaves_an_earlier_csv_as_it_was(tmp_path, tmp_path_factory, tiny_vit, image_folder):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    (tmp_path / "preds.csv").write_text("file,a\nold.png,0.5\n")
    with pytest.raises(UserError, match="no image to predict .*empty.png: empty file"):
        predict(run_dir, [image_folder / "empty.png", image_folder / "fake.jpg"], out=tmp_path / "preds.csv")
    assert (tmp_path / "preds.csv").read_text() == "file,a\nold.png,0.5\n"
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary file left


@pytest.mark.parametrize("task", ["single_label", "regression"])
def test_predict_single_label_and_regression(tmp_path, tmp_path_factory, tiny_vit, image_folder, task):
    dataset = {"sizes": {"train": 48, "validation": 30}} if task == "single_label" else {}
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, task, tmp_path / "run", **dataset)
    result = predict(run_dir, [image_folder / "b_rgb.png", image_folder / "d.jpg"])
    expected = model_probabilities(run_dir, [image_folder / "b_rgb.png", image_folder / "d.jpg"])
    if task == "single_label":
        for row, probs in zip(result.rows, expected):
            assert row["predicted"] == ["a", "b", "c"][int(np.argmax(probs))]
            assert row["probability"] == pytest.approx(probs.max())
    else:
        assert result.columns == ["file", "predicted"]
        assert [r["predicted"] for r in result.rows] == pytest.approx(expected.tolist())


def test_cli_predict(tmp_path, tmp_path_factory, tiny_vit, image_folder, monkeypatch, capsys):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    code, out, err = run_cli(monkeypatch, capsys, "predict", run_dir, image_folder)
    assert code == 0
    assert out.splitlines()[0].split() == ["file", "a", "b", "c", "predicted"] and len(out.splitlines()) == 5
    assert f"skipped {image_folder / 'empty.png'}: empty file" in err and "predicted 4 image(s), skipped 4" in err

    code, out, err = run_cli(monkeypatch, capsys, "predict", run_dir, image_folder / "empty.png")
    assert code == 2 and err.startswith("error: no image to predict") and err.count("\n") == 1
    code, out, err = run_cli(monkeypatch, capsys, "predict", tmp_path / "no-run", image_folder)
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    code, out, err = run_cli(monkeypatch, capsys, "predict", run_dir, tmp_path / "nothing-here")
    assert code == 2 and "nothing-here does not exist" in err and err.count("\n") == 1


def test_predict_with_saved_heads(tmp_path, tmp_path_factory, tiny_vit, image_folder):
    from vitune.heads import fit_heads, load_heads
    from vitune.models.encoder import embed_batches
    from vitune.models.run import open_model

    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    # uncalibrated heads: their scores are the heads' own (tests/inference/test_tta.py checks the temperature)
    fit_heads(HeadsConfig(model=run_dir, data=RunDir(run_dir).dataset_dir(), heads="logreg,mlp", no_calibrate=True))
    files = [image_folder / name for name in GOOD]

    def probs(result):
        return np.array([[row[label] for label in "abc"] for row in result.rows])

    own = probs(predict(run_dir, files, head="model"))
    # a run's mlp head is its own fine-tuned classifier
    np.testing.assert_allclose(probs(predict(run_dir, files, head="mlp")), own, atol=1e-5)
    pixels = np.stack([decode_image(p, 32) for p in files])
    embeddings, logits = embed_batches(open_model(run_dir), [pixels], "cls")
    expected = load_heads(run_dir / "heads")["logreg"].predict_scores(embeddings, logits)
    np.testing.assert_allclose(probs(predict(run_dir, files, head="logreg")), expected, atol=1e-6)
    with pytest.raises(UserError, match="no 'svm' head"):
        predict(run_dir, files, head="svm")
    with pytest.raises(UserError, match="unknown --head"):
        predict(run_dir, files, head="knn")


def test_heads_of_a_run_with_other_labels_are_refused(tmp_path, tmp_path_factory, tiny_vit, image_folder):
    from vitune.heads import fit_heads

    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    other = tiny_run_copy(tmp_path_factory, tiny_vit, "single_label", tmp_path / "other")
    fit_heads(HeadsConfig(model=other, data=RunDir(other).dataset_dir(), heads="logreg"))
    with pytest.raises(UserError, match="give the --heads-dir fitted on this run"):
        predict(run_dir, [image_folder / GOOD[0]], head="logreg", heads_dir=other / "heads")


def test_ood_columns_flag_images_unlike_the_chest_films_and_a_run_without_statistics_says_so_once(
        tmp_path_factory, tiny_vit, tmp_path, caplog, monkeypatch, capsys):
    from tiny_run import chest_film_run

    from vitune.data.dataset_dir import load_dataset_dir
    from vitune.data.synthetic import blank_frame, knee_film_like, photo_like
    from vitune.models.ood import OodStatistics, run_features

    run_dir = chest_film_run(tmp_path_factory, tiny_vit)
    folder = tmp_path / "images"
    folder.mkdir()
    ds, _ = load_dataset_dir(RunDir(run_dir).dataset_dir())
    films = np.asarray(ds["test"].with_format("numpy")[:4]["pixel_values"], dtype=np.uint8)
    others = {"photo": photo_like(32), "knee": knee_film_like(32), "blank": blank_frame(32)}
    for index, pixels in enumerate(films):
        Image.fromarray(pixels.transpose(1, 2, 0)).save(folder / f"film{index}.png")
    for name, pixels in others.items():
        Image.fromarray(pixels.transpose(1, 2, 0)).save(folder / f"{name}.png")
    result = predict(run_dir, [folder], out=tmp_path / "preds.csv", device="cpu")
    with open(tmp_path / "preds.csv") as handle:
        rows = {row["file"].rsplit("/", 1)[-1]: row for row in csv.DictReader(handle)}
    assert list(next(iter(rows.values())))[-2:] == ["ood_distance", "ood"]
    assert {name: rows[name]["ood"] for name in sorted(rows)} == {
        "blank.png": "True", "film0.png": "False", "film1.png": "False", "film2.png": "False", "film3.png": "False",
        "knee.png": "True", "photo.png": "True"}
    statistics = OodStatistics.load(RunDir(run_dir).ood)
    expected = statistics.distances(run_features(load_run(run_dir, "cpu"), [films]))
    np.testing.assert_allclose([float(rows[f"film{i}.png"]["ood_distance"]) for i in range(4)], expected, rtol=1e-5)
    assert result.ood_threshold == statistics.threshold and len(result.ood_distances) == 7
    code, out, err = run_cli(monkeypatch, capsys, "predict", run_dir, folder, "--device", "cpu")
    assert code == 0 and "3 image(s) unlike the training data (column ood)" in err
    assert out.splitlines()[0].split()[-2:] == ["ood_distance", "ood"]

    older = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "older")
    caplog.clear()
    plain = predict(older, [folder], device="cpu")
    notes = [r.getMessage() for r in caplog.records if "out-of-distribution" in r.getMessage()]
    assert len(notes) == 1 and "no ood column" in notes[0]
    assert "ood" not in plain.columns and plain.ood_distances is None and "ood" not in plain.rows[0]
