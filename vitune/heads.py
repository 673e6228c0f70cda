"""Heads on frozen backbone embeddings: SVM, logistic regression, MLP and their ensemble.

Every head is a scikit-learn style estimator (hyper-parameters only in ``__init__``, ``fit``
returns ``self``, fitted state ends with ``_``) over embeddings ``X [N, D]`` and DATASET_DIR
targets ``y`` (multi_label: 0/1 matrix ``[N, L]``; single_label: class ids; regression: values).
``predict_scores(X, logits=None)`` follows :func:`vitune.inference.logits_to_scores`:
probabilities for classification (sigmoid per label, rows summing to 1 for single_label) and
predictions in target units for regression.

- ``svm``: an RBF-kernel SVM, one output per label (one-vs-rest), one knob ``C`` (``None``: pick it
  from ``C_GRID`` by cross-validated main metric on the training split). Backend ``cuml``: exact
  ``cuml.svm.SVC``/``SVR`` per label on the GPU. Backend ``sklearn`` (CPU): scikit-learn's
  ``Nystroem`` RBF features (``n_components`` landmarks from the training rows, the exact kernel
  when the split is smaller) and one multi-output ``Ridge`` for all labels, which is the
  least-squares SVM; it matches ``SVC(kernel="rbf")`` ranking quality at a fraction of the time
  (see ``bench/heads.py``). Both end as the same kernel expansion
  ``f(x) = K(x, basis) @ dual_coef + intercept`` on standardised embeddings, with Platt sigmoids
  fitted on out-of-fold decisions for probabilities.
- ``logreg``: ``LogisticRegression`` (one per label for multi_label, multinomial for single_label),
  ``Ridge`` for regression.
- ``mlp``: the run's own fine-tuned classifier when MODEL is a RUN_DIR (scores from its logits),
  else a small torch MLP (one ReLU hidden layer, fixed seed) trained on the embeddings.
- ``ensemble``: the weighted mean of the MLP and SVM scores (equal weights by default).

Storage (``save_heads``/``load_heads``, no pickle anywhere) in a heads directory:

- ``heads.safetensors``: every fitted array, keyed ``<head>.<attribute>`` (e.g. ``svm.basis_``,
  ``svm.dual_coef_``, ``svm.mean_``, ``svm.sigmoid_a_``, ``mlp.w1_``, ``logreg.coef_``).
- ``heads-config.json``: ``{"version": 1, "task", "labels", "pooling", "model", "model_identity",
  "heads": {name: {"class", "params", "state"}}}`` where ``params`` are the ``__init__``
  arguments and ``state`` the fitted scalars (``C_``, ``gamma_``, ``backend_``, ...). An ensemble's
  ``state.members`` names the saved heads it averages.
- ``heads.json``: the report (``embedding``, ``heads.<name>.{backend, fit_seconds,
  predict_seconds, metrics, per_label, params}``, ``split``), and ``embeddings/`` the cache.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import KFold
from sklearn.utils import ClassifierTags, RegressorTags, TargetTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from vitune.data.dataset_dir import TASKS, DatasetInfo, load_dataset_dir, require_image_size, require_split
from vitune.embeddings import Encoder, check_pooling, embed_batches, extract_embeddings
from vitune.errors import UserError
from vitune.inference import logits_to_scores, task_of
from vitune.metrics import MAIN_METRIC, compute_metrics, is_better

log = logging.getLogger(__name__)

HEAD_NAMES = ("svm", "logreg", "mlp", "ensemble")
ENSEMBLE_MEMBERS = ("mlp", "svm")
C_GRID = (0.1, 1.0, 10.0, 100.0)
REPORT_SPLIT = "validation"
CONFIG_FILE = "heads-config.json"
ARRAYS_FILE = "heads.safetensors"
REPORT_FILE = "heads.json"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- numeric helpers


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z: np.ndarray) -> np.ndarray:
    exp = np.exp(z - z.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def rbf_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """``exp(-gamma * ||a_i - b_j||^2)`` in float32 (the embeddings' own precision)."""
    from sklearn.metrics.pairwise import rbf_kernel as sklearn_rbf

    return sklearn_rbf(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), gamma=gamma)


def fit_sigmoid(decisions: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Platt scaling per column: ``a, b`` with ``P(y=1) = sigmoid(a * d + b)``.

    Uses Platt's smoothed targets, so a column with one class in training still gets finite,
    sensible values (the prior) instead of a diverging slope.
    """
    from scipy.optimize import minimize

    a = np.zeros(decisions.shape[1])
    b = np.zeros(decisions.shape[1])
    for j in range(decisions.shape[1]):
        d, y = decisions[:, j].astype(np.float64), targets[:, j] > 0
        n_pos, n_neg = y.sum(), (~y).sum()
        t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

        def loss(params, d=d, t=t):
            z = params[0] * d + params[1]
            p = _sigmoid(z)
            value = np.sum(np.logaddexp(0.0, z) - t * z)
            return value, np.array([np.sum((p - t) * d), np.sum(p - t)])

        start = np.array([1.0, np.log((n_pos + 1.0) / (n_neg + 1.0))])
        a[j], b[j] = minimize(loss, start, jac=True, method="L-BFGS-B").x
    return a, b


def _standard_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-12, scale, 1.0)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def cuml_available() -> bool:
    """Whether RAPIDS cuML can be imported and a CUDA GPU is present."""
    try:
        import cuml  # noqa: F401
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# --------------------------------------------------------------------------- base class


class Head(BaseEstimator):
    """Shared behaviour: task-aware validation, scores, predictions and array/JSON state."""

    _array_state: tuple[str, ...] = ()
    _value_state: tuple[str, ...] = ()
    _base_state = ("n_features_in_", "n_outputs_", "backend_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        task = getattr(self, "task", "single_label")
        tags.target_tags = TargetTags(required=True, multi_output=task == "multi_label",
                                      single_output=task != "multi_label")
        if task == "regression":
            tags.estimator_type, tags.regressor_tags = "regressor", RegressorTags()
        else:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_label=task == "multi_label")
        return tags

    def _check_task(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")

    def _validate_fit(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        """Validate ``X``/``y`` for the task; sets ``n_features_in_`` and ``n_outputs_``."""
        self._check_task()
        multi = self.task == "multi_label"
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=multi, y_numeric=True)
        if multi:
            y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
            if not np.isin(y, (0.0, 1.0)).all():
                raise ValueError("multi_label targets must be a 0/1 matrix [n_samples, n_labels]")
            self.n_outputs_ = y.shape[1]
        elif self.task == "single_label":
            check_classification_targets(y)
            if not np.all(np.equal(np.mod(y, 1), 0)) or y.min() < 0:
                raise ValueError("single_label targets must be class ids 0..K-1")
            y = y.astype(np.int64)
            self.n_outputs_ = max(int(getattr(self, "n_classes", None) or 0), int(y.max()) + 1)
        else:
            y = np.asarray(y, dtype=np.float64)
            self.n_outputs_ = 1
        return X, y

    def _validate_predict(self, X) -> np.ndarray:
        check_is_fitted(self, "n_outputs_")
        return validate_data(self, X, dtype=np.float64, reset=False)

    def _indicator(self, y: np.ndarray) -> np.ndarray:
        """0/1 matrix ``[N, outputs]`` of classification targets."""
        if self.task == "multi_label":
            return y
        return np.eye(self.n_outputs_)[y]

    def _scores_from_decisions(self, d: np.ndarray) -> np.ndarray:
        """Linear-head convention: sigmoid / softmax / identity."""
        if self.task == "multi_label":
            return _sigmoid(d)
        if self.task == "single_label":
            return _softmax(d)
        return d[:, 0]

    def _decision(self, X) -> np.ndarray:
        """Raw outputs ``[N, outputs]`` (each head implements it)."""
        raise NotImplementedError

    @available_if(lambda self: self.task != "regression")
    def decision_function(self, X) -> np.ndarray:
        """Decision values ``[N, outputs]`` (1-D for two classes, scikit-learn's convention)."""
        d = self._decision(X)
        return d[:, 1] - d[:, 0] if self.task == "single_label" and d.shape[1] == 2 else d

    def predict_scores(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """Probabilities (classification) or predictions in target units (regression)."""
        return self._scores_from_decisions(self._decision(X))

    def score(self, X, y) -> float:
        """R^2 for regression, accuracy otherwise (exact-match for multi_label), as in scikit-learn."""
        from sklearn.metrics import accuracy_score, r2_score

        if self.task == "regression":
            return float(r2_score(y, self.predict(X)))
        return float(accuracy_score(y, self.predict(X)))

    def predict(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """Class ids (single_label), 0/1 matrix at 0.5 (multi_label) or values (regression)."""
        scores = self.predict_scores(X, logits)
        if self.task == "single_label":
            return scores.argmax(axis=1)
        if self.task == "multi_label":
            return (scores >= 0.5).astype(np.int64)
        return scores

    @property
    def classes_(self) -> np.ndarray:
        """Class ids of a single_label head (scikit-learn convention)."""
        check_is_fitted(self, "n_outputs_")
        return np.arange(self.n_outputs_)

    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Fitted scalars (JSON) and fitted arrays (safetensors) of this head."""
        check_is_fitted(self, "n_outputs_")
        values = {k: _jsonable(getattr(self, k)) for k in self._base_state + self._value_state}
        arrays = {k: np.ascontiguousarray(getattr(self, k)) for k in self._array_state}
        return values, arrays

    @classmethod
    def from_state(cls, params: dict, values: dict, arrays: dict[str, np.ndarray]) -> "Head":
        """Rebuild a fitted head from :meth:`get_state` output (and its ``__init__`` params)."""
        head = cls(**params)
        for key, value in {**values, **arrays}.items():
            setattr(head, key, value)
        return head


# --------------------------------------------------------------------------- SVM


class _NystroemRidgeSolver:
    """Least-squares SVM with scikit-learn: ``Nystroem`` RBF features + multi-output ``Ridge``.

    On Nystroem features ``phi = K_nm K_mm^-1/2`` the ridge objective ``|phi w + b - t|^2 +
    |w|^2 / (2C)`` is the kernel SVM objective with squared errors (``w = K_mm^1/2 a``), so ``C``
    means what it means for ``SVC``. All labels are solved at once; the feature map is computed
    once and shared by the cross-validation folds.
    """

    name = "sklearn"

    def __init__(self, xs: np.ndarray, targets: np.ndarray, gamma: float, n_components: int, seed: int):
        from sklearn.kernel_approximation import Nystroem

        self.feature_map = Nystroem(kernel="rbf", gamma=gamma, n_components=min(n_components, len(xs)),
                                    random_state=seed).fit(xs)
        self.features = self.feature_map.transform(xs).astype(np.float64)
        self.t = targets

    def _ridge(self, rows: np.ndarray, C: float):
        from sklearn.linear_model import Ridge

        return Ridge(alpha=1.0 / (2.0 * C)).fit(self.features[rows], self.t[rows])

    def out_of_fold(self, folds: list[np.ndarray], C: float) -> np.ndarray:
        """Decisions for every row from the model fitted without its fold."""
        d = np.zeros_like(self.t)
        everything = np.arange(len(self.t))
        for test in folds:
            model = self._ridge(np.setdiff1d(everything, test), C)
            d[test] = model.predict(self.features[test]).reshape(len(test), -1)
        return d

    def fit(self, C: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(landmark row indices, dual coefficients ``[m, outputs]``, intercepts) on all rows."""
        model = self._ridge(np.arange(len(self.t)), C)
        coef = np.asarray(model.coef_, dtype=np.float64).reshape(self.t.shape[1], -1)
        dual = self.feature_map.normalization_.T @ coef.T  # K(x, landmarks) @ dual == phi(x) @ coef.T
        return self.feature_map.component_indices_, dual, np.asarray(model.intercept_, dtype=np.float64).reshape(-1)


class _CumlSolver:
    """Exact RBF ``cuml.svm.SVC``/``SVR`` per output on the GPU, converted to a kernel expansion."""

    name = "cuml"

    def __init__(self, xs: np.ndarray, targets: np.ndarray, gamma: float, regression: bool):
        self.xs, self.t, self.gamma, self.regression = xs, targets, gamma, regression

    def _fit_one(self, rows: np.ndarray, j: int, C: float):
        from cuml.svm import SVC, SVR

        y = self.t[rows, j]
        if self.regression:
            return SVR(kernel="rbf", C=C, gamma=self.gamma, output_type="numpy").fit(self.xs[rows], y)
        if len(np.unique(y)) < 2:
            return None  # a label with one class here: constant decision
        return SVC(kernel="rbf", C=C, gamma=self.gamma, output_type="numpy").fit(self.xs[rows], (y > 0).astype(np.float32))

    def out_of_fold(self, folds: list[np.ndarray], C: float) -> np.ndarray:
        """Decisions for every row from per-output models fitted without its fold."""
        d = np.zeros_like(self.t)
        everything = np.arange(len(self.t))
        for test in folds:
            train = np.setdiff1d(everything, test)
            for j in range(self.t.shape[1]):
                model = self._fit_one(train, j, C)
                d[test, j] = np.sign(self.t[train, j].mean()) if model is None else np.asarray(
                    model.decision_function(self.xs[test])).reshape(-1)
        return d

    def fit(self, C: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Union of support vectors as basis, per-output dual coefficients and intercepts."""
        rows = np.arange(len(self.t))
        models = [self._fit_one(rows, j, C) for j in range(self.t.shape[1])]
        support = [np.asarray(m.support_, dtype=np.int64) if m is not None else np.zeros(0, np.int64) for m in models]
        basis = np.unique(np.concatenate(support))
        alpha = np.zeros((len(basis), len(models)))
        intercept = np.zeros(len(models))
        for j, (model, sv) in enumerate(zip(models, support)):
            if model is None:
                intercept[j] = np.sign(self.t[:, j].mean())
                continue
            alpha[np.searchsorted(basis, sv), j] = np.asarray(model.dual_coef_).reshape(-1)
            # The intercept is read back from the model's own decisions, whatever sign convention
            # the installed cuML stores it with; the check below guards the dual coefficients too.
            probe = sv[: min(len(sv), 64)]
            expansion = rbf_kernel(self.xs[probe], self.xs[basis], self.gamma) @ alpha[:, j]
            truth = np.asarray(model.decision_function(self.xs[probe])).reshape(-1)
            intercept[j] = float(np.median(truth - expansion))
            if np.max(np.abs(truth - expansion - intercept[j])) > 1e-2 * (1.0 + np.abs(truth).max()):
                raise RuntimeError("cuML SVM support vectors do not reproduce its decision function")
        return basis, alpha, intercept


class SVMHead(Head):
    """RBF-kernel SVM head (one-vs-rest), on cuML when available, else a fast CPU least-squares SVM.

    Parameters: ``C`` (``None`` = choose from ``C_GRID`` by ``cv``-fold cross-validation),
    ``gamma`` (``"scale"`` = ``1 / (D * var)`` of the standardised embeddings, as in ``SVC``),
    ``n_components`` (CPU landmarks), ``backend`` (``auto``, ``cuml`` or ``sklearn``).
    """

    _array_state = ("mean_", "scale_", "basis_", "dual_coef_", "intercept_", "sigmoid_a_", "sigmoid_b_")
    _value_state = ("C_", "gamma_", "target_mean_", "target_scale_")

    def __init__(self, task: str = "multi_label", C: float | None = 1.0, gamma: float | str = "scale",
                 n_components: int = 1024, cv: int = 3, backend: str = "auto", n_classes: int | None = None,
                 random_state: int = 0):
        self.task = task
        self.C = C
        self.gamma = gamma
        self.n_components = n_components
        self.cv = cv
        self.backend = backend
        self.n_classes = n_classes
        self.random_state = random_state

    def _solver(self, xs: np.ndarray, targets: np.ndarray):
        if self.backend not in ("auto", "cuml", "sklearn"):
            raise ValueError(f"backend must be auto, cuml or sklearn, got {self.backend!r}")
        use_cuml = self.backend == "cuml" or (self.backend == "auto" and cuml_available())
        if use_cuml:
            if not cuml_available():
                raise UserError("backend 'cuml' needs RAPIDS cuML and a CUDA GPU: install vitune[gpu] or use 'sklearn'")
            return _CumlSolver(xs, targets, self.gamma_, self.task == "regression")
        return _NystroemRidgeSolver(xs, targets, self.gamma_, self.n_components, self.random_state)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            self.target_mean_, self.target_scale_ = (float(v[0]) for v in _standard_stats(y[:, None]))
            return ((y - self.target_mean_) / self.target_scale_)[:, None]
        self.target_mean_, self.target_scale_ = 0.0, 1.0
        return 2.0 * self._indicator(y) - 1.0

    def _folds(self, n: int) -> list[np.ndarray]:
        if self.cv < 2 or n < 2 * self.cv:
            return []
        splitter = KFold(self.cv, shuffle=True, random_state=self.random_state)
        return [test for _, test in splitter.split(np.zeros(n))]

    def _select_C(self, solver, folds, y) -> tuple[float, np.ndarray | None]:
        grid = C_GRID if self.C is None else (float(self.C),)
        if not folds or (len(grid) == 1 and self.task == "regression"):  # nothing to choose or calibrate
            return (1.0 if self.C is None else float(self.C)), None
        best_C, best_value, best_d = grid[0], None, None
        names = [str(j) for j in range(self.n_outputs_)]
        for C in grid:
            d = solver.out_of_fold(folds, C)
            scores = d[:, 0] * self.target_scale_ + self.target_mean_ if self.task == "regression" else d
            value = compute_metrics(self.task, y, scores, names).metrics[MAIN_METRIC[self.task]]
            if best_d is None or is_better(self.task, value, best_value):
                best_C, best_value, best_d = C, value, d
        return best_C, best_d

    def fit(self, X, y) -> "SVMHead":
        """Fit the kernel expansion (and Platt sigmoids on out-of-fold decisions)."""
        X, y = self._validate_fit(X, y)
        if self.C is not None and not self.C > 0:
            raise ValueError(f"C must be positive, got {self.C}")
        self.mean_, self.scale_ = _standard_stats(X)
        xs = ((X - self.mean_) / self.scale_).astype(np.float32)
        self.gamma_ = 1.0 / (xs.shape[1] * max(float(xs.var()), 1e-12)) if self.gamma == "scale" else float(self.gamma)
        targets = self._targets(y)
        solver = self._solver(xs, targets)
        self.backend_ = solver.name
        self.C_, oof = self._select_C(solver, self._folds(len(xs)), y)
        basis_idx, self.dual_coef_, self.intercept_ = solver.fit(self.C_)
        self.basis_ = xs[basis_idx]
        if self.task == "regression":
            self.sigmoid_a_ = self.sigmoid_b_ = np.zeros(0)
        else:
            decisions = oof if oof is not None else self.basis_decisions(xs)
            self.sigmoid_a_, self.sigmoid_b_ = fit_sigmoid(decisions, self._indicator(y))
        return self

    def basis_decisions(self, xs: np.ndarray) -> np.ndarray:
        """Raw decisions of already standardised embeddings."""
        return rbf_kernel(xs, self.basis_, self.gamma_) @ self.dual_coef_ + self.intercept_

    def _decision(self, X) -> np.ndarray:
        """SVM decision values ``[N, outputs]`` (positive = label present / class more likely)."""
        X = self._validate_predict(X)
        return self.basis_decisions(((X - self.mean_) / self.scale_).astype(np.float32))

    def predict_scores(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """Platt probabilities (single_label rows renormalised) or target-unit predictions."""
        d = self._decision(X)
        if self.task == "regression":
            return d[:, 0] * self.target_scale_ + self.target_mean_
        p = _sigmoid(self.sigmoid_a_ * d + self.sigmoid_b_)
        return p / p.sum(axis=1, keepdims=True) if self.task == "single_label" else p


# --------------------------------------------------------------------------- logistic regression


def _binary_logreg(xs: np.ndarray, y: np.ndarray, C: float, max_iter: int) -> tuple[np.ndarray, float, int]:
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:  # one class in training: the (smoothed) prior, no slope
        p = (y.sum() + 1.0) / (len(y) + 2.0)
        return np.zeros(xs.shape[1]), float(np.log(p / (1.0 - p))), 0
    model = LogisticRegression(C=C, max_iter=max_iter).fit(xs, y)
    return model.coef_[0], float(model.intercept_[0]), int(model.n_iter_.max())


class LogRegHead(Head):
    """Logistic regression on standardised embeddings (per label / multinomial), Ridge for regression."""

    _array_state = ("mean_", "scale_", "coef_", "intercept_")

    def __init__(self, task: str = "multi_label", C: float = 1.0, max_iter: int = 1000,
                 n_classes: int | None = None, n_jobs: int | None = -1):
        self.task = task
        self.C = C
        self.max_iter = max_iter
        self.n_classes = n_classes
        self.n_jobs = n_jobs

    def fit(self, X, y) -> "LogRegHead":
        """Fit on standardised embeddings."""
        from joblib import Parallel, delayed
        from sklearn.linear_model import LogisticRegression, Ridge

        X, y = self._validate_fit(X, y)
        self.backend_ = "sklearn"
        self.mean_, self.scale_ = _standard_stats(X)
        xs = (X - self.mean_) / self.scale_
        self.n_iter_ = 1
        if self.task == "multi_label":
            fits = Parallel(n_jobs=self.n_jobs, prefer="threads")(
                delayed(_binary_logreg)(xs, y[:, j], self.C, self.max_iter) for j in range(self.n_outputs_))
            self.coef_ = np.stack([w for w, _, _ in fits])
            self.intercept_ = np.array([b for _, b, _ in fits])
            self.n_iter_ = max(1, *(n for _, _, n in fits))
        elif self.task == "single_label":
            self.coef_ = np.zeros((self.n_outputs_, xs.shape[1]))
            self.intercept_ = np.full(self.n_outputs_, -50.0)  # classes absent from training: ~0 probability
            present = np.unique(y)
            if len(present) == 1:
                self.intercept_[present] = 0.0
            else:
                model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(xs, y)
                coef, intercept, self.n_iter_ = model.coef_, model.intercept_, int(model.n_iter_.max())
                if len(present) == 2:  # binary: softmax([-z/2, z/2]) == sigmoid(z)
                    coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
                self.coef_[present], self.intercept_[present] = coef, intercept
        else:
            model = Ridge(alpha=1.0 / (2.0 * self.C)).fit(xs, y)
            self.n_iter_ = 1  # closed form
            self.coef_, self.intercept_ = model.coef_[None, :], np.atleast_1d(model.intercept_)
        return self

    def _decision(self, X) -> np.ndarray:
        """Linear decision values ``[N, outputs]``."""
        X = self._validate_predict(X)
        return ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_


# --------------------------------------------------------------------------- MLP


class MLPHead(Head):
    """A small torch MLP (one ReLU hidden layer) on standardised embeddings, deterministic seed."""

    _array_state = ("mean_", "scale_", "w1_", "b1_", "w2_", "b2_")
    _value_state = ("target_mean_", "target_scale_")

    def __init__(self, task: str = "multi_label", hidden_size: int = 256, max_steps: int = 500,
                 batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4,
                 n_classes: int | None = None, random_state: int = 0):
        self.task = task
        self.hidden_size = hidden_size
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.n_classes = n_classes
        self.random_state = random_state

    def _loss(self):
        import torch

        return {"multi_label": torch.nn.BCEWithLogitsLoss(), "single_label": torch.nn.CrossEntropyLoss(),
                "regression": torch.nn.MSELoss()}[self.task]

    def fit(self, X, y) -> "MLPHead":
        """Train with AdamW for ``max_steps`` mini-batches (seeded init and shuffling)."""
        import torch

        X, y = self._validate_fit(X, y)
        self.backend_ = "torch"
        self.mean_, self.scale_ = _standard_stats(X)
        self.target_mean_, self.target_scale_ = 0.0, 1.0
        if self.task == "regression":
            self.target_mean_, self.target_scale_ = (float(v[0]) for v in _standard_stats(y[:, None]))
            y = ((y - self.target_mean_) / self.target_scale_)[:, None]
        xs = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        ys = torch.as_tensor(y, dtype=torch.long if self.task == "single_label" else torch.float32)
        threads = torch.get_num_threads()
        # One thread: these matmuls are too small to split, and on a busy machine OpenMP workers
        # waiting for each other made fitting 10-50x slower (measured on a shared 2-core box).
        torch.set_num_threads(1)
        try:
            self._train(xs, ys)
        finally:
            torch.set_num_threads(threads)
        return self

    def _train(self, xs, ys) -> None:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            net = torch.nn.Sequential(torch.nn.Linear(xs.shape[1], self.hidden_size), torch.nn.ReLU(),
                                      torch.nn.Linear(self.hidden_size, self.n_outputs_))
            optimizer = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            loss_fn, batch = self._loss(), min(self.batch_size, len(xs))
            order = torch.randperm(len(xs))
            for step in range(self.max_steps):
                start = (step * batch) % len(xs)
                if start + batch > len(xs):
                    order, start = torch.randperm(len(xs)), 0
                idx = order[start : start + batch]
                optimizer.zero_grad()
                loss_fn(net(xs[idx]), ys[idx]).backward()
                optimizer.step()
        first, last = net[0], net[2]
        self.w1_, self.b1_ = first.weight.detach().numpy().copy(), first.bias.detach().numpy().copy()
        self.w2_, self.b2_ = last.weight.detach().numpy().copy(), last.bias.detach().numpy().copy()

    def _decision(self, X) -> np.ndarray:
        """Output logits ``[N, outputs]`` (numpy forward pass of the saved weights)."""
        X = self._validate_predict(X)
        hidden = np.maximum(((X - self.mean_) / self.scale_) @ self.w1_.T + self.b1_, 0.0)
        return hidden @ self.w2_.T + self.b2_

    def predict_scores(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """Probabilities or target-unit predictions."""
        scores = super().predict_scores(X)
        return scores * self.target_scale_ + self.target_mean_ if self.task == "regression" else scores


class RunClassifierHead(Head):
    """A fine-tuned run's own classifier: scores from its logits, exactly as ``vitune predict`` makes them.

    Nothing is learnt; ``predict_scores`` needs the run's ``logits`` for the same images.
    """

    def __init__(self, task: str = "multi_label", label_range: Sequence[float] | None = None,
                 regression_loss: str = "mse"):
        self.task = task
        self.label_range = label_range
        self.regression_loss = regression_loss

    def fit(self, X, y) -> "RunClassifierHead":
        """Record shapes only (the classifier was trained with the backbone)."""
        self._validate_fit(X, y)
        self.backend_ = "run"
        return self

    def predict_scores(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """``logits_to_scores`` of the run's logits."""
        check_is_fitted(self, "n_outputs_")
        if logits is None:
            raise ValueError("the run classifier head needs the run's logits for these images")
        config = SimpleNamespace(vitune_label_range=self.label_range, vitune_regression_loss=self.regression_loss)
        return logits_to_scores(self.task, logits, config)


class EnsembleHead(Head):
    """Weighted mean of member heads' scores (probabilities / target units), equal weights by default."""

    def __init__(self, estimators: Sequence[tuple[str, Head]] = (), weights: Sequence[float] | None = None,
                 prefit: bool = False):
        self.estimators = estimators
        self.weights = weights
        self.prefit = prefit

    @property
    def task(self) -> str:
        """The members' task."""
        return self.estimators[0][1].task if self.estimators else "single_label"

    def fit(self, X, y) -> "EnsembleHead":
        """Fit clones of the members, or check them when ``prefit``."""
        if not self.estimators:
            raise ValueError("an ensemble needs at least one member")
        if len({est.task for _, est in self.estimators}) != 1:
            raise ValueError("ensemble members must share one task")
        weights = np.ones(len(self.estimators)) if self.weights is None else np.asarray(self.weights, float)
        if weights.shape != (len(self.estimators),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("weights must be one non-negative number per member, not all zero")
        if self.prefit:
            for _, est in self.estimators:
                check_is_fitted(est, "n_outputs_")
            self.estimators_ = [est for _, est in self.estimators]
        else:
            self.estimators_ = [clone(est).fit(X, y) for _, est in self.estimators]
        first = self.estimators_[0]
        self.n_features_in_, self.n_outputs_ = first.n_features_in_, first.n_outputs_
        self.weights_ = weights / weights.sum()
        self.backend_ = "+".join(est.backend_ for est in self.estimators_)
        return self

    def predict_scores(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """Weighted mean of the members' ``predict_scores``."""
        check_is_fitted(self, "estimators_")
        return sum(w * est.predict_scores(X, logits) for w, est in zip(self.weights_, self.estimators_))


HEAD_CLASSES = {cls.__name__: cls for cls in (SVMHead, LogRegHead, MLPHead, RunClassifierHead, EnsembleHead)}


# --------------------------------------------------------------------------- storage


def save_heads(out_dir: Path | str, heads: dict[str, Head], meta: dict) -> None:
    """Write ``heads.safetensors`` + ``heads-config.json`` (see the module docstring); no pickle."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries, arrays = {}, {}
    for name, head in heads.items():
        if isinstance(head, EnsembleHead):
            members = []
            for est in head.estimators_:
                match = [n for n, h in heads.items() if h is est]
                if not match:
                    raise ValueError(f"ensemble {name!r} has a member that is not saved beside it")
                members.append(match[0])
            state = {"members": members, "weights": head.weights_.tolist(), "backend_": head.backend_}
            entries[name] = {"class": "EnsembleHead", "params": {}, "state": state}
            continue
        values, head_arrays = head.get_state()
        params = {k: _jsonable(v) for k, v in head.get_params(deep=False).items()}
        entries[name] = {"class": type(head).__name__, "params": params, "state": values}
        arrays.update({f"{name}.{key}": value for key, value in head_arrays.items()})
    save_file(arrays, str(out_dir / ARRAYS_FILE))
    config = {"version": FORMAT_VERSION, **meta, "heads": entries}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def read_heads_config(heads_dir: Path | str) -> dict:
    """The ``heads-config.json`` of a heads directory (a clear error when missing)."""
    path = Path(heads_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{heads_dir} has no fitted heads ({CONFIG_FILE}): run `vitune heads` first")
    return json.loads(path.read_text())


def load_heads(heads_dir: Path | str) -> dict[str, Head]:
    """Fitted heads saved by :func:`save_heads`, by name (members before their ensembles)."""
    from safetensors.numpy import load_file

    config = read_heads_config(heads_dir)
    arrays = load_file(str(Path(heads_dir) / ARRAYS_FILE))
    heads: dict[str, Head] = {}
    entries = config["heads"]
    for name, entry in sorted(entries.items(), key=lambda item: item[1]["class"] == "EnsembleHead"):
        if entry["class"] == "EnsembleHead":
            state = entry["state"]
            members = [(m, heads[m]) for m in state["members"]]
            heads[name] = EnsembleHead(members, state["weights"], prefit=True).fit(None, None)
            continue
        head_arrays = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{name}.")}
        heads[name] = HEAD_CLASSES[entry["class"]].from_state(entry["params"], entry["state"], head_arrays)
    return heads


def predict_with_heads(
    heads_dir: Path | str,
    batches: Iterable[np.ndarray],
    head: str = "ensemble",
    model: str | Path | None = None,
    total: int | None = None,
) -> np.ndarray:
    """Scores of saved head ``head`` on uint8 pixel batches ``[B, 3, S, S]``.

    The images are embedded with ``model`` (default: the MODEL the heads were fitted on, e.g. the
    RUN_DIR) and the saved pooling; the run's logits come from the same forward pass.
    """
    config = read_heads_config(heads_dir)
    if head not in config["heads"]:
        raise UserError(f"no {head!r} head in {heads_dir}: it has {', '.join(config['heads'])}")
    encoder = Encoder(model if model is not None else config["model"])
    if encoder.is_run and _run_target(encoder) != (config["task"], _label_names(config["task"], config["labels"])):
        raise UserError(f"the heads in {heads_dir} are {config['task']} {config['labels']}, but {encoder.name} is "
                        f"{task_of(encoder.config)} {_run_labels(encoder)}: give the --heads-dir fitted on this run")
    if encoder.identity != config.get("model_identity"):  # same labels; the files were touched or retrained
        log.warning("the model changed since these heads were fitted; run `vitune heads` again")
    embeddings, logits = embed_batches(encoder, batches, config["pooling"], total=total)
    return load_heads(heads_dir)[head].predict_scores(embeddings, logits)


# --------------------------------------------------------------------------- fitting all heads


def parse_heads(heads: str | Iterable[str]) -> list[str]:
    """``"svm,logreg"`` or a list -> validated head names, in ``HEAD_NAMES`` order."""
    names = [h.strip() for h in (heads.split(",") if isinstance(heads, str) else heads) if h.strip()]
    unknown = sorted(set(names) - set(HEAD_NAMES))
    if unknown or not names:
        raise UserError(f"unknown head(s) {', '.join(unknown) or '(none given)'}: choose from {','.join(HEAD_NAMES)}")
    return [h for h in HEAD_NAMES if h in names]


def split_targets(dataset_dir: Path | str, split: str) -> np.ndarray:
    """The ``labels`` column of a DATASET_DIR split as a numpy array."""
    ds, _ = load_dataset_dir(dataset_dir)
    part = require_split(ds, split, dataset_dir)
    return np.asarray(part.with_format("numpy", columns=["labels"])[:]["labels"])


def _run_labels(encoder: Encoder) -> list[str]:
    return [encoder.config.id2label[i] for i in range(encoder.config.num_labels)]


def _label_names(task: str, labels: Sequence[str]) -> list[str] | None:
    return None if task == "regression" else list(labels)  # a regression run names its one output "score"


def _run_target(encoder: Encoder) -> tuple[str, list[str] | None]:
    task = task_of(encoder.config)
    return task, _label_names(task, _run_labels(encoder))


def _check_run_matches(encoder: Encoder, info: DatasetInfo) -> None:
    if _run_target(encoder) != (info.task, _label_names(info.task, info.labels)):
        raise UserError(f"run {encoder.name} was trained for {task_of(encoder.config)} {_run_labels(encoder)}, but "
                        f"the dataset is {info.task} {info.labels}: give the dataset the run was trained on")


def _make_heads(names: list[str], encoder: Encoder, info: DatasetInfo, C: float | None, seed: int) -> dict[str, Head]:
    n_classes = len(info.labels) if info.task == "single_label" else None
    if encoder.is_run:
        config = encoder.config
        mlp: Head = RunClassifierHead(info.task, getattr(config, "vitune_label_range", None),
                                      getattr(config, "vitune_regression_loss", "mse"))
    else:
        mlp = MLPHead(info.task, n_classes=n_classes, random_state=seed)
    made = {
        "svm": SVMHead(info.task, C=C, n_classes=n_classes, random_state=seed),
        "logreg": LogRegHead(info.task, C=1.0 if C is None else C, n_classes=n_classes),
        "mlp": mlp,
    }
    heads = {name: made[name] for name in HEAD_NAMES[:3] if name in names or
             ("ensemble" in names and name in ENSEMBLE_MEMBERS)}
    if "ensemble" in names:
        heads["ensemble"] = EnsembleHead([(m, heads[m]) for m in ENSEMBLE_MEMBERS], prefit=True)
    return heads


def _round(value):
    return None if value is None else round(float(value), 6)


def print_table(report: dict, console=None) -> None:
    """The rich comparison table: head, main metric, other metrics, fit and predict seconds."""
    from rich.console import Console
    from rich.table import Table

    main = report["main_metric"]
    names = list(next(iter(report["heads"].values()))["metrics"]) if report["heads"] else [main]
    others = [k for k in names if k != main]
    table = Table(title=f"heads on {report['split']} ({report['num_samples']} samples, {report['task']})")
    for column in ("head", "backend", f"{main} (main)", *others, "fit s", "predict s"):
        table.add_column(column, justify="left" if column in ("head", "backend") else "right", no_wrap=True)
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    for name, entry in report["heads"].items():
        metrics = entry["metrics"]
        table.add_row(name, entry["backend"], fmt(metrics[main]), *(fmt(metrics[k]) for k in others),
                      f"{entry['fit_seconds']:.2f}", f"{entry['predict_seconds']:.2f}")
    # never squeeze the numbers: a log file or a narrow terminal gets the full table
    (console or Console(width=max(Console().width, 120))).print(table)


def fit_heads(
    model: str | Path,
    dataset_dir: Path | str,
    out_dir: Path | str | None = None,
    heads: str | Iterable[str] = HEAD_NAMES,
    pooling: str = "cls",
    C: float | None = None,
    batch_size: int = 32,
    seed: int = 0,
    cache_dir: Path | str | None = None,
    console=None,
) -> dict:
    """Fit heads on the train split's embeddings, evaluate on validation, save them and ``heads.json``.

    ``model`` is a RUN_DIR (default ``out_dir``: ``RUN_DIR/heads``) or a checkpoint. ``C=None``
    chooses the SVM's C by cross-validation on train. Embeddings are cached in
    ``cache_dir`` (default ``out_dir/embeddings``). Returns the ``heads.json`` dict.
    """
    names = parse_heads(heads)
    check_pooling(pooling)
    if C is not None and not C > 0:
        raise UserError(f"--C must be positive, got {C}")
    encoder = Encoder(model)
    if out_dir is None:
        if not encoder.is_run:
            raise UserError(f"{model} is not a RUN_DIR: give --out DIR for the heads")
        out_dir = Path(model) / "heads"
    out_dir = Path(out_dir)
    _, info = load_dataset_dir(dataset_dir)
    if encoder.is_run:
        _check_run_matches(encoder, info)
    require_image_size(info, dataset_dir, encoder.preprocessing.image_size, encoder.name)
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "embeddings"
    train, val = (extract_embeddings(encoder, dataset_dir, s, pooling, batch_size, cache_dir)
                  for s in ("train", REPORT_SPLIT))
    y_train, y_val = split_targets(dataset_dir, "train"), split_targets(dataset_dir, REPORT_SPLIT)
    fitted = _make_heads(names, encoder, info, C, seed)
    entries = {}
    for name, head in fitted.items():
        start = time.perf_counter()
        head.fit(train.values, y_train)
        fit_seconds = time.perf_counter() - start
        if isinstance(head, EnsembleHead):
            fit_seconds += sum(entries[m]["fit_seconds"] for m in ENSEMBLE_MEMBERS)
        start = time.perf_counter()
        scores = head.predict_scores(val.values, val.logits)
        predict_seconds = time.perf_counter() - start
        result = compute_metrics(info.task, y_val, scores, info.labels)
        entry = {"backend": head.backend_, "fit_seconds": round(fit_seconds, 4),
                 "predict_seconds": round(predict_seconds, 4),
                 "metrics": {k: _round(v) for k, v in result.metrics.items()}, "per_label": result.per_label}
        if isinstance(head, SVMHead):
            entry["params"] = {"C": head.C_, "gamma": head.gamma_, "basis_size": len(head.basis_)}
        entries[name] = entry
        log.info("%s head: %s=%s", name, MAIN_METRIC[info.task], entry["metrics"][MAIN_METRIC[info.task]])
    report = {
        "embedding": {"dim": train.dim, "seconds": round(train.seconds + val.seconds, 4),
                      "cached": train.cached and val.cached, "pooling": pooling},
        "heads": {name: entries[name] for name in names if name in entries},
        "task": info.task,
        "split": REPORT_SPLIT,
        "num_samples": len(y_val),
        "main_metric": MAIN_METRIC[info.task],
        "model": str(model),
    }
    save_heads(out_dir, fitted, {"task": info.task, "labels": list(info.labels), "pooling": pooling,
                                 "model": str(Path(model).resolve()) if Path(model).exists() else str(model),
                                 "model_identity": encoder.identity})
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report, console)
    return report
