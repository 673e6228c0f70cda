"""vitune: fine-tune vision transformers on your own images.

The names a notebook needs are here, and each mirrors a command: ``prepare`` is ``vitune data
prepare``, ``train`` is ``vitune train``, ``evaluate`` is ``vitune evaluate`` and so on; every one of
them takes the command's config dataclass (``TrainConfig``, ``EvaluateConfig``, ...):

```python
from vitune import EvaluateConfig, TrainConfig, build_trainer, evaluate

trainer = build_trainer(TrainConfig(data="data/cxr14", model="vit-base-p16-224", out="runs/cxr14"))
trainer.train()
```

``import vitune`` stays light (no torch, no transformers): each name is imported from its home module
the first time it is used (PEP 562 ``__getattr__``). Explanations come from ``explain_images`` (in
memory); ``vitune.explain`` is the subpackage, whose ``explain(ExplainConfig)`` writes a folder as
``vitune explain`` does.
"""

import importlib
from typing import TYPE_CHECKING

from vitune.runtime.version import VITUNE_VERSION as __version__

if TYPE_CHECKING:  # what IDEs, type checkers and the API reference see; at run time __getattr__ imports these
    from vitune.config import (
        EvaluateConfig,
        ExplainConfig,
        ExportConfig,
        HeadsConfig,
        PredictConfig,
        PrepareConfig,
        PretrainConfig,
        ReportConfig,
        ServeConfig,
        TrainConfig,
        TuneConfig,
    )
    from vitune.errors import UserError
    from vitune.evaluation.evaluate import evaluate
    from vitune.evaluation.report import build_report
    from vitune.explain.explainer import explain_images
    from vitune.heads.fit import fit_heads
    from vitune.inference.export import export_onnx
    from vitune.inference.predict import predict
    from vitune.models.run import load_run
    from vitune.training.cross_validation import cross_validate
    from vitune.training.fine_tune import build_trainer, train
    from vitune.training.pretrain import build_pretrainer, pretrain
    from vitune.training.tune import tune
    from vitune.workflows.prepare import prepare

# Public name -> the module that defines it (lazy_loader's ``attach`` would build the same table from
# the same list: the table is all it would save).
_PUBLIC_HOMES = {
    "build_trainer": "vitune.training.fine_tune",
    "train": "vitune.training.fine_tune",
    "cross_validate": "vitune.training.cross_validation",
    "tune": "vitune.training.tune",
    "pretrain": "vitune.training.pretrain",
    "build_pretrainer": "vitune.training.pretrain",
    "prepare": "vitune.workflows.prepare",
    "fit_heads": "vitune.heads.fit",
    "evaluate": "vitune.evaluation.evaluate",
    "build_report": "vitune.evaluation.report",
    "predict": "vitune.inference.predict",
    "export_onnx": "vitune.inference.export",
    "explain_images": "vitune.explain.explainer",
    "load_run": "vitune.models.run",
    "TrainConfig": "vitune.config",
    "PrepareConfig": "vitune.config",
    "PretrainConfig": "vitune.config",
    "EvaluateConfig": "vitune.config",
    "PredictConfig": "vitune.config",
    "HeadsConfig": "vitune.config",
    "ExplainConfig": "vitune.config",
    "ExportConfig": "vitune.config",
    "ReportConfig": "vitune.config",
    "TuneConfig": "vitune.config",
    "ServeConfig": "vitune.config",
    "UserError": "vitune.errors",
}

__all__ = [
    "EvaluateConfig",
    "ExplainConfig",
    "ExportConfig",
    "HeadsConfig",
    "PredictConfig",
    "PrepareConfig",
    "PretrainConfig",
    "ReportConfig",
    "ServeConfig",
    "TrainConfig",
    "TuneConfig",
    "UserError",
    "__version__",
    "build_pretrainer",
    "build_report",
    "build_trainer",
    "cross_validate",
    "evaluate",
    "explain_images",
    "export_onnx",
    "fit_heads",
    "load_run",
    "predict",
    "prepare",
    "pretrain",
    "train",
    "tune",
]


def __getattr__(name: str):
    """Import a public name from its home module on first use, and keep it here for the next one."""
    home = _PUBLIC_HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'vitune' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's own names and the public ones not imported yet (for tab completion)."""
    return sorted({*globals(), *__all__})

