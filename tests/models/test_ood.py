"""The out-of-distribution statistics on a tiny chest-film run: real Mahalanobis distances, exact statistics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf
from tiny_run import chest_film_run

from vitune.data.dataset_dir import load_dataset_dir
from vitune.data.synthetic import blank_frame, knee_film_like, photo_like
from vitune.errors import UserError
from vitune.models.forward import pixel_batches
from vitune.models.ood import MAX_TRAIN_ROWS, OodStatistics, fit_ood, run_features, training_sample
from vitune.models.run import load_run
from vitune.storage.layout import RunDir


@pytest.fixture(scope="module")
def chest_run(tmp_path_factory, tiny_vit):
    return chest_film_run(tmp_path_factory, tiny_vit)


@pytest.fixture(scope="module")
def run(chest_run):
    return load_run(chest_run, "cpu")


@pytest.fixture(scope="module")
def splits(run):
    ds, _ = load_dataset_dir(run.dir.dataset_dir())
    return {name: run_features(run, pixel_batches(ds[name], 32)) for name in ("train", "validation", "test")}


def test_statistics_are_the_training_mean_ledoit_wolf_and_the_99th_validation_percentile(run, splits):
    statistics = OodStatistics.load(run.dir.ood)
    train = splits["train"].astype(np.float64)
    np.testing.assert_array_equal(statistics.mean, train.mean(axis=0))
    reference = LedoitWolf().fit(train)
    np.testing.assert_allclose(statistics.precision, reference.precision_, rtol=1e-10)
    expected = np.sqrt(reference.mahalanobis(splits["validation"]))  # sklearn gives squared distances
    np.testing.assert_allclose(statistics.validation_distances, np.sort(expected), rtol=1e-9)
    assert statistics.threshold == pytest.approx(np.percentile(expected, 99), rel=1e-12)
    assert statistics.percentile == 99.0 and statistics.shrinkage == pytest.approx(reference.shrinkage_)
    assert (statistics.train_rows, statistics.train_rows_used, len(statistics.validation_distances)) == (160, 160, 100)
    assert statistics.feature == "ViT classifier input (cls)"


def test_a_photo_a_knee_film_and_a_blank_image_are_flagged_held_out_chest_films_are_not(run, splits):
    statistics = OodStatistics.load(run.dir.ood)
    held_out = statistics.flags(statistics.distances(splits["test"]))
    assert held_out.mean() <= 0.05
    others = np.stack([photo_like(32), knee_film_like(32), blank_frame(32)])
    distances = statistics.distances(run_features(run, [others]))
    assert statistics.flags(distances).tolist() == [True, True, True], distances
    assert distances.min() > np.percentile(statistics.distances(splits["test"]), 95)


def test_the_feature_is_what_the_classifier_reads(run):
    """The stored statistics measure the classifier's input: the logits are its linear map of the features."""
    from vitune.models.ood import logits_and_features

    logits, features = logits_and_features(run, np.stack([photo_like(32), blank_frame(32)]))
    weight = run.model.classifier.weight.detach().numpy()
    bias = run.model.classifier.bias.detach().numpy()
    np.testing.assert_allclose(features @ weight.T + bias, logits, atol=1e-5)


def test_statistics_round_trip_through_safetensors_and_a_damaged_file_is_one_clear_error(run, tmp_path):
    statistics = OodStatistics.load(run.dir.ood)
    path = statistics.save(tmp_path / "ood.safetensors")
    again = OodStatistics.load(path)
    np.testing.assert_array_equal(again.precision, statistics.precision)
    assert again.summary() == statistics.summary()
    assert OodStatistics.load(tmp_path / "absent.safetensors") is None
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="damaged"):
        OodStatistics.load(path)


def test_training_rows_are_capped_by_a_fixed_sample():
    sample = training_sample(50_000)
    assert len(sample) == MAX_TRAIN_ROWS and len(np.unique(sample)) == MAX_TRAIN_ROWS
    assert np.all(np.diff(sample) > 0) and sample[-1] < 50_000
    np.testing.assert_array_equal(sample, training_sample(50_000))
    np.testing.assert_array_equal(training_sample(300), np.arange(300))


def test_too_few_images_store_nothing_and_a_wrong_width_is_refused(run):
    assert fit_ood(np.zeros((1, 4)), np.zeros((3, 4)), "x") is None
    statistics = OodStatistics.load(run.dir.ood)
    with pytest.raises(UserError, match="32-wide"):
        statistics.distances(np.zeros((2, 8)))
    assert RunDir(run.dir.root).ood == run.dir.ood
