"""RUN_DIR as read back by evaluate, predict, export and report.

A RUN_DIR made by ``vitune train`` holds ``model/`` (``save_pretrained`` classifier plus its image
processor), ``metrics.json``, ``plots/``, ``config.yaml`` (whose ``data`` is the DATASET_DIR) and,
after ``vitune evaluate``, ``thresholds.json`` (per-label decision thresholds tuned on validation).
"""

from __future__ import annotations

import json
import logging
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import yaml

from vitune.errors import UserError
from vitune.inference import batched_logits, logits_to_scores, resolve_device, task_of
from vitune.models import Preprocessing, resolve_preprocessing

log = logging.getLogger(__name__)

MODEL_DIR = "model"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
THRESHOLDS_FILE = "thresholds.json"


def run_model_dir(model: str | Path) -> Path | None:
    """``RUN_DIR/model`` when ``model`` is a RUN_DIR made by ``vitune train``, else None."""
    candidate = Path(model).expanduser() / MODEL_DIR
    return candidate if (candidate / "config.json").is_file() else None


def model_dir(run_dir: Path | str) -> Path:
    """``RUN_DIR/model``, or a clear error when ``run_dir`` is not a trained run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"RUN_DIR {run_dir} does not exist: give the --out folder of `vitune train`")
    path = run_model_dir(run_dir)
    if path is None:
        raise UserError(
            f"{run_dir} is not a vitune run (no {MODEL_DIR}/config.json): "
            "give the --out folder of `vitune train`"
        )
    return path


class Run:
    """A RUN_DIR's model: config, preprocessing, task and label names at once, weights on first use."""

    def __init__(self, run_dir: Path | str, device: torch.device | str | None = None):
        from transformers import AutoConfig

        self.run_dir = Path(run_dir)
        self.path = model_dir(run_dir)
        try:
            self.config = AutoConfig.from_pretrained(self.path)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the model config in {self.path}: {exc}".splitlines()[0]) from exc
        self.task = task_of(self.config)
        self.labels = [str(self.config.id2label[i]) for i in sorted(self.config.id2label)]
        self.prep: Preprocessing = resolve_preprocessing(str(self.path))
        self.device = resolve_device(device)

    @cached_property
    def model(self) -> torch.nn.Module:
        """The classifier (safetensors only), float32 in eval mode on ``device``."""
        from transformers import AutoModelForImageClassification
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a per-tensor loading bar is noise for one local checkpoint
        try:
            model = AutoModelForImageClassification.from_pretrained(self.path, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the model in {self.path}: {exc}".splitlines()[0]) from exc
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        return model.float().eval().to(self.device)

    def logits(self, batches: Iterable[np.ndarray]) -> np.ndarray:
        """Logits ``[N, K]`` over uint8 pixel batches."""
        return batched_logits(self.model, batches, self.prep, self.device)

    def scores(self, batches: Iterable[np.ndarray]) -> np.ndarray:
        """Probabilities (classification) or target-unit predictions (regression) over uint8 batches."""
        return self.logits_to_scores(self.logits(batches))

    def logits_to_scores(self, logits: np.ndarray) -> np.ndarray:
        """This run's logits -> scores (sigmoid, softmax or unscaled regression output)."""
        return logits_to_scores(self.task, logits, self.config)


def load_run(run_dir: Path | str, device: torch.device | str | None = None) -> Run:
    """Open ``RUN_DIR/model`` with the preprocessing it was trained with (weights load on first use)."""
    return Run(run_dir, device)


def read_config(run_dir: Path | str) -> dict:
    """``RUN_DIR/config.yaml`` as a dict (empty when absent)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return {}
    values = yaml.safe_load(path.read_text()) or {}
    return values if isinstance(values, dict) else {}


def dataset_dir_of(run_dir: Path | str, data: Path | str | None = None) -> Path:
    """The DATASET_DIR to use: ``data`` when given, else the one the run was trained on."""
    if data is not None:
        return Path(data)
    recorded = read_config(run_dir).get("data")
    if not recorded:
        raise UserError(f"{run_dir}/{CONFIG_FILE} names no dataset: pass --data DATASET_DIR")
    if not Path(recorded).exists():
        raise UserError(
            f"the run's dataset {recorded} (from {CONFIG_FILE}) does not exist here: pass --data DATASET_DIR"
        )
    return Path(recorded)


def save_thresholds(run_dir: Path | str, thresholds: dict[str, float], details: dict) -> Path:
    """Write ``RUN_DIR/thresholds.json``: ``{"thresholds": {label: t}, ...details}``."""
    path = Path(run_dir) / THRESHOLDS_FILE
    path.write_text(json.dumps({"thresholds": thresholds, **details}, indent=2) + "\n")
    return path


def load_thresholds(run_dir: Path | str, labels: list[str]) -> np.ndarray | None:
    """Per-label thresholds from ``RUN_DIR/thresholds.json`` in ``labels`` order, or None when absent."""
    path = Path(run_dir) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text()).get("thresholds", {})
    missing = [name for name in labels if name not in saved]
    if missing:
        raise UserError(f"{path} has no threshold for {', '.join(missing)}: run `vitune evaluate` again")
    return np.array([float(saved[name]) for name in labels])
