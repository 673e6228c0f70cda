"""Shared by the heads, tasks and evaluation tests: embeddings that carry known targets, targets with
unknown (NaN) cells, and a fake cuML on the CPU."""

from __future__ import annotations

import sys
import types

import numpy as np


def informative(task: str, n: int, seed: int = 0, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings whose first 3 directions carry the targets through a nonlinear map, plus noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    x = np.concatenate([z, 0.3 * rng.normal(size=(n, dim - 3))], axis=1) @ rng.normal(size=(dim, dim))
    if task == "multi_label":
        y = np.stack([z[:, 0] > 0, z[:, 1] ** 2 > 0.5, z[:, 0] * z[:, 2] > 0], axis=1).astype(float)
    elif task == "single_label":
        y = np.digitize(z[:, 0] + 0.5 * z[:, 1] ** 2, [0.0, 1.0])
    else:
        y = 50 + 20 * z[:, 0] + 10 * np.tanh(z[:, 1])
    return x.astype(np.float32), y


def with_unknowns(y: np.ndarray, share: float = 0.3, seed: int = 1) -> np.ndarray:
    """``y`` with a ``share`` of its cells set to NaN."""
    y = np.asarray(y, dtype=np.float64).copy()
    y[np.random.default_rng(seed).random(y.shape) < share] = np.nan
    return y


class FakeCumlSVC:
    """sklearn's SVC behind cuML's constructor signature (output_type=...)."""

    def __init__(self, output_type=None, **params):
        from sklearn.svm import SVC

        self.model = SVC(**params)

    def fit(self, x, y):
        self.model.fit(x, y)
        self.support_, self.dual_coef_ = self.model.support_, self.model.dual_coef_
        return self

    def decision_function(self, x):
        return self.model.decision_function(x)


def install_fake_cuml(monkeypatch) -> None:
    """Make ``cuml.svm.SVC`` the fake above and report a GPU, for this test only."""
    svm_module = types.SimpleNamespace(SVC=FakeCumlSVC, SVR=None)
    monkeypatch.setitem(sys.modules, "cuml", types.SimpleNamespace(svm=svm_module))
    monkeypatch.setitem(sys.modules, "cuml.svm", svm_module)
    monkeypatch.setattr("vitune.heads.svm.cuml_available", lambda: True)
