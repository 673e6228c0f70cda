"""`vitune pretrain`: an MAE pre-trained on a plain folder, its encoder the start of `vitune train`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import TINY_SIZE
from dicom_files import write_dicom
from PIL import Image
from sample_images import bomb_png
from tiny_run import run_cli

from vitune.config import PretrainConfig, ReportConfig, TrainConfig
from vitune.data.dataset_dir import UNLABELED, DatasetInfo
from vitune.data.synthetic import make_chestxray_like
from vitune.errors import UserError
from vitune.evaluation.report import build_report
from vitune.models.aliases import resolve_preprocessing
from vitune.models.families import VIT, family_of
from vitune.models.run import load_run
from vitune.storage.layout import RunDir
from vitune.training.fine_tune import build_trainer
from vitune.training.pretrain import build_mae, mae_start, pretrain, reconstructions

DICOMS = 4
DAMAGED = {"empty.png": "empty", "truncated.png": "truncated", "bomb.png": "bomb", "scans/broken.dcm": "dicom"}
# a run that learns within seconds: pixel loss (not normalised), half the patches masked, a one-block decoder
FAST = {"epochs": 3, "batch_size": 16, "lr": 2e-3, "mask_ratio": 0.5, "norm_pix_loss": False, "decoder_width": 32,
        "decoder_depth": 1, "val_fraction": 0.1, "workers": 1}


def write_archive(root: Path) -> int:
    """A plain folder of unlabeled X-ray-like PNGs and DICOMs in sub-folders, and damaged files; returns the good ones."""
    release = make_chestxray_like(root.parent / "release", n_patients=25, image_size=TINY_SIZE)
    shutil.copytree(release / "images", root / "pngs")
    rng = np.random.default_rng(0)
    for index in range(DICOMS):
        write_dicom(root / "scans" / f"{index}.dcm", rng.integers(0, 4096, (TINY_SIZE, TINY_SIZE)))
    (root / "empty.png").write_bytes(b"")
    noise = root / "noise.png"
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), "L").save(noise)
    (root / "truncated.png").write_bytes(noise.read_bytes()[:100])
    noise.unlink()
    bomb_png(root / "bomb.png")
    (root / "scans" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    return len(list((root / "pngs").iterdir())) + DICOMS


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("archive") / "xrays"
    return root, write_archive(root)


@pytest.fixture(scope="module")
def pretrained(archive, tiny_vit, tmp_path_factory) -> Path:
    """A RUN_DIR of `vitune pretrain` on the archive, started from the tiny ViT's encoder."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    pretrain(PretrainConfig(data=str(archive[0]), model=str(tiny_vit), out=str(out), **FAST))
    return out


def test_pretraining_on_a_plain_folder_lowers_the_reconstruction_loss(pretrained):
    run = RunDir(pretrained)
    document = json.loads(run.metrics.read_text())
    history = document["history"]
    assert [entry["epoch"] for entry in history] == [1.0, 2.0, 3.0]
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["eval_loss"] < history[0]["eval_loss"]
    assert document["metrics"]["reconstruction_loss"] == pytest.approx(history[-1]["eval_loss"], rel=1e-5)
    assert document["task"] == "masked_image_modeling" and document["pretraining"]["start"] == "encoder"
    assert {path.name for path in run.plots.iterdir()} == {"loss.png", "lr.png", "reconstructions.png"}
    assert transformers.AutoConfig.from_pretrained(run.mae).mask_ratio == 0.5
    assert family_of(transformers.AutoConfig.from_pretrained(run.model)) is VIT
    with pytest.raises(UserError, match="holds a pre-trained encoder .* fine-tune it first with `vitune train --model"):
        load_run(pretrained)  # predict, evaluate, serve: a classifier is needed


def test_the_report_shows_the_pre_training_and_the_encoder_has_a_card(pretrained):
    run = RunDir(pretrained)
    page = build_report(ReportConfig(run=str(pretrained))).read_text()
    titles = re.findall(r'<section id="[^"]+"><h2>([^<]+)</h2>', page)
    assert titles == ["Data", "Training", "Reconstructions", "Configuration"]
    document = json.loads(run.metrics.read_text())
    details = document["pretraining"]
    assert f"<tr><td>train</td><td>{details['train_images']}</td></tr>" in page
    assert f"<b>Skipped while reading:</b> {len(DAMAGED)} file(s)" in page
    assert "empty.png" in page and "images without labels" in page
    assert page.count("data:image/png;base64,") == 3  # loss, learning rate, reconstructions
    table = re.search(r'id="reconstructions".*?(<table>.*?</table>)', page, flags=re.S).group(1)
    settings = dict(zip(re.findall(r"<th>([^<]+)</th>", table), re.findall(r"<td>([^<]+)</td>", table)))
    assert settings["mask_ratio"] == "0.5000" and settings["norm_pix_loss"] == "False"
    assert settings["decoder_depth"] == "1" and settings["start"] == "encoder"
    assert "vitune pretrain --config" in page and "Where the model looks" not in page
    card = (run.model / "README.md").read_text()
    assert "pipeline_tag: image-feature-extraction" in card and "It has no classifier" in card
    assert f"{details['train_images']} images at {TINY_SIZE} px" in card
    assert f"skipped as unreadable" in card and f"{len(DAMAGED)} skipped" in card
    assert f"--model {pretrained} --out RUN_DIR --pooling mean" in card


def test_the_damaged_files_are_skipped_with_their_reason_and_dicoms_kept(pretrained, archive):
    document = json.loads(RunDir(pretrained).metrics.read_text())
    details = document["pretraining"]
    skipped = {row["file"]: row["reason"] for row in details["skipped"]}
    assert set(skipped) == set(DAMAGED)
    for file, word in DAMAGED.items():
        assert word in skipped[file].lower() or "unreadable" in skipped[file]
    assert details["train_images"] + details["held_back_images"] == archive[1]
    info = DatasetInfo.load(RunDir(pretrained).data)
    assert info.task == UNLABELED and info.labels == [] and info.image_size == TINY_SIZE


def test_vitune_train_starts_from_exactly_the_pre_trained_encoder(pretrained, dataset_dir_factory, tmp_path):
    encoder = transformers.ViTMAEForPreTraining.from_pretrained(RunDir(pretrained).mae).vit.state_dict()
    data = dataset_dir_factory()
    for pooling, left_out in ((None, set()), ("mean", {"layernorm.weight", "layernorm.bias"})):
        trainer = build_trainer(TrainConfig(data=str(data), model=str(pretrained), out=str(tmp_path / str(pooling)),
                                            pooling=pooling))
        weights = trainer.model.vit.state_dict()
        assert set(encoder) - set(weights) == left_out  # mean pooling normalises the pooled tokens instead
        assert all(torch.equal(weights[name], encoder[name]) for name in encoder if name not in left_out)
    assert type(trainer.model).__name__ == "MeanPooledViTForImageClassification"


def test_reconstructions_keep_the_visible_patches_as_they_were(pretrained):
    run = RunDir(pretrained)
    mae = transformers.ViTMAEForPreTraining.from_pretrained(run.mae).eval()
    prep = resolve_preprocessing(str(run.model))
    pixels = np.random.default_rng(1).integers(0, 256, (2, 3, TINY_SIZE, TINY_SIZE), dtype=np.uint8)
    originals, masked, rebuilt = reconstructions(mae, pixels, prep)
    assert originals.shape == masked.shape == rebuilt.shape == (2, TINY_SIZE, TINY_SIZE, 3)
    assert originals == pytest.approx(pixels.transpose(0, 2, 3, 1) / 255.0, abs=1e-5)
    visible = masked != 0.5  # a masked patch shows the normalisation's mean, 0.5 for the tiny ViT
    assert 0.3 < visible.mean() < 0.7  # half the patches masked
    assert rebuilt[visible] == pytest.approx(originals[visible], abs=1e-5)
    assert not np.allclose(rebuilt[~visible], originals[~visible], atol=1e-3)


def test_where_the_weights_start(pretrained, tiny_vit, tmp_path):
    run = RunDir(pretrained)
    continued = mae_start(PretrainConfig(data="d", model=str(run.mae), out="o", mask_ratio=0.9), None)
    assert continued.kind == "continued" and continued.config.mask_ratio == 0.9
    assert continued.config.decoder_hidden_size == 32 and continued.config.norm_pix_loss  # its decoder, this recipe
    saved = transformers.ViTMAEForPreTraining.from_pretrained(run.mae).state_dict()
    loaded = build_mae(continued).state_dict()
    assert all(torch.equal(loaded[name], saved[name]) for name in saved)
    with pytest.raises(UserError, match="--decoder-width 64: .* continues \\(--decoder-width 32\\)"):
        mae_start(PretrainConfig(data="d", model=str(run.mae), out="o", decoder_width=64), None)

    config_only = tmp_path / "config"
    transformers.AutoConfig.from_pretrained(tiny_vit).save_pretrained(config_only)
    random = mae_start(PretrainConfig(data="d", model=str(config_only), out="o", decoder_depth=2), 16)
    assert random.kind == "random" and random.config.image_size == 16 and random.prep.image_size == 16
    assert (random.config.decoder_num_hidden_layers, random.config.decoder_hidden_size) == (2, 512)
    with pytest.raises(UserError, match="the images are 16px but .* takes 32px"):
        mae_start(PretrainConfig(data="d", model=str(tiny_vit), out="o"), 16)


def test_the_command_line_refuses_bad_settings_in_one_line(monkeypatch, capsys, tmp_path, archive):
    swin = tmp_path / "swin"
    transformers.SwinConfig(image_size=32).save_pretrained(swin)
    for flags, message in ((["--mask-ratio", "1.5"], "--mask-ratio 1.5 is the share of patches masked"),
                           (["--crop-scale", "0.9", "0.5"], "--crop-scale 0.9 0.5: give the least"),
                           (["--decoder-width", "100"], "--decoder-width 100: give a multiple of 32"),
                           (["--model", str(swin)], "is a Swin model: `vitune pretrain` starts from vit, vit_mae")):
        arguments = ["pretrain", "--data", str(archive[0]), "--model", str(tmp_path), "--out", str(tmp_path / "o")]
        code, _, err = run_cli(monkeypatch, capsys, *arguments, *flags)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_the_command_line_pre_trains_resumes_and_reports_the_skipped_files(monkeypatch, capsys, archive, tiny_vit,
                                                                         tmp_path):
    out = tmp_path / "run"
    settings = ["--batch-size", "32", "--decoder-width", "32", "--decoder-depth", "1", "--no-norm-pix-loss"]
    arguments = ["pretrain", "--data", str(archive[0]), "--model", str(tiny_vit), "--out", str(out), *settings]
    code, out_text, err = run_cli(monkeypatch, capsys, *arguments, "--epochs", "1")
    assert code == 0, err
    assert f"skipped {len(DAMAGED)}: " in err and "empty.png" in err
    assert f"{out}: " in out_text and f"vitune train --model {out} --pooling mean" in out_text
    code, _, err = run_cli(monkeypatch, capsys, *arguments, "--epochs", "2")
    assert code == 2 and "add --resume to continue it" in err
    code, _, err = run_cli(monkeypatch, capsys, *arguments, "--epochs", "2", "--resume")
    assert code == 0, err
    history = json.loads(RunDir(out).metrics.read_text())["history"]
    assert [entry["epoch"] for entry in history] == [1.0, 2.0]
