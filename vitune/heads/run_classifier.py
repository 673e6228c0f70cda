"""The fine-tuned run's own classifier as a head: scores from its logits, as ``vitune predict`` makes them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import numpy as np
from sklearn.utils.validation import check_is_fitted

from vitune.heads.base import Head


class RunClassifierHead(Head):
    """A fine-tuned run's classifier. Nothing is learnt; ``predict_scores`` needs the run's ``logits``."""

    def __init__(self, task: str = "multi_label", label_range: Sequence[float] | None = None,
                 regression_loss: str = "mse"):
        self._keep_params(locals())

    @classmethod
    def of_model_config(cls, task: str, config) -> "RunClassifierHead":
        """The head of a run whose model config is ``config`` (regression range and loss from it)."""
        return cls(task, getattr(config, "vitune_label_range", None), getattr(config, "vitune_regression_loss", "mse"))

    def fit(self, X, y) -> "RunClassifierHead":
        """Record shapes only (the classifier was trained with the backbone)."""
        self._validate_fit(X, y)
        self.backend_ = "run"
        return self

    def predict_scores(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """The task's scores of the run's logits."""
        check_is_fitted(self, "n_outputs_")
        if logits is None:
            raise ValueError("the run classifier head needs the run's logits for these images")
        config = SimpleNamespace(vitune_label_range=self.label_range, vitune_regression_loss=self.regression_loss)
        return self._task.scores(logits, config)
