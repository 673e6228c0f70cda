"""``vitune explain``: pointing on synthetic lesions, class specificity, coordinates, skipped files, outputs."""

from __future__ import annotations

import csv
import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import save_dataset_dir, save_tiny_vit
from PIL import Image
from tiny_run import make_tiny_run, run_cli, tiny_run_copy

from vitune.data.synthetic import lesion_images
from vitune.errors import UserError
from vitune.explain import explain_images, pick_method
from vitune.explain.overlay import MIN_WIDTH, display_scale, peak
from vitune.explain.pointing import inside, pointing_hits, pointing_score
from vitune.models.run import load_run

SIZE, PATCH = 32, 8
# four findings in four cells of the 4x4 grid: (row, column) (0, 0), (1, 2), (2, 2) and (3, 0)
FINDINGS = ["Atelectasis", "Pneumonia", "Emphysema", "Pleural_Thickening"]
MARGIN = PATCH / 2  # the pointing game allows half a patch


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, None], 3, axis=1)


@contextmanager
def one_thread():
    """Torch on one thread: on a shared 2-core machine tiny models run several times faster so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def lesion_run(tmp_path_factory):
    """A tiny ViT trained on synthetic lesions (300 train images), with held-out images and their boxes."""
    root = tmp_path_factory.mktemp("lesions")
    gray, labels, _ = lesion_images(400, FINDINGS, image_size=SIZE, seed=1)
    held_out = lesion_images(120, FINDINGS, image_size=SIZE, seed=2)
    column = [list(map(float, row)) for row in labels]
    data = save_dataset_dir(root / "data", "multi_label", FINDINGS, {
        "train": (_rgb(gray[:300]), column[:300]), "validation": (_rgb(gray[300:]), column[300:]),
        "test": (_rgb(held_out[0]), [list(map(float, row)) for row in held_out[1]])})
    run = make_tiny_run(root / "run", save_tiny_vit(root / "vit", SIZE), data, steps=250, batch_size=64)
    return load_run(run, "cpu"), held_out


@pytest.mark.slow
def test_trained_vit_points_at_held_out_lesions(lesion_run):
    run, (gray, labels, boxes) = lesion_run
    metrics = json.loads(run.dir.metrics.read_text())
    assert all(entry["roc_auc"] > 0.95 for entry in metrics["per_label"].values()), metrics["per_label"]
    assert pick_method(None, run.config).name == "grad-rollout"
    explained = explain_images(run, list(gray), labels=FINDINGS)
    hits = [hit for result, box in zip(explained, boxes)
            for hit in pointing_hits({k: v.peak for k, v in result.labels.items()}, box, MARGIN)]
    assert len(hits) == int(labels.sum()) > 100
    assert pointing_score(hits) >= 0.85


@pytest.mark.slow
def test_two_findings_in_one_image_give_two_peaks(lesion_run):
    run, _ = lesion_run
    gray, _, boxes = lesion_images(40, FINDINGS, image_size=SIZE, rate=1.0, seed=3)
    pair = ["Atelectasis", "Emphysema"]  # cells (row 0, column 0) and (2, 2)
    both = explain_images(run, list(gray), labels=pair)
    for result, box in zip(both, boxes):
        first, second = (result.labels[name].peak for name in pair)
        assert first != second
    hits = [inside(result.labels[name].peak, box[name], MARGIN) for result, box in zip(both, boxes) for name in pair]
    assert pointing_score(hits) >= 0.85


@pytest.mark.slow
def test_peak_is_in_source_pixels_of_a_non_square_image(lesion_run, tmp_path):
    run, _ = lesion_run
    gray, _, boxes = lesion_images(12, ["Emphysema"], image_size=SIZE, rate=1.0, seed=4)
    width, height = 3 * SIZE, SIZE + SIZE // 2  # stretched 3x across, 1.5x down
    # Emphysema's cell is at 5/8 of the width and height: the peak must be at 60, 30 here, not at 20, 20
    paths = []
    for index, pixels in enumerate(gray):
        path = tmp_path / f"wide{index}.png"
        Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR).save(path)
        paths.append(path)
    results = explain_images(run, paths, labels=["Emphysema"])
    hits = []
    for result, box in zip(results, boxes):
        assert (result.width, result.height) == (width, height)
        x0, y0, x1, y1 = box["Emphysema"]
        x, y = result.labels["Emphysema"].peak
        hits.append(inside((x / 3, y / 1.5), (x0, y0, x1, y1), MARGIN))  # back on the 32 px grid
    assert pointing_score(hits) >= 0.85


def test_peak_maps_grid_cells_to_source_pixels():
    heatmap = np.zeros((4, 4), dtype=np.float32)
    heatmap[1, 3] = 1.0  # row 1, last column: symmetric neighbours, so the cell centre
    assert peak(heatmap, 200, 100) == (175.0, 37.5)
    heatmap[1, 2] = 0.5  # a neighbour to the left pulls the peak left, within the cell
    x, y = peak(heatmap, 200, 100)
    assert x == 175.0  # last column: no right neighbour, no refinement
    heatmap = np.zeros((4, 4), dtype=np.float32)
    heatmap[2, 1], heatmap[2, 2] = 1.0, 0.5
    x, y = peak(heatmap, 40, 40)
    assert 15.0 < x < 20.0 and y == 25.0  # between the centre of column 1 (15) and its edge (20)


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory, tiny_vit):
    return tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path_factory.mktemp("m") / "run")


def _save_png(path, width=40, height=24, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width), dtype=np.uint8)).save(path)
    return path


def test_unreadable_files_are_skipped_with_their_reason(multi_run, tmp_path, monkeypatch, capsys):
    good = _save_png(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    code, _, err = run_cli(monkeypatch, capsys, "explain", multi_run, good, tmp_path / "empty.png",
                           tmp_path / "text.png", "--out", tmp_path / "ex", "--top", "2")
    assert code == 0, err
    document = json.loads((tmp_path / "ex" / "explanations.json").read_text())
    assert {s["file"]: s["reason"] for s in document["skipped"]} == {
        str(tmp_path / "empty.png"): "empty file",
        str(tmp_path / "text.png"): "unreadable image: not a recognised image format"}
    assert f"skipped {tmp_path / 'empty.png'}: empty file" in err
    assert [entry["file"] for entry in document["images"]] == [str(good)]
    code, _, err = run_cli(monkeypatch, capsys, "explain", multi_run, tmp_path / "empty.png", "--out", tmp_path / "e2")
    assert code == 2 and "no image to explain (empty.png: empty file)" in err and not (tmp_path / "e2").exists()


def test_outputs_follow_the_spec(multi_run, tmp_path, monkeypatch, capsys):
    files = [_save_png(tmp_path / "a.png", 40, 24, 1), _save_png(tmp_path / "b.png", 17, 33, 2)]
    code, _, err = run_cli(monkeypatch, capsys, "explain", multi_run, *files, "--out", tmp_path / "ex",
                           "--labels", "a,c", "--method", "rollout")
    assert code == 0, err
    document = json.loads((tmp_path / "ex" / "explanations.json").read_text())
    assert document["method"] == "rollout"
    maps = np.load(tmp_path / "ex" / "heatmaps.npz")
    assert sorted(maps.files) == ["0/a", "0/c", "1/a", "1/c"]
    for index, (entry, (width, height)) in enumerate(zip(document["images"], [(40, 24), (17, 33)])):
        assert (entry["width"], entry["height"]) == (width, height) and list(entry["labels"]) == ["a", "c"]
        for label, value in entry["labels"].items():
            assert 0.0 <= value["score"] <= 1.0
            x, y = value["peak"]
            assert 0 <= x <= width and 0 <= y <= height
            assert maps[f"{index}/{label}"].shape == (4, 4)  # 32 px / 8 px patches
            with Image.open(tmp_path / "ex" / value["overlay"]) as overlay:
                scale = display_scale(width)
                assert overlay.height == height * scale and overlay.width > 2 * MIN_WIDTH  # source + overlay + bar
    again = run_cli(monkeypatch, capsys, "explain", multi_run, files[0], "--out", tmp_path / "ex")
    assert again[0] == 0 and len(json.loads((tmp_path / "ex" / "explanations.json").read_text())["images"]) == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    code, _, err = run_cli(monkeypatch, capsys, "explain", multi_run, files[0], "--out", tmp_path / "other")
    assert code == 2 and "holds other files" in err and (tmp_path / "other" / "keep.txt").is_file()


def test_predict_explain_writes_the_same_files(multi_run, tmp_path, monkeypatch, capsys):
    image = _save_png(tmp_path / "a.png")
    code, _, err = run_cli(monkeypatch, capsys, "predict", multi_run, image, "--out", tmp_path / "p.csv",
                           "--explain", tmp_path / "ex")
    assert code == 0, err
    document = json.loads((tmp_path / "ex" / "explanations.json").read_text())
    with open(tmp_path / "p.csv", newline="") as handle:
        predicted = next(csv.DictReader(handle))["predicted"]
    expected = predicted.split("|") if predicted else None
    labels = list(document["images"][0]["labels"])
    assert labels == expected if expected else len(labels) == 1
    assert document["method"] == "grad-rollout"
    code, _, err = run_cli(monkeypatch, capsys, "predict", multi_run, image, "--head", "svm",
                           "--explain", tmp_path / "x")
    assert code == 2 and "--explain" in err


@pytest.mark.parametrize("task", ["single_label", "regression"])
def test_default_labels_single_label_and_regression(task, tmp_path_factory, tiny_vit, tmp_path):
    run = load_run(tiny_run_copy(tmp_path_factory, tiny_vit, task, tmp_path / "run"), "cpu")
    images = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(3)]
    results = explain_images(run, images)
    scores = run.scores([np.stack([image.transpose(2, 0, 1) for image in images])])
    for result, row in zip(results, scores.reshape(len(images), -1)):
        if task == "regression":
            assert list(result.labels) == ["score"] and result.labels["score"].score == pytest.approx(float(row[0]))
        else:
            assert list(result.labels) == [run.labels[int(np.argmax(row))]]


def _tiny_classifier(kind: str):
    import transformers

    common = dict(image_size=32, num_labels=2, problem_type="multi_label_classification")
    vit_like = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=8, **common)
    built = {
        "deit": lambda: transformers.DeiTForImageClassification(transformers.DeiTConfig(intermediate_size=64,
                                                                                         **vit_like)),
        "beit": lambda: transformers.BeitForImageClassification(transformers.BeitConfig(
            intermediate_size=64, use_mean_pooling=True, **vit_like)),
        "dinov2": lambda: transformers.Dinov2ForImageClassification(transformers.Dinov2Config(**vit_like)),
        "swin": lambda: transformers.SwinForImageClassification(transformers.SwinConfig(
            patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, **common)),
    }
    torch.manual_seed(0)
    return built[kind]().eval()


@pytest.mark.parametrize("kind", ["deit", "beit", "dinov2", "swin"])
def test_every_family_gets_a_class_specific_map(kind):
    model = _tiny_classifier(kind)
    kernel = model.config._attn_implementation
    method = pick_method(None, model.config)
    assert method.name == ("gradcam" if kind == "swin" else "grad-rollout")
    pixels = torch.randn(2, 3, 32, 32)
    maps = method.maps(model, pixels, torch.tensor([0, 1]))
    assert maps.shape == ((2, 32, 32) if kind == "swin" else (2, 4, 4)) and torch.isfinite(maps).all()
    other = method.maps(model, pixels, torch.tensor([1, 0]))
    assert not torch.allclose(maps, other)  # the other label, another map
    assert all(p.grad is None for p in model.parameters())
    if kind == "swin":
        with pytest.raises(UserError, match="does not apply to swin"):
            pick_method("grad-rollout", model.config)
    assert model.config._attn_implementation == kernel  # eager only while explaining
