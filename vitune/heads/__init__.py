"""Heads on frozen backbone embeddings: SVM, logistic regression, MLP and their ensemble.

One module per head (``svm``, ``logreg``, ``mlp``, ``run_classifier``, ``ensemble``), all
scikit-learn estimators built on :class:`~vitune.heads.base.Head`; ``registry`` creates them by
name for a task, ``storage`` saves and loads them without pickle, ``fit`` is the ``vitune heads``
recipe.

- ``svm``: an RBF-kernel SVM, one output per label, on cuML with a GPU, else a least-squares SVM
  on scikit-learn's ``Nystroem`` features (:mod:`vitune.heads.svm`);
- ``logreg``: the task's scikit-learn linear model (:mod:`vitune.heads.logreg`);
- ``mlp``: the run's own fine-tuned classifier when MODEL is a RUN_DIR, else a small torch MLP;
- ``ensemble``: the weighted mean of the MLP and SVM scores.
"""

from vitune.config import HEAD_NAMES, HeadsConfig, parse_heads
from vitune.heads.base import Head
from vitune.heads.ensemble import EnsembleHead
from vitune.heads.fit import HeadsResult, fit_heads, heads_forward, heads_scorer, predict_with_heads, split_targets
from vitune.heads.logreg import LogRegHead
from vitune.heads.mlp import MLPHead
from vitune.heads.registry import create_head, create_heads
from vitune.heads.run_classifier import RunClassifierHead
from vitune.heads.storage import load_heads, read_heads_config, save_heads
from vitune.heads.svm import SVMHead, cuml_available
from vitune.storage.layout import HeadsDir

__all__ = [
    "HEAD_NAMES", "EnsembleHead", "Head", "HeadsConfig", "HeadsDir", "HeadsResult", "LogRegHead", "MLPHead",
    "RunClassifierHead", "SVMHead", "create_head", "create_heads", "cuml_available", "fit_heads", "load_heads",
    "heads_forward", "heads_scorer", "parse_heads", "predict_with_heads", "read_heads_config", "save_heads", "split_targets",
]
