"""Registry, resolution and head replacement on a tiny local checkpoint (offline)."""

import pytest

from vitune.errors import UserError
from vitune.models.aliases import REGISTRY, load_classifier, resolve_model, resolve_preprocessing


def test_registry_has_the_eight_vit_variants_and_other_families():
    vits = {f"vit-{s}-p{p}-{r}" for s in ("base", "large") for p in (16, 32) for r in (224, 384)}
    assert vits <= set(REGISTRY)
    assert {a.family.model_type for a in REGISTRY.values()} >= {"vit", "deit", "swin", "beit", "dinov2"}
    assert REGISTRY["vit-base-p16-224"].hub_id == "google/vit-base-patch16-224-in21k"
    assert REGISTRY["vit-large-p32-384"].image_size == 384


def test_resolve_model_alias_dir_and_hub_id(tiny_vit, tmp_path):
    assert resolve_model("vit-base-p16-224") == "google/vit-base-patch16-224-in21k"
    assert resolve_model(str(tiny_vit)) == str(tiny_vit)
    assert resolve_model("someone/some-vit") == "someone/some-vit"
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(UserError, match="unknown model"):
        resolve_model("not-a-model")


def test_preprocessing_comes_from_the_checkpoint(tiny_vit):
    prep = resolve_preprocessing(str(tiny_vit))
    assert prep.image_size == 32
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.5, 0.5, 0.5)


def test_load_classifier_sets_head_labels_and_problem_type(tiny_vit):
    model = load_classifier(str(tiny_vit), "multi_label", ["Effusion", "Mass"])
    assert model.config.num_labels == 2
    assert model.config.id2label == {0: "Effusion", 1: "Mass"}
    assert model.config.problem_type == "multi_label_classification"
    reg = load_classifier(str(tiny_vit), "regression", ["score"])
    assert reg.config.num_labels == 1 and reg.config.problem_type == "regression"


def test_unknown_model_is_a_user_error_that_says_what_to_give(tmp_path, monkeypatch):
    from vitune.errors import UserError
    from vitune.models.aliases import load_model_config, resolve_preprocessing

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"cannot load model 'nobody/no-such-vit': .*a local save_pretrained directory"):
        resolve_preprocessing("nobody/no-such-vit")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(UserError, match="cannot load model"):
        load_model_config(str(tmp_path / "broken"))
