"""``vitune heads``: fit heads on a frozen backbone's embeddings and compare them on validation.

The recipe: embed train and validation once (cached), build the heads of the dataset's task with
:func:`vitune.heads.create_heads`, fit them on train, score them on validation, save them
(:mod:`vitune.heads.storage`) and write ``heads.json``. :func:`predict_with_heads` is the way back:
saved heads applied to new images.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from vitune.config import HeadsConfig
from vitune.data.dataset_dir import load_dataset_dir, require_image_size, require_split
from vitune.errors import UserError
from vitune.heads.base import Head
from vitune.heads.ensemble import EnsembleHead
from vitune.heads.registry import ENSEMBLE_MEMBERS, create_heads
from vitune.heads.storage import head_temperature, load_heads, read_heads_config, save_heads
from vitune.heads.svm import SVMHead
from vitune.models.embeddings import extract_embeddings
from vitune.models.encoder import Encoder
from vitune.models.onnx import TORCH, use_backend
from vitune.models.ood import fit_ood, training_sample
from vitune.models.run import open_model
from vitune.storage.atomic import remove_stale_temp_files, write_atomic
from vitune.storage.layout import HeadsDir, RunDir
from vitune.storage.lock import OutputLock
from vitune.tasks import Task, get_task
from vitune.tasks.calibration import calibrated_probabilities, fitted_calibration, probability_logits

log = logging.getLogger(__name__)

REPORT_SPLIT = "validation"


@dataclass
class HeadsResult:
    """What ``vitune heads`` measured: the contents of ``heads.json`` and where it is."""

    out: Path
    embedding: dict
    heads: dict[str, dict]
    task: str
    split: str
    num_samples: int
    main_metric: str
    model: str

    def to_json(self) -> dict:
        """The ``heads.json`` document."""
        return {"embedding": self.embedding, "heads": self.heads, "task": self.task, "split": self.split,
                "num_samples": self.num_samples, "main_metric": self.main_metric, "model": self.model}


def split_targets(dataset_dir: Path | str, split: str) -> np.ndarray:
    """The ``labels`` column of a DATASET_DIR split as a numpy array."""
    ds, _ = load_dataset_dir(dataset_dir)
    part = require_split(ds, split, dataset_dir)
    return np.asarray(part.with_format("numpy", columns=["labels"])[:]["labels"])


def _round(value):
    return None if value is None else round(float(value), 6)


def _score_head(name: str, head: Head, train, val, y_train, y_val, info,
                fit_seconds: dict) -> tuple[dict, np.ndarray]:
    """Fit ``head`` on train, score it on validation: its ``heads.json`` entry and its validation scores."""
    start = time.perf_counter()
    head.fit(train.values, y_train)
    seconds = time.perf_counter() - start
    if isinstance(head, EnsembleHead):  # its members were fitted just before
        seconds += sum(fit_seconds[m] for m in ENSEMBLE_MEMBERS)
    fit_seconds[name] = seconds
    start = time.perf_counter()
    scores = head.predict_scores(val.values, val.logits)
    predict_seconds = time.perf_counter() - start
    result = get_task(info.task).metrics(y_val, scores, info.labels)
    entry = {"backend": head.backend_, "fit_seconds": round(seconds, 4), "predict_seconds": round(predict_seconds, 4),
             "metrics": {k: _round(v) for k, v in result.metrics.items()}, "per_label": result.per_label}
    if isinstance(head, SVMHead):
        entry["params"] = {"C": head.C_, "gamma": head.gamma_, "basis_size": len(head.basis_)}
    return entry, scores


def head_calibration(task: Task, y_val: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict | None:
    """The head's temperature fitted on its validation probabilities, with the validation ECE before and after
    (None for regression).

    As ``vitune train`` does for the model: one temperature per label (multi-label) or one (single-label),
    by NLL. A head outputs probabilities, so the temperature divides their logits (:func:`probability_logits`).
    """
    return fitted_calibration(task, probability_logits(task, scores), y_val, labels)


def fit_heads(config: HeadsConfig) -> HeadsResult:
    """Fit heads on the train split's embeddings, evaluate on validation, save them and ``heads.json``.

    The heads go into ``config.out``, else ``RUN_DIR/heads`` when ``config.model`` is a run. One process at a
    time writes a heads directory (a second is refused).
    """
    out = heads_dir(config)
    with OutputLock(out):
        remove_stale_temp_files(out)
        return _fit_heads(config, HeadsDir(out))


def heads_dir(config: HeadsConfig) -> Path:
    """Where the heads go: ``--out``, else ``RUN_DIR/heads`` of a run (a checkpoint needs ``--out``)."""
    if config.out is not None:
        return Path(config.out)
    if not RunDir(config.model).is_run():
        raise UserError(f"{config.model} is not a RUN_DIR: give --out DIR for the heads")
    return RunDir(config.model).heads


def _fit_heads(config: HeadsConfig, where: HeadsDir) -> HeadsResult:
    encoder = open_model(config.model, device="cpu" if config.backend != TORCH else None)
    export_dir = encoder.dir.encoder_export(config.pooling) if encoder.is_run else where.encoder_export(config.pooling)
    use_backend(encoder, config.pooling, config.backend, export_dir)
    _, info = load_dataset_dir(config.data)
    if encoder.is_run:
        encoder.check_dataset(info, config.data)  # task, labels and image size
    else:
        require_image_size(info, config.data, encoder.preprocessing.image_size, encoder.name)
    cache_dir = Path(config.cache_dir) if config.cache_dir is not None else where.embeddings
    train, val = (extract_embeddings(encoder, config.data, s, config.pooling, config.batch_size, cache_dir)
                  for s in ("train", REPORT_SPLIT))
    y_train, y_val = split_targets(config.data, "train"), split_targets(config.data, REPORT_SPLIT)
    task = get_task(info.task)
    one_class_per_image = task.is_classification and not task.multi_output
    fitted = create_heads(config.heads, info.task, C=config.C, random_state=config.seed,
                          n_classes=len(info.labels) if one_class_per_image else None,
                          run_config=encoder.config if encoder.is_run else None)
    entries, fit_seconds, temperatures = {}, {}, {}
    for name, head in fitted.items():
        entries[name], val_scores = _score_head(name, head, train, val, y_train, y_val, info, fit_seconds)
        log.info("%s head: %s=%s", name, task.main_metric, entries[name]["metrics"][task.main_metric])
        calibration = None if config.no_calibrate else head_calibration(task, y_val, val_scores, info.labels)
        if calibration is not None:
            temperatures[name] = calibration["temperature"]
            entries[name]["calibration"] = calibration
    result = HeadsResult(
        out=where.root,
        embedding={"dim": train.dim, "seconds": round(train.seconds + val.seconds, 4),
                   "cached": train.cached and val.cached, "pooling": config.pooling, "backend": config.backend},
        heads={name: entries[name] for name in config.heads},
        task=info.task, split=REPORT_SPLIT, num_samples=len(y_val), main_metric=task.main_metric,
        model=config.model,
    )
    model_path = Path(config.model)
    save_heads(where.root, fitted, {"task": info.task, "labels": list(info.labels), "pooling": config.pooling,
                                    "model": str(model_path.resolve()) if model_path.exists() else config.model,
                                    "model_identity": encoder.identity}, temperatures)
    save_ood_statistics(where, train.values, val.values, config.pooling)
    write_atomic(where.report, json.dumps(result.to_json(), indent=2) + "\n")
    return result


def save_ood_statistics(where: HeadsDir, train_values: np.ndarray, validation_values: np.ndarray,
                        pooling: str) -> None:
    """``ood.safetensors`` of the heads' own embeddings (already computed: no extra pass), on at most
    :data:`vitune.models.ood.MAX_TRAIN_ROWS` training rows."""
    rows = training_sample(len(train_values))
    statistics = fit_ood(train_values[rows], validation_values, f"heads embedding ({pooling})",
                         train_rows=len(train_values))
    if statistics is None:
        where.ood.unlink(missing_ok=True)
        return
    statistics.save(where.ood)


def _check_heads_fit(encoder: Encoder, config: dict, heads_dir: Path | str) -> None:
    """A run's heads must have been fitted for its task and labels; a changed model is only a warning."""
    if encoder.is_run:
        task = get_task(config["task"])
        if (task.name, task.output_names(config["labels"])) != (encoder.task.name, encoder.labels):
            raise UserError(f"the heads in {heads_dir} are {config['task']} {config['labels']}, but {encoder.name} is "
                            f"{encoder.task.name} {encoder.labels}: give the --heads-dir fitted on this run")
    if encoder.identity != config.get("model_identity"):  # same labels; the files were touched or retrained
        log.warning("the model changed since these heads were fitted; run `vitune heads` again")


def heads_forward(heads_dir: Path | str, head: str = "ensemble", model: str | Path | Encoder | None = None,
                  calibrate: bool = True) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A function giving the scores of saved head ``head`` for one uint8 pixel batch ``[B, 3, S, S]`` and the
    embeddings ``[B, D]`` they were computed from (files read once).

    The images are embedded with ``model`` (an opened :class:`Encoder` or :class:`vitune.models.run.Run`,
    or a path; default: the MODEL the heads were fitted on, e.g. the RUN_DIR) and the saved pooling;
    the run's logits come from the same forward pass. With ``calibrate`` the head's probabilities are
    scaled by its temperature fitted on validation (when ``vitune heads`` stored one).
    """
    config = read_heads_config(heads_dir)
    if head not in config["heads"]:
        raise UserError(f"no {head!r} head in {heads_dir}: it has {', '.join(config['heads'])}")
    model = model if model is not None else config["model"]
    encoder = model if isinstance(model, Encoder) else open_model(model)
    _check_heads_fit(encoder, config, heads_dir)
    fitted = load_heads(heads_dir)[head]
    task = get_task(config["task"])
    temperature = head_temperature(config, head) if calibrate else None

    def forward(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embeddings, logits = encoder.encode(pixels, config["pooling"])
        embeddings = embeddings.astype(np.float32)
        return calibrated_probabilities(task, fitted.predict_scores(embeddings, logits), temperature), embeddings

    return forward


def heads_scorer(heads_dir: Path | str, head: str = "ensemble", model: str | Path | Encoder | None = None,
                 calibrate: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """A function scoring one uint8 pixel batch ``[B, 3, S, S]`` with saved head ``head`` (see :func:`heads_forward`)."""
    forward = heads_forward(heads_dir, head, model, calibrate)

    def score(pixels: np.ndarray) -> np.ndarray:
        return forward(pixels)[0]

    return score


def predict_with_heads(heads_dir: Path | str, batches: Iterable[np.ndarray], head: str = "ensemble",
                       model: str | Path | Encoder | None = None) -> np.ndarray:
    """Scores of saved head ``head`` over uint8 pixel batches, concatenated (see :func:`heads_scorer`)."""
    score = heads_scorer(heads_dir, head, model)
    return np.concatenate([score(batch) for batch in batches])
