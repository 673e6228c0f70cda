"""What the page and the API share: the run's scorer behind a micro-batcher, and the answer for one image.

The scores come from :func:`vitune.inference.predict.make_scorer` over pixels decoded by
:func:`vitune.data.images.decode_image`, the code path of ``vitune predict``, so a served image
gets the scores ``vitune predict`` writes for the same file. Decisions follow predict too: the
tuned ``thresholds.json`` of ``vitune evaluate`` for multi-label (0.5 without it), the most
probable class for single-label; regression answers a value. Where the run stored
out-of-distribution statistics, each answer says whether the image is unlike the training data
(``"out_of_distribution"``) and how far it is (``"ood_distance"``), from the same forward pass.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitune.config import ServeConfig
from vitune.data.images import decode_image
from vitune.inference.predict import Scorer, ScoredRow, make_scorer
from vitune.models.onnx import TORCH
from vitune.serve.batching import MicroBatcher

DEFAULT_CUTOFF = 0.5


@dataclass
class Prediction:
    """One image's answer: its scores and the decisions taken on them."""

    file: str
    scores: dict[str, float]  # per label (regression: the one output's value)
    predicted: list[str]
    value: float | None = None  # regression only
    tta: str = "none"  # the --tta views the scores are averaged over
    out_of_distribution: bool | None = None  # None: the run has no out-of-distribution statistics
    ood_distance: float | None = None

    def response(self, **extra) -> dict:
        """The JSON body of ``POST /v1/predict``; each keyword adds a field (``peaks=...``)."""
        body: dict = {"file": self.file, "scores": self.scores}
        if self.value is None:
            body["predicted"] = self.predicted
        else:
            body["value"] = self.value
        body["tta"] = self.tta
        if self.out_of_distribution is not None:
            body["out_of_distribution"] = self.out_of_distribution
            body["ood_distance"] = self.ood_distance
        return {**body, **extra}


class ServedModel:
    """A RUN_DIR's model (or one of its heads) ready to answer single images, micro-batched."""

    def __init__(self, scorer: Scorer, max_batch: int, name: str, head: str, backend: str = TORCH):
        self.scorer = scorer
        self.name, self.head, self.backend = name, head, backend
        self.batcher = MicroBatcher(self._score_rows, max_batch)
        tuned = scorer.thresholds
        self.tuned_thresholds = tuned is not None
        self.cutoffs = None
        if scorer.task.tunes_thresholds:
            self.cutoffs = np.asarray(tuned if tuned is not None else np.full(len(scorer.labels), DEFAULT_CUTOFF))

    @classmethod
    def from_config(cls, config: ServeConfig) -> "ServedModel":
        """Load the run and head named by ``config`` (the weights are read now, not at the first request)."""
        scorer = make_scorer(config.run, config.head, config.heads_dir, config.device, config.backend, config.tta)
        served = cls(scorer, config.max_batch, Path(config.run).resolve().name, config.head, config.backend)
        served.warm_up()
        return served

    @property
    def labels(self) -> list[str]:
        """The model's output names in order."""
        return self.scorer.labels

    @property
    def ood_threshold(self) -> float | None:
        """The distance over which an image is flagged as unlike the training data (None: no statistics)."""
        return None if self.scorer.ood is None else self.scorer.ood.statistics.threshold

    @property
    def is_classification(self) -> bool:
        """Whether the answers are per-label probabilities (else a regression value)."""
        return self.scorer.task.is_classification

    def _score_rows(self, pixels: np.ndarray) -> list[ScoredRow]:
        return self.scorer.score_batch(pixels).rows()

    def warm_up(self) -> None:
        """One forward pass on a blank image, so the first request does not pay for loading the weights."""
        size = self.scorer.image_size
        self.scorer.score_batch(np.zeros((1, 3, size, size), dtype=np.uint8))

    def decode(self, data: bytes) -> np.ndarray:
        """An upload's bytes -> uint8 ``[3, S, S]`` as ``vitune predict`` decodes a file (raises ``BadImage``)."""
        return decode_image(data, self.scorer.image_size)

    async def predict(self, file: str, data: bytes) -> Prediction:
        """Decode (in a thread) and score (micro-batched) one upload; ``BadImage`` says why it is no image."""
        pixels = await asyncio.to_thread(self.decode, data)
        row = await self.batcher.submit(pixels)
        prediction = self.prediction(file, row.scores)
        prediction.out_of_distribution, prediction.ood_distance = row.ood, row.ood_distance
        return prediction

    def prediction(self, file: str, scores: np.ndarray) -> Prediction:
        """The answer for one image's score row (without the out-of-distribution flag: :meth:`predict` adds it)."""
        if not self.is_classification:
            value = float(scores)
            return Prediction(file, {self.labels[0]: value}, [], value, self.scorer.tta)
        task = self.scorer.task
        cutoffs = self.cutoffs if self.cutoffs is not None else DEFAULT_CUTOFF  # single-label: unused (argmax)
        decided = task.hard_predictions(scores[None, :], cutoffs)[0]
        if task.multi_output:
            predicted = [label for label, on in zip(self.labels, decided) if on]
        else:
            predicted = [self.labels[int(decided)]]
        return Prediction(file, {label: float(p) for label, p in zip(self.labels, scores)}, predicted, tta=self.scorer.tta)
