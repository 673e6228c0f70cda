"""The base of every head: a scikit-learn estimator over embeddings, shaped by its task.

A head takes embeddings ``X [N, D]`` and DATASET_DIR targets ``y`` (multi_label: 0/1 matrix
``[N, L]``; single_label: class ids; regression: values). ``predict_scores(X, logits=None)``
gives what :meth:`vitune.tasks.base.Task.scores` gives for a fine-tuned model: probabilities for
classification and predictions in target units for regression. Hyper-parameters live only in
``__init__``, ``fit`` returns ``self`` and fitted state ends with ``_``; ``get_state`` /
``from_state`` turn that state into JSON values and arrays (safetensors) and back.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.preprocessing import StandardScaler
from sklearn.utils import ClassifierTags, RegressorTags, TargetTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from vitune.tasks import SINGLE_LABEL, Task, get_task

SCALER_STATE = ("mean_", "scale_")  # a fitted StandardScaler, stored as its two arrays


def jsonable(value):
    """A numpy scalar or tuple as plain JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def scaler_from_arrays(mean: np.ndarray, scale: np.ndarray) -> StandardScaler:
    """A fitted ``StandardScaler`` rebuilt from its stored ``mean_`` and ``scale_``."""
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_ = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = len(scaler.mean_)
    scaler.n_samples_seen_ = 0
    return scaler


def target_scaler(y: np.ndarray) -> tuple[float, float]:
    """``(mean, scale)`` that standardise a regression target (scale 1 for a constant one)."""
    scaler = StandardScaler().fit(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    return float(scaler.mean_[0]), float(scaler.scale_[0])


class Head(BaseEstimator):
    """Shared behaviour: task-aware validation, standardisation, scores, predictions and state."""

    _array_state: tuple[str, ...] = ()  # fitted arrays, saved to safetensors
    _value_state: tuple[str, ...] = ()  # fitted scalars, saved to JSON
    _base_state = ("n_features_in_", "n_outputs_", "backend_")

    def _keep_params(self, params: dict) -> None:
        """Store the ``__init__`` arguments unchanged, as scikit-learn expects; call it with ``locals()``."""
        for name, value in params.items():
            if name != "self":
                setattr(self, name, value)

    @property
    def _task(self) -> Task:
        """The :class:`vitune.tasks.base.Task` named by the ``task`` parameter."""
        return get_task(self.task)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        task = get_task(getattr(self, "task", SINGLE_LABEL.name))
        tags.target_tags = TargetTags(required=True, multi_output=task.multi_output,
                                      single_output=not task.multi_output)
        if task.is_classification:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_label=task.multi_output)
        else:
            tags.estimator_type, tags.regressor_tags = "regressor", RegressorTags()
        return tags

    def _validate_fit(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        """Validate ``X``/``y`` for the task; sets ``n_features_in_`` and ``n_outputs_``.

        Multi-label targets may hold NaN (unknown); scikit-learn's checks refuse NaN, so they see
        the known cells only and the NaN is kept for the heads, which mask it per label.
        """
        task = self._task
        unknown = np.isnan(np.asarray(y, dtype=np.float64)) if task.multi_output else None
        if unknown is not None:
            y = np.where(unknown, 0.0, np.asarray(y, dtype=np.float64))
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=task.multi_output, y_numeric=True)
        if unknown is not None:
            y = np.where(unknown.reshape(np.shape(y)), np.nan, y)
        y, self.n_outputs_ = task.check_targets(y, getattr(self, "n_classes", None))
        return X, y

    def _validate_predict(self, X) -> np.ndarray:
        check_is_fitted(self, "n_outputs_")
        return validate_data(self, X, dtype=np.float64, reset=False)

    def _fit_scaler(self, X: np.ndarray) -> np.ndarray:
        """Fit ``scaler_`` (a ``StandardScaler``) on ``X`` and return ``X`` standardised."""
        self.scaler_ = StandardScaler().fit(X)
        return self.scaler_.transform(X)

    def _decision(self, X) -> np.ndarray:
        """Raw outputs ``[N, outputs]`` (each head implements it)."""
        raise NotImplementedError

    @available_if(lambda self: get_task(self.task).is_classification)
    def decision_function(self, X) -> np.ndarray:
        """Decision values ``[N, outputs]`` (1-D for two classes, scikit-learn's convention)."""
        d = self._decision(X)
        binary = not self._task.multi_output and d.shape[1] == 2
        return d[:, 1] - d[:, 0] if binary else d

    def predict_scores(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """Probabilities (classification) or predictions in target units (regression)."""
        return self._task.scores(self._decision(X))

    def score(self, X, y) -> float:
        """R^2 for regression, accuracy otherwise (exact-match for multi_label), as in scikit-learn."""
        from sklearn.metrics import accuracy_score, r2_score

        if self._task.is_classification:
            return float(accuracy_score(y, self.predict(X)))
        return float(r2_score(y, self.predict(X)))

    def predict(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """Class ids (single_label), 0/1 matrix at 0.5 (multi_label) or values (regression)."""
        return self._task.hard_predictions(self.predict_scores(X, logits))

    @property
    def classes_(self) -> np.ndarray:
        """Class ids of a single_label head (scikit-learn convention)."""
        check_is_fitted(self, "n_outputs_")
        return np.arange(self.n_outputs_)

    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Fitted scalars (JSON) and fitted arrays (safetensors) of this head."""
        check_is_fitted(self, "n_outputs_")
        values = {k: jsonable(getattr(self, k)) for k in self._base_state + self._value_state}
        arrays = {k: np.ascontiguousarray(getattr(self, k)) for k in self._array_state}
        if hasattr(self, "scaler_"):
            arrays.update(mean_=np.ascontiguousarray(self.scaler_.mean_), scale_=np.ascontiguousarray(self.scaler_.scale_))
        return values, arrays

    @classmethod
    def from_state(cls, params: dict, values: dict, arrays: dict[str, np.ndarray]) -> "Head":
        """Rebuild a fitted head from :meth:`get_state` output (and its ``__init__`` params)."""
        head = cls(**params)
        arrays = dict(arrays)
        if all(k in arrays for k in SCALER_STATE):
            head.scaler_ = scaler_from_arrays(arrays.pop("mean_"), arrays.pop("scale_"))
        for key, value in {**values, **arrays}.items():
            setattr(head, key, value)
        return head
