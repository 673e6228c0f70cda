"""The SVM head: an RBF-kernel SVM per output, on RAPIDS cuML when there is a GPU, else scikit-learn.

Backend ``cuml``: exact ``cuml.svm.SVC``/``SVR`` per label on the GPU. Backend ``sklearn`` (CPU):
scikit-learn's ``Nystroem`` RBF features (``n_components`` landmarks from the training rows, the
exact kernel when the split is smaller) and one multi-output ``Ridge`` for all labels, which is the
least-squares SVM; it matches ``SVC(kernel="rbf")`` ranking quality at a fraction of the time (see
``bench/heads.py``). Both end as the same kernel expansion ``f(x) = K(x, basis) @ dual_coef +
intercept`` on standardised embeddings, with Platt sigmoids fitted on out-of-fold decisions for
probabilities. ``C=None`` picks C from ``C_GRID`` by the cross-validated main metric on train.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit as sigmoid
from sklearn.model_selection import KFold

from vitune.errors import UserError
from vitune.heads.base import Head, target_scaler
from vitune.heads.platt import fit_sigmoid

C_GRID = (0.1, 1.0, 10.0, 100.0)


def rbf_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """``exp(-gamma * ||a_i - b_j||^2)`` in float32 (the embeddings' own precision)."""
    from sklearn.metrics.pairwise import rbf_kernel as sklearn_rbf

    return sklearn_rbf(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), gamma=gamma)


def cuml_available() -> bool:
    """Whether RAPIDS cuML can be imported and a CUDA GPU is present."""
    try:
        import cuml  # noqa: F401
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


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

    def _ridge(self, rows: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
        """``(coef [outputs, m], intercept [outputs])`` of the ridge fit on ``rows``.

        Outputs that share their known rows (all of them, unless targets hold NaN) are solved
        together; each output sees only the rows where its target is known.
        """
        from sklearn.linear_model import Ridge

        t, features = self.t[rows], self.features[rows]
        coef, intercept = np.zeros((t.shape[1], features.shape[1])), np.zeros(t.shape[1])
        patterns, group = np.unique(~np.isnan(t), axis=1, return_inverse=True)
        for g in range(patterns.shape[1]):
            columns, known = np.flatnonzero(group.reshape(-1) == g), patterns[:, g]
            if known.any():
                model = Ridge(alpha=1.0 / (2.0 * C)).fit(features[known], t[known][:, columns])
                coef[columns] = np.asarray(model.coef_, dtype=np.float64).reshape(len(columns), -1)
                intercept[columns] = np.asarray(model.intercept_, dtype=np.float64).reshape(-1)
        return coef, intercept

    def out_of_fold(self, folds: list[np.ndarray], C: float) -> np.ndarray:
        """Decisions for every row from the model fitted without its fold."""
        d = np.zeros_like(self.t)
        everything = np.arange(len(self.t))
        for test in folds:
            coef, intercept = self._ridge(np.setdiff1d(everything, test), C)
            d[test] = self.features[test] @ coef.T + intercept
        return d

    def fit(self, C: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(landmark row indices, dual coefficients ``[m, outputs]``, intercepts) on all rows."""
        coef, intercept = self._ridge(np.arange(len(self.t)), C)
        dual = self.feature_map.normalization_.T @ coef.T  # K(x, landmarks) @ dual == phi(x) @ coef.T
        return self.feature_map.component_indices_, dual, intercept


class _CumlSolver:
    """Exact RBF ``cuml.svm.SVC``/``SVR`` per output on the GPU, converted to a kernel expansion."""

    name = "cuml"

    def __init__(self, xs: np.ndarray, targets: np.ndarray, gamma: float, regression: bool):
        self.xs, self.t, self.gamma, self.regression = xs, targets, gamma, regression

    def _fit_one(self, rows: np.ndarray, j: int, C: float):
        """Output ``j``'s model on the ``rows`` where its target is known (None: one class there),
        and the positions in ``self.xs`` of the rows it was fitted on (its ``support_`` indexes them)."""
        from cuml.svm import SVC, SVR

        rows = rows[~np.isnan(self.t[rows, j])]
        y = self.t[rows, j]
        if self.regression:
            return SVR(kernel="rbf", C=C, gamma=self.gamma, output_type="numpy").fit(self.xs[rows], y), rows
        if len(np.unique(y)) < 2:
            return None, rows  # a label with one class here: constant decision
        svc = SVC(kernel="rbf", C=C, gamma=self.gamma, output_type="numpy")
        return svc.fit(self.xs[rows], (y > 0).astype(np.float32)), rows

    def out_of_fold(self, folds: list[np.ndarray], C: float) -> np.ndarray:
        """Decisions for every row from per-output models fitted without its fold."""
        d = np.zeros_like(self.t)
        everything = np.arange(len(self.t))
        for test in folds:
            train = np.setdiff1d(everything, test)
            for j in range(self.t.shape[1]):
                model, _ = self._fit_one(train, j, C)
                d[test, j] = np.sign(np.nanmean(self.t[train, j])) if model is None else np.asarray(
                    model.decision_function(self.xs[test])).reshape(-1)
        return d

    def fit(self, C: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Union of support vectors as basis, per-output dual coefficients and intercepts."""
        rows = np.arange(len(self.t))
        fitted = [self._fit_one(rows, j, C) for j in range(self.t.shape[1])]
        models = [model for model, _ in fitted]
        support = [used[np.asarray(m.support_, dtype=np.int64)] if m is not None else np.zeros(0, np.int64)
                   for m, used in fitted]
        basis = np.unique(np.concatenate(support))
        alpha = np.zeros((len(basis), len(models)))
        intercept = np.zeros(len(models))
        for j, (model, sv) in enumerate(zip(models, support)):
            if model is None:
                intercept[j] = np.sign(np.nanmean(self.t[:, j]))
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

    _array_state = ("basis_", "dual_coef_", "intercept_", "sigmoid_a_", "sigmoid_b_")
    _value_state = ("C_", "gamma_", "target_mean_", "target_scale_")

    def __init__(self, task: str = "multi_label", C: float | None = 1.0, gamma: float | str = "scale",
                 n_components: int = 1024, cv: int = 3, backend: str = "auto", n_classes: int | None = None,
                 random_state: int = 0):
        self._keep_params(locals())

    def _solver(self, xs: np.ndarray, targets: np.ndarray):
        if self.backend not in ("auto", "cuml", "sklearn"):
            raise ValueError(f"backend must be auto, cuml or sklearn, got {self.backend!r}")
        use_cuml = self.backend == "cuml" or (self.backend == "auto" and cuml_available())
        if use_cuml:
            if not cuml_available():
                raise UserError("backend 'cuml' needs RAPIDS cuML and a CUDA GPU: install vitune[gpu] or use 'sklearn'")
            return _CumlSolver(xs, targets, self.gamma_, not self._task.is_classification)
        return _NystroemRidgeSolver(xs, targets, self.gamma_, self.n_components, self.random_state)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Solver targets: +-1 per output for classification, the standardised value for regression."""
        if self._task.is_classification:
            self.target_mean_, self.target_scale_ = 0.0, 1.0
            return 2.0 * self._task.indicator(y, self.n_outputs_) - 1.0
        self.target_mean_, self.target_scale_ = target_scaler(y)
        return ((y - self.target_mean_) / self.target_scale_)[:, None]

    def _folds(self, n: int) -> list[np.ndarray]:
        if self.cv < 2 or n < 2 * self.cv:
            return []
        splitter = KFold(self.cv, shuffle=True, random_state=self.random_state)
        return [test for _, test in splitter.split(np.zeros(n))]

    def _scores_of(self, d: np.ndarray) -> np.ndarray:
        """Uncalibrated decisions as the metric takes them (regression back in target units)."""
        return d if self._task.is_classification else d[:, 0] * self.target_scale_ + self.target_mean_

    def _select_C(self, solver, folds, y) -> tuple[float, np.ndarray | None]:
        """The C with the best out-of-fold main metric, and its out-of-fold decisions (for Platt)."""
        task = self._task
        grid = C_GRID if self.C is None else (float(self.C),)
        if not folds or (len(grid) == 1 and not task.is_classification):  # nothing to choose or calibrate
            return (1.0 if self.C is None else float(self.C)), None
        best_C, best_value, best_d = grid[0], None, None
        names = [str(j) for j in range(self.n_outputs_)]
        for C in grid:
            d = solver.out_of_fold(folds, C)
            value = task.metrics(y, self._scores_of(d), names).metrics[task.main_metric]
            if best_d is None or task.is_better(value, best_value):
                best_C, best_value, best_d = C, value, d
        return best_C, best_d

    def fit(self, X, y) -> "SVMHead":
        """Fit the kernel expansion (and Platt sigmoids on out-of-fold decisions)."""
        X, y = self._validate_fit(X, y)
        if self.C is not None and not self.C > 0:
            raise ValueError(f"C must be positive, got {self.C}")
        xs = self._fit_scaler(X).astype(np.float32)
        self.gamma_ = 1.0 / (xs.shape[1] * max(float(xs.var()), 1e-12)) if self.gamma == "scale" else float(self.gamma)
        solver = self._solver(xs, self._targets(y))
        self.backend_ = solver.name
        self.C_, oof = self._select_C(solver, self._folds(len(xs)), y)
        basis_idx, self.dual_coef_, self.intercept_ = solver.fit(self.C_)
        self.basis_ = xs[basis_idx]
        self.sigmoid_a_ = self.sigmoid_b_ = np.zeros(0)
        if self._task.is_classification:
            decisions = oof if oof is not None else self.basis_decisions(xs)
            self.sigmoid_a_, self.sigmoid_b_ = fit_sigmoid(decisions, self._task.indicator(y, self.n_outputs_))
        return self

    def basis_decisions(self, xs: np.ndarray) -> np.ndarray:
        """Raw decisions of already standardised embeddings."""
        return rbf_kernel(xs, self.basis_, self.gamma_) @ self.dual_coef_ + self.intercept_

    def _decision(self, X) -> np.ndarray:
        """SVM decision values ``[N, outputs]`` (positive = label present / class more likely)."""
        X = self._validate_predict(X)
        return self.basis_decisions(self.scaler_.transform(X).astype(np.float32))

    def predict_scores(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """Platt probabilities (single_label rows renormalised) or target-unit predictions."""
        d = self._decision(X)
        if not self._task.is_classification:
            return self._scores_of(d)
        p = sigmoid(self.sigmoid_a_ * d + self.sigmoid_b_)
        return p if self._task.multi_output else p / p.sum(axis=1, keepdims=True)
