"""How each head is built: ``create_head(name, task)`` is the one place that knows.

The valid names (``HEAD_NAMES``, the ``--heads`` choices) are in :mod:`vitune.config`, so the CLI
can check them without importing scikit-learn; every name but ``ensemble`` has a builder here.
"""

from __future__ import annotations

from typing import Callable, Iterable

from vitune.config import HEAD_NAMES
from vitune.errors import UserError
from vitune.heads.base import Head
from vitune.heads.ensemble import EnsembleHead
from vitune.heads.logreg import LogRegHead
from vitune.heads.mlp import MLPHead
from vitune.heads.run_classifier import RunClassifierHead
from vitune.heads.svm import SVMHead

ENSEMBLE_MEMBERS = ("mlp", "svm")
HEAD_CLASSES: dict[str, type[Head]] = {
    cls.__name__: cls for cls in (SVMHead, LogRegHead, MLPHead, RunClassifierHead, EnsembleHead)
}


def _mlp(task: str, C, n_classes, random_state, run_config) -> Head:
    """The run's own classifier when fitting on a run, else a small torch MLP."""
    if run_config is not None:
        return RunClassifierHead.of_model_config(task, run_config)
    return MLPHead(task, n_classes=n_classes, random_state=random_state)


_BUILDERS: dict[str, Callable[..., Head]] = {
    "svm": lambda task, C, n_classes, random_state, run_config: SVMHead(
        task, C=C, n_classes=n_classes, random_state=random_state),
    "logreg": lambda task, C, n_classes, random_state, run_config: LogRegHead(
        task, C=1.0 if C is None else C, n_classes=n_classes),
    "mlp": _mlp,
}
assert set(_BUILDERS) == set(HEAD_NAMES) - {"ensemble"}, "every head name has a builder"


def create_head(name: str, task: str, *, C: float | None = None, n_classes: int | None = None,
                random_state: int = 0, run_config=None) -> Head:
    """An unfitted head ``name`` (``svm``, ``logreg``, ``mlp``) for ``task``.

    ``C=None`` lets the SVM pick C by cross-validation (logreg then uses 1). ``run_config`` is the
    fine-tuned model's config when the heads sit on a RUN_DIR: ``mlp`` is then its own classifier.
    """
    if name not in _BUILDERS:
        raise UserError(f"unknown head {name!r}: choose from {','.join(_BUILDERS)} (or ensemble, of mlp and svm)")
    return _BUILDERS[name](task, C, n_classes, random_state, run_config)


def create_heads(names: Iterable[str], task: str, **params) -> dict[str, Head]:
    """The heads ``names`` plus, for ``ensemble``, its members; the ensemble averages the fitted members."""
    names = list(names)
    wanted = [n for n in _BUILDERS if n in names or ("ensemble" in names and n in ENSEMBLE_MEMBERS)]
    heads = {name: create_head(name, task, **params) for name in wanted}
    if "ensemble" in names:
        heads["ensemble"] = EnsembleHead([(m, heads[m]) for m in ENSEMBLE_MEMBERS], prefit=True)
    return heads
