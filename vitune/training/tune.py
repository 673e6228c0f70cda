"""`vitune tune`: a hyper-parameter search on ``Trainer.hyperparameter_search``.

Each trial trains the model of :func:`vitune.training.fine_tune.build_model` (LoRA included) afresh with the
trial's settings and reports the task's main validation metric after every epoch; Optuna's median
pruner stops trials that fall behind the others (Ray Tune: the median stopping rule), and a trial
that fails (a diverged loss) is recorded and the search goes on. The output folder
(:class:`vitune.storage.layout.TuneDir`) gets ``tune.json`` (every trial and the best finished one),
``best.yaml`` (the best trial's full TrainConfig, for ``vitune train --config``) and ``trials.png``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from vitune.config import TRAINING_ARGUMENTS, TrainConfig
from vitune.config.tune import Param, TuneConfig
from vitune.errors import UserError
from vitune.evaluation.plots import plot_trials
from vitune.storage.atomic import write_atomic
from vitune.storage.layout import TuneDir
from vitune.storage.lock import OutputLock

log = logging.getLogger(__name__)

STUDY = "vitune"
STATES = {"TERMINATED": "complete", "ERROR": "fail"}  # Ray Tune's trial status -> tune.json's state
SETTINGS = {argument: name for name, argument in TRAINING_ARGUMENTS.items()}  # TrainingArguments field -> setting


@dataclass
class TuneResult:
    """What a search produced: its folder and the contents of ``tune.json``."""

    out: Path
    document: dict


def base_config(config: TuneConfig) -> TrainConfig:
    """The TrainConfig every trial starts from: ``--base`` (when given) with this search's data, model and length."""
    fixed = {"data": config.data, "model": config.model, "out": str(TuneDir(config.out).best_run),
             "epochs": config.epochs, "max_steps": config.max_steps, "seed": config.seed}
    if config.base is None:
        return TrainConfig(**fixed)
    if not Path(config.base).is_file():
        raise UserError(f"--base {config.base} does not exist: give a TrainConfig YAML such as RUN_DIR/config.yaml")
    return TrainConfig.from_yaml(config.base, **fixed)


def _check_choices(base: TrainConfig, space: list[Param]) -> None:
    for param in space:
        for value in param.choices or (param.low, param.high):
            dataclasses.replace(base, **{param.name: value})  # a choice or bound TrainConfig refuses: said now


def optuna_space(space: list[Param]):
    """The ``hp_space`` of the Optuna backend: a trial -> the TrainingArguments values it sets."""

    def sample(trial) -> dict:
        values = {}
        for p in space:
            if p.choices is not None:
                value = trial.suggest_categorical(p.name, list(p.choices))
            elif p.integer:
                value = trial.suggest_int(p.name, p.low, p.high, log=p.log)
            else:
                value = trial.suggest_float(p.name, p.low, p.high, log=p.log)
            values[TRAINING_ARGUMENTS[p.name]] = value
        return values

    return sample


def ray_space(space: list[Param]):
    """The ``hp_space`` of the Ray Tune backend: its search-space dict over TrainingArguments fields."""
    from ray import tune

    def distribution(p: Param):
        if p.choices is not None:
            return tune.choice(list(p.choices))
        if p.integer:
            return tune.lograndint(p.low, p.high + 1) if p.log else tune.randint(p.low, p.high + 1)
        return tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)

    return lambda trial: {TRAINING_ARGUMENTS[p.name]: distribution(p) for p in space}


def _optuna_trials(trainer, space: list[Param], config: TuneConfig, direction: str, objective) -> list[dict]:
    try:
        import optuna
    except ImportError as exc:
        raise UserError("--backend optuna needs the optuna package: pip install 'optuna>=3.6'") from exc
    storage = optuna.storages.InMemoryStorage()  # read back below: the search returns only the best trial
    try:
        trainer.hyperparameter_search(
            hp_space=optuna_space(space), compute_objective=objective, n_trials=config.trials, direction=direction,
            backend="optuna", storage=storage, study_name=STUDY, sampler=optuna.samplers.TPESampler(seed=config.seed),
            pruner=optuna.pruners.MedianPruner(), catch=(UserError,),
        )
    except ValueError:  # the search asks the study for its best trial, and no trial finished
        trainer.hp_search_backend = None
    trials = optuna.load_study(study_name=STUDY, storage=storage).trials
    return [{"number": t.number, "params": dict(t.params), "value": t.value, "state": t.state.name.lower()}
            for t in trials]


def _ray_trials(trainer, space: list[Param], config: TuneConfig, direction: str, objective) -> list[dict]:
    try:
        from ray.tune.schedulers import MedianStoppingRule
    except ImportError as exc:
        raise UserError("--backend ray needs Ray Tune: pip install 'ray[tune]' (or pip install 'vitune[ray]'), "
                        "or use --backend optuna") from exc
    best = trainer.hyperparameter_search(
        hp_space=ray_space(space), compute_objective=objective, n_trials=config.trials, direction=direction,
        backend="ray", scheduler=MedianStoppingRule(metric="objective", mode=direction[:3]),
        storage_path=str(TuneDir(config.out).trials.resolve()),
    )
    return [{"number": number, "params": {SETTINGS[k]: v for k, v in trial.config.items() if k in SETTINGS},
             "value": (trial.last_result or {}).get("objective"), "state": STATES.get(trial.status, "pruned")}
            for number, trial in enumerate(best.run_summary.trials)]


def _search_trainer(trial_config: TrainConfig, space: list[Param]):
    """The trainer of ``trial_config`` set up for a search: a fresh model each trial, no checkpoints."""
    from vitune.training.fine_tune import build_model, build_trainer

    trainer = build_trainer(trial_config)
    label_range = trainer.data_collator.label_range

    def model_init():
        trainer.loss_tracker.reset()  # a failed trial may leave its losses behind
        return build_model(trial_config, trainer.task, trainer.info, label_range)

    trainer.model_init = model_init
    # the trial's objective is its last evaluation: no checkpoint to save or reload
    trainer.args = dataclasses.replace(trainer.args, save_strategy="no", load_best_model_at_end=False)
    for p in space:  # the search casts each value to the type of the field it replaces
        argument = TRAINING_ARGUMENTS[p.name]
        if not p.integer and p.choices is None:
            setattr(trainer.args, argument, float(getattr(trainer.args, argument)))
    return trainer


def best_trial(trials: list[dict], maximize: bool) -> dict:
    """The best finished trial (a :class:`UserError` when none finished)."""
    finished = [t for t in trials if t["state"] == "complete" and t["value"] is not None and math.isfinite(t["value"])]
    if not finished:
        raise UserError(f"none of the {len(trials)} trials finished with a value (see the log): widen or lower "
                        "the search space (--space), or give more --epochs or --max-steps")
    return (max if maximize else min)(finished, key=lambda t: t["value"])


def tune(config: TuneConfig) -> TuneResult:
    """Search ``config.trials`` trials; write ``tune.json``, ``best.yaml`` and ``trials.png`` into ``config.out``."""
    from vitune.tasks import get_task

    folder = TuneDir(config.out)
    space = config.search_space()
    base = base_config(config)
    _check_choices(base, space)
    folder.root.mkdir(parents=True, exist_ok=True)
    with OutputLock(folder.root):
        shutil.rmtree(folder.trials, ignore_errors=True)
        trial_config = dataclasses.replace(base, out=str(folder.trials), report_to=[], push_to_hub=None)
        trainer = _search_trainer(trial_config, space)
        task = get_task(trainer.info.task)
        direction = "maximize" if task.greater_is_better else "minimize"
        metric = f"eval_{task.main_metric}"
        search = _optuna_trials if config.backend == "optuna" else _ray_trials
        gc.freeze()  # the search runs gc.collect() three times a trial: leave it only the trials' own objects
        try:
            trials = search(trainer, space, config, direction, lambda metrics: metrics[metric])
        finally:
            gc.unfreeze()
        shutil.rmtree(folder.trials, ignore_errors=True)
        best = best_trial(trials, task.greater_is_better)
        document = {"metric": task.main_metric, "direction": direction, "trials": trials,
                    "best": {"params": best["params"], "value": best["value"]}}
        write_atomic(folder.report, json.dumps(document, indent=2) + "\n")
        dataclasses.replace(base, **best["params"]).save(folder.best)
        plot_trials(trials, task.main_metric, task.greater_is_better, folder.plot)
    log.info("best of %d trials: %s %s with %s", len(trials), task.main_metric, best["value"], best["params"])
    return TuneResult(folder.root, document)
