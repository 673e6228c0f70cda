"""Folder layouts: where each file of a RUN_DIR and of a heads directory lives.

:class:`RunDir` and :class:`HeadsDir` name paths (and read or write the small JSON/YAML files there);
the writers (train, heads, evaluate, report), the readers (predict, export, report) and the tests
all take the names from here. This module is light to import: the CLI builds on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from vitune.errors import UserError
from vitune.storage.atomic import write_atomic

SAMPLE_GRID = "samples.png"  # the labelled sample grid of `vitune data show`: in a DATASET_DIR, else RUN_DIR/plots


@dataclass(frozen=True)
class RunDir:
    """The paths inside one RUN_DIR (nothing is read or created by building it)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())

    model = property(lambda self: self.root / "model", doc="``model/``: the fine-tuned classifier and processor "
                                                           "(`vitune pretrain`: the pre-trained encoder).")
    mae = property(lambda self: self.root / "mae", doc="``mae/``: `vitune pretrain`'s whole masked autoencoder.")
    data = property(lambda self: self.root / "data", doc="``data/``: `vitune pretrain`'s images of a plain folder, "
                                                         "decoded once.")
    config = property(lambda self: self.root / "config.yaml", doc="``config.yaml``: the resolved TrainConfig.")
    metrics = property(lambda self: self.root / "metrics.json", doc="``metrics.json``: validation, best epoch.")
    plots = property(lambda self: self.root / "plots", doc="``plots/``: loss, lr, roc, confusion.")
    checkpoints = property(lambda self: self.root / "checkpoints", doc="``checkpoints/`` for ``--resume``.")
    thresholds = property(lambda self: self.root / "thresholds.json", doc="``thresholds.json`` from evaluate.")
    calibration = property(lambda self: self.root / "calibration.json",
                           doc="``calibration.json``: the temperatures fitted on validation (train, heads).")
    cv = property(lambda self: self.root / "cv.json", doc="``cv.json``: the folds of ``--folds K``.")
    ood = property(lambda self: self.root / "ood.safetensors",
                   doc="``ood.safetensors``: the training embeddings' statistics behind the out-of-distribution flag.")
    heads = property(lambda self: self.root / "heads", doc="``heads/``: the default heads directory.")
    report = property(lambda self: self.root / "report.html", doc="``report.html``.")
    adapter = property(lambda self: self.root / "adapter", doc="``adapter/``: the LoRA adapter alone (``--lora``).")
    card = property(lambda self: self.model / "README.md", doc="``model/README.md``: the Hub model card.")
    export = property(lambda self: self.root / "export", doc="``export/``: the ONNX models ``--backend`` runs.")
    tensorboard = property(lambda self: self.root / "tensorboard", doc="``tensorboard/``: event files.")
    mlflow = property(lambda self: self.root / "mlruns", doc="``mlruns/``: the local MLflow file store.")

    def encoder_export(self, pooling: str) -> Path:
        """``export-encoder-<pooling>/``: the encoder's ONNX graphs the heads embed with on ``--backend onnx``."""
        return self.root / f"export-encoder-{pooling}"

    def eval_dir(self, split: str) -> Path:
        """``eval/<split>/``: what ``vitune evaluate`` writes for ``split``."""
        return self.root / "eval" / split

    def eval_metrics(self, split: str) -> Path:
        """``eval/<split>/metrics_<split>.json``."""
        return self.eval_dir(split) / f"metrics_{split}.json"

    def evaluated(self) -> list[Path]:
        """Every ``eval/*/metrics_*.json`` there is, sorted."""
        return sorted((self.root / "eval").glob("*/metrics_*.json"))

    def is_run(self) -> bool:
        """Whether a trained model is there (``model/config.json``)."""
        return (self.model / "config.json").is_file()

    def is_pretraining(self) -> bool:
        """Whether `vitune pretrain` made it: ``model/`` is then an encoder to fine-tune, not a classifier."""
        return (self.mae / "config.json").is_file()

    def require(self) -> "RunDir":
        """This RUN_DIR, or a clear error when it does not exist or holds no trained model."""
        if not self.root.is_dir():
            raise UserError(f"RUN_DIR {self.root} does not exist: give the --out folder of `vitune train`")
        if not self.is_run() and self.cv.is_file():
            raise UserError(f"{self.root} is a cross-validation (--folds): give one of its folds, e.g. {self.fold(0)}")
        if not self.is_run():
            raise UserError(f"{self.root} is not a vitune run (no model/config.json): "
                            "give the --out folder of `vitune train`")
        if self.is_pretraining():
            raise UserError(f"{self.root} holds a pre-trained encoder (`vitune pretrain`), not a classifier: "
                            f"fine-tune it first with `vitune train --model {self.root}`")
        return self

    def read_config(self) -> dict:
        """``config.yaml`` as a dict (empty when absent)."""
        if not self.config.is_file():
            return {}
        values = yaml.safe_load(self.config.read_text()) or {}
        return values if isinstance(values, dict) else {}

    def dataset_dir(self, data: Path | str | None = None) -> Path:
        """The DATASET_DIR to use: ``data`` when given, else the one the run was trained on."""
        if data is not None:
            return Path(data)
        recorded = self.read_config().get("data")
        if not recorded:
            raise UserError(f"{self.config} names no dataset: pass --data DATASET_DIR")
        if not Path(recorded).exists():
            raise UserError(f"the run's dataset {recorded} (from {self.config.name}) does not exist here: "
                            "pass --data DATASET_DIR")
        return Path(recorded)

    def save_thresholds(self, thresholds: dict[str, float], details: dict) -> Path:
        """Write ``thresholds.json``: ``{"thresholds": {label: t}, ...details}``."""
        return write_atomic(self.thresholds, json.dumps({"thresholds": thresholds, **details}, indent=2) + "\n")

    def fold(self, index: int) -> Path:
        """``fold-<index>/``: one fold's RUN_DIR under ``--folds K``."""
        return self.root / f"fold-{index}"

    def folds(self) -> list[Path]:
        """The fold RUN_DIRs of a cross-validation parent, in fold order (empty for a plain run)."""
        found = [path for path in self.root.glob("fold-*") if RunDir(path).is_run()]
        return sorted(found, key=lambda path: int(path.name.removeprefix("fold-")))

    def save_temperature(self, temperature: list[float], details: dict) -> Path:
        """Write ``calibration.json``: ``{"temperature": [...], ...details}``."""
        return write_atomic(self.calibration, json.dumps({"temperature": temperature, **details}, indent=2) + "\n")

    def load_temperature(self, outputs: int) -> list[float] | None:
        """The fitted temperatures (``outputs`` of them, or one), or None when no ``calibration.json`` is there."""
        if not self.calibration.is_file():
            return None
        temperature = json.loads(self.calibration.read_text()).get("temperature")
        if not isinstance(temperature, list) or len(temperature) not in (1, outputs):
            raise UserError(f"{self.calibration} does not hold 1 or {outputs} temperatures: train the run again "
                            "or delete the file (evaluate then runs uncalibrated)")
        return [float(value) for value in temperature]

    def load_thresholds(self, labels: list[str]):
        """Per-label thresholds from ``thresholds.json`` in ``labels`` order (numpy), or None when absent."""
        import numpy as np

        if not self.thresholds.is_file():
            return None
        saved = json.loads(self.thresholds.read_text()).get("thresholds", {})
        missing = [name for name in labels if name not in saved]
        if missing:
            raise UserError(f"{self.thresholds} has no threshold for {', '.join(missing)}: run `vitune evaluate` again")
        return np.array([float(saved[name]) for name in labels])


@dataclass(frozen=True)
class HeadsDir:
    """The paths inside one heads directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda self: self.root / "heads-config.json", doc="Head classes, params and fitted scalars.")
    arrays = property(lambda self: self.root / "heads.safetensors", doc="Every fitted array.")
    report = property(lambda self: self.root / "heads.json", doc="The report of `vitune heads`.")
    embeddings = property(lambda self: self.root / "embeddings", doc="The embedding cache.")
    ood = property(lambda self: self.root / "ood.safetensors", doc="The statistics of the heads' training embeddings.")

    def encoder_export(self, pooling: str) -> Path:
        """``export-encoder-<pooling>/``: a checkpoint's ONNX encoder graphs for ``--backend onnx``."""
        return self.root / f"export-encoder-{pooling}"


@dataclass(frozen=True)
class TuneDir:
    """The paths inside the output folder of `vitune tune`."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())

    report = property(lambda self: self.root / "tune.json", doc="``tune.json``: every trial and the best one.")
    best = property(lambda self: self.root / "best.yaml", doc="``best.yaml``: the best trial's full TrainConfig.")
    plot = property(lambda self: self.root / "trials.png", doc="``trials.png``: the objective per trial.")
    trials = property(lambda self: self.root / "trials", doc="``trials/``: the trials' working folder (removed).")
    best_run = property(lambda self: self.root / "best", doc="``best/``: best.yaml's default RUN_DIR.")
