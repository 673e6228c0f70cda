"""``vitune report``: one self-contained ``RUN_DIR/report.html`` summarising a run.

Sections: data (``dataset.json`` counts, labels, skipped files, a sample grid), training (loss and
learning-rate curves, per-epoch history), metrics (each ``vitune evaluate`` split with its 95 %
bootstrap intervals, else the end-of-training validation metrics), per-label results, where the
model looks (test images explained, :mod:`vitune.evaluation.explanations`), heads (``heads/heads.json``)
and the configuration (``config.yaml``). Every image is embedded as a base64 data URI and the
stylesheet is inline, so the file can be mailed or archived alone. A missing part is noted in its
section instead of failing the report. Local paths are shown relative to the RUN_DIR, so the
report says nothing of the machine that wrote it.

The markup is in ``templates/`` (``report.html.j2``, one template per section); this module
gathers the values they show (:mod:`vitune.evaluation.templating` renders them, escaped).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

from markupsafe import Markup

from vitune.config import LOCAL_PATHS, ReportConfig
from vitune.data.dataset_dir import DatasetInfo
from vitune.errors import UserError
from vitune.evaluation.pdf import print_pdf, require_printer
from vitune.evaluation.templating import missing, render
from vitune.runtime.version import VITUNE_VERSION
from vitune.storage.atomic import write_atomic
from vitune.storage.layout import SAMPLE_GRID, HeadsDir, RunDir

log = logging.getLogger(__name__)

SECTIONS = ("Data", "Training", "Metrics", "Per-label results", "Subgroups", "Calibration", "Where the model looks",
            "Heads", "Configuration")
CROSS_VALIDATION = "Cross-validation"  # after Training, only in a `vitune train --folds K` parent's report
PRETRAINING_SETTINGS = ("start", "model", "image_size", "mask_ratio", "norm_pix_loss", "decoder_width",
                        "decoder_depth", "learning_rate", "total_batch")
MAX_SKIPPED_SHOWN = 10
PER_LABEL_ORDER = ("roc_auc", "roc_auc_ci", "average_precision", "f1", "f1_tuned", "threshold_tuned",
                   "positives", "support", "unknown")
EVAL_PLOTS = (("roc", "ROC curves"), ("pr", "Precision-recall curves"), ("confusion", "Confusion matrix"),
              ("scatter", "Predicted vs true"))


def relative(value, run_dir: Path) -> str:
    """A local path as seen from the RUN_DIR (``../data/cxr14``); anything else (a Hub id, ``hf:NAME``) as is."""
    text = str(value)
    if not Path(text).is_absolute() and not Path(text).exists():
        return text
    return os.path.relpath(Path(text).resolve(), run_dir.resolve())


def read_json(path: Path) -> dict | None:
    """A JSON file as a dict; None when it is missing or not valid JSON (a warning says so)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON: left out of the report", path)
        return None


# --- sections ----------------------------------------------------------------------------------


def _sample_grid(run_dir: Path, dataset_dir: Path) -> Path:
    existing = [dataset_dir / SAMPLE_GRID, RunDir(run_dir).plots / SAMPLE_GRID]
    for path in existing:
        if path.is_file():
            return path
    from vitune.data.show import write_sample_grid

    return write_sample_grid(dataset_dir, existing[1])


def data_section(run_dir: Path) -> Markup:
    """Dataset counts per split, labels, skipped files and the sample grid."""
    try:
        dataset_dir = RunDir(run_dir).dataset_dir()
        info = DatasetInfo.load(dataset_dir)
    except UserError as exc:
        return missing(f"dataset not available: {_relative_message(exc, run_dir)}")
    try:
        sample_grid, sample_grid_error = _sample_grid(run_dir, dataset_dir).read_bytes(), None
    except (UserError, OSError) as exc:
        sample_grid, sample_grid_error = None, str(exc)
    return render(
        "data.html.j2", dataset=relative(dataset_dir, run_dir), task=info.task, image_size=info.image_size,
        format=info.format, source=relative(info.source, run_dir),
        splits=[[split, n] for split, n in info.splits.items()] + [["total", sum(info.splits.values())]],
        labels=info.labels, skipped_count=len(info.skipped),
        skipped=[[s.get("file"), s.get("reason")] for s in info.skipped[:MAX_SKIPPED_SHOWN]],
        sample_grid=sample_grid, sample_grid_error=sample_grid_error,
    )


def _figures(paths_and_captions) -> list[tuple[bytes, str]]:
    """``(png bytes, caption)`` of each PNG file there is among ``(path, caption)``."""
    return [(path.read_bytes(), caption) for path, caption in paths_and_captions if path.is_file()]


def training_section(run_dir: Path, metrics: dict | None) -> Markup:
    """Loss and learning-rate curves, timing and the per-epoch history."""
    plots = RunDir(run_dir).plots
    curves = _figures([(plots / "loss.png", "Training loss"), (plots / "lr.png", "Learning rate")])
    history = (metrics or {}).get("history") or []
    keys = list(dict.fromkeys(key for row in history for key in row))
    return render(
        "training.html.j2", curves=curves, metrics_missing=metrics is None, metrics_file=RunDir(run_dir).metrics.name,
        train_seconds=(metrics or {}).get("train_seconds"), samples_per_second=(metrics or {}).get("samples_per_second"),
        history_keys=keys, history=[[row.get(key) for key in keys] for row in history],
    )


def read_evaluations(run_dir: Path) -> list[dict]:
    """Results of ``vitune evaluate``, test split first."""
    found = [read_json(p) for p in RunDir(run_dir).evaluated()]
    return sorted((f for f in found if f), key=lambda f: (f.get("split") != "test", f.get("split", "")))


def _metric_rows(result: dict) -> list[list]:
    """``[metric, value, 95% CI]`` rows of a metrics document."""
    intervals = result.get("confidence_intervals") or {}
    return [[key, value, intervals.get(key)] for key, value in (result.get("metrics") or {}).items()]


def _evaluation(run_dir: Path, result: dict) -> dict:
    """What the metrics section shows of one ``vitune evaluate`` result."""
    split = result.get("split", "?")
    note = result.get("note")
    data = str(result.get("data") or "")
    if note and data:
        note = note.replace(data, relative(data, run_dir))
    plots = result.get("plots") or {}
    shown = [(run_dir / plots[key], f"{caption} ({split})") for key, caption in EVAL_PLOTS if key in plots]
    boot = result.get("bootstrap") or {}
    return {"split": split, "num_samples": result.get("num_samples"), "note": note, "metrics": _metric_rows(result),
            "resamples": boot.get("resamples"), "seed": boot.get("seed"),
            "tuned_on": (result.get("thresholds") or {}).get("tuned_on"), "tta": result.get("tta") or "none",
            "figures": _figures(shown)}


def metrics_section(run_dir: Path, metrics: dict | None, evaluations: list[dict]) -> Markup:
    """Each evaluated split with intervals and plots, and the end-of-training validation metrics."""
    training = None
    if metrics is not None:
        plots = RunDir(run_dir).plots
        curves = [] if evaluations else [(plots / "roc.png", "ROC curves"), (plots / "confusion.png", "Confusion matrix")]
        training = {"split": metrics.get("split", "validation"), "num_samples": metrics.get("num_samples"),
                    "metrics": _metric_rows(metrics), "figures": _figures(curves)}
    return render("metrics.html.j2", evaluations=[_evaluation(run_dir, result) for result in evaluations],
                  training=training)


def per_label_section(metrics: dict | None, evaluations: list[dict]) -> Markup:
    """One row per label from the first evaluation (else the training metrics)."""
    source = evaluations[0] if evaluations else metrics
    per_label = (source or {}).get("per_label") or {}
    if not per_label:
        return missing("no per-label results (regression runs have one output)")
    present = set(key for values in per_label.values() for key in values)
    if "threshold_tuned" in present:
        present.discard("threshold")  # always 0.5 there: f1 is "at 0.5", f1_tuned "at threshold_tuned"
    keys = [k for k in PER_LABEL_ORDER if k in present] + sorted(present - set(PER_LABEL_ORDER))
    rows = [[name, *(values.get(k) for k in keys)] for name, values in per_label.items()]
    return render("per_label.html.j2", split=source.get("split", ""), headers=["label", *keys], rows=rows)


def subgroups_section(run_dir: Path, evaluations: list[dict]) -> Markup:
    """The first evaluation's subgroups (``vitune evaluate --by``): forest plot, intervals, gaps, TPR per label."""
    source = next((result for result in evaluations if result.get("subgroups")), None)
    if source is None:
        return missing("no subgroup evaluation yet: run `vitune evaluate RUN_DIR --by sex,age,view`")
    metric = next(iter(source.get("metrics") or {"metric": None}))
    labels = list(source.get("per_label") or {})
    attributes = []
    for name, values in source["subgroups"].items():
        rows = [[value, entry.get("n"), entry.get(metric), entry.get(metric + "_ci") or entry.get("note")]
                for value, entry in values.items()]
        tpr_rows = [[value, *((entry.get("tpr_tuned") or {}).get(label) for label in labels)]
                    for value, entry in values.items() if entry.get("tpr_tuned")]
        gap = (source.get("subgroup_gaps") or {}).get(name)
        shown_gap = None if gap is None else {"value": gap.get(metric), "ci": gap.get("ci"), "between": gap["between"]}
        attributes.append({"name": name, "rows": rows, "tpr_rows": tpr_rows, "tpr_headers": [name, *labels],
                           "gap": shown_gap})
    plots = source.get("plots") or {}
    forest = _figures([(run_dir / plots["subgroups"], f"{metric} by subgroup")] if "subgroups" in plots else [])
    return render("subgroups.html.j2", split=source.get("split", ""), metric=metric, attributes=attributes,
                  forest=forest)


def temperature_text(temperature: list | None) -> str:
    """The fitted temperatures for people (``0.912, 1.08``); a fold ensemble's per fold (``fold 0: 0.912; fold 1: ...``)."""
    if temperature is None:
        return "none (uncalibrated)"
    if all(isinstance(value, (int, float)) for value in temperature):
        return ", ".join(f"{value:.3g}" for value in temperature)
    folds = []
    for fold, values in enumerate(temperature):
        folds.append(f"fold {fold}: " + ("none" if values is None else temperature_text(values)))
    return "; ".join(folds)


def calibration_section(run_dir: Path, evaluations: list[dict]) -> Markup:
    """The first evaluation's calibration: ECE before and after the temperature, Brier, reliability diagram."""
    source = next((result for result in evaluations if result.get("calibration")), None)
    if source is None:
        return missing("no calibration yet: run `vitune evaluate RUN_DIR` (classification runs)")
    calibration = source["calibration"]
    summary = [[key, calibration.get(key)] for key in ("ece_macro", "ece_macro_uncalibrated", "brier_macro")]
    summary.append(["temperature", temperature_text(calibration.get("temperature"))])
    per_label = [[name, values.get("ece"), values.get("brier")]
                 for name, values in (calibration.get("per_label") or {}).items()]
    plots = source.get("plots") or {}
    reliability = _figures([(run_dir / plots["reliability"], "Reliability diagram")] if "reliability" in plots else [])
    return render("calibration.html.j2", split=source.get("split", ""), bins=calibration.get("bins"), summary=summary,
                  per_label=per_label, reliability=reliability)


def cross_validation_section(cv: dict, evaluations: list[dict]) -> Markup:
    """The folds of ``cv.json``: one row per fold (images, patients, validation metrics), then the mean and std."""
    names = list(cv.get("mean") or {})
    rows = []
    for entry in cv.get("folds") or []:
        metrics = entry.get("metrics") or {}
        rows.append([entry.get("fold"), entry.get("train"), entry.get("validation"), entry.get("validation_patients"),
                     *(metrics.get(name) for name in names)])
    for summary in ("mean", "std"):
        rows.append([summary, "", "", "", *(cv[summary].get(name) for name in names)])
    headers = ["fold", "train images", "validation images", "validation patients", *names]
    return render("cross_validation.html.j2", k=cv.get("k"), stratified_on=cv.get("stratified_on"), seed=cv.get("seed"),
                  ddof=cv.get("std_ddof"), headers=headers, rows=rows,
                  evaluated=any(result.get("ensemble") for result in evaluations))


def _relative_message(exc: UserError, run_dir: Path) -> str:
    """``exc``'s message with the run's recorded dataset path shown relative to the RUN_DIR."""
    recorded = str(RunDir(run_dir).read_config().get("data") or "")
    return str(exc).replace(recorded, relative(recorded, run_dir)) if recorded else str(exc)


def explanations_section(run_dir: Path) -> Markup:
    """Per label the test split's top positives and worst false positives with their overlays."""
    if not RunDir(run_dir).model.is_dir():
        return missing("no model/ to explain")
    from vitune.evaluation.explanations import where_the_model_looks

    try:
        return where_the_model_looks(run_dir)
    except UserError as exc:
        return missing(f"no explanations: {_relative_message(exc, run_dir)}")


def heads_section(run_dir: Path) -> Markup:
    """The frozen-backbone heads' comparison from ``heads/heads.json``."""
    report = read_json(HeadsDir(RunDir(run_dir).heads).report)
    if report is None:
        return missing("no heads/heads.json: run `vitune heads --model RUN_DIR --data DATASET_DIR --out RUN_DIR/heads`")
    heads = report.get("heads") or {}
    metric_keys = list(dict.fromkeys(k for h in heads.values() for k in (h.get("metrics") or {})))
    rows = [[name, h.get("backend"), h.get("fit_seconds"), h.get("predict_seconds"),
             *((h.get("metrics") or {}).get(k) for k in metric_keys)] for name, h in heads.items()]
    return render("heads.html.j2", embedding=report.get("embedding") or {},
                  headers=["head", "backend", "fit s", "predict s", *metric_keys], rows=rows)


def pretraining_data_section(run_dir: Path, pretraining: dict) -> Markup:
    """What a pre-training run read: its images, those held back for the reconstruction loss, the skipped files."""
    source = RunDir(run_dir).read_config().get("data")
    skipped = pretraining.get("skipped") or []
    return render(
        "pretraining_data.html.j2", source=relative(source, run_dir) if source else "not recorded",
        image_size=pretraining.get("image_size"),
        splits=[["train", pretraining.get("train_images")], ["held back", pretraining.get("held_back_images")]],
        skipped_count=len(skipped), skipped=[[s.get("file"), s.get("reason")] for s in skipped[:MAX_SKIPPED_SHOWN]],
    )


def reconstructions_section(run_dir: Path, metrics: dict) -> Markup:
    """A pre-training run's reconstruction grid, its held-back loss, its settings and what to do next."""
    pretraining = metrics["pretraining"]
    grid = _figures([(RunDir(run_dir).plots / "reconstructions.png",
                      "Held-back images: originals, masked inputs and reconstructions")])
    return render(
        "reconstructions.html.j2", grid=grid, loss=(metrics.get("metrics") or {}).get("reconstruction_loss"),
        held_back=pretraining.get("held_back_images"),
        setting_names=[key for key in PRETRAINING_SETTINGS if key in pretraining],
        settings=[relative(pretraining[key], run_dir) if key == "model" else pretraining[key]
                  for key in PRETRAINING_SETTINGS if key in pretraining],
    )


def config_section(run_dir: Path, command: str) -> Markup:
    """``config.yaml``, with its local paths relative to the RUN_DIR; ``command`` is the one that reads it back."""
    import yaml

    run = RunDir(run_dir)
    if not run.config.is_file():
        return missing(f"no {run.config.name}")
    values = run.read_config()
    shown = {k: relative(v, run_dir) if k in LOCAL_PATHS and v is not None else v for k, v in values.items()}
    return render("config.html.j2", config_yaml=yaml.safe_dump(shown, sort_keys=False), command=command)


# --- report ------------------------------------------------------------------------------------


def anchor(title: str) -> str:
    """A section's id in the page (``Per-label results`` -> ``per-label-results``), the table of contents' target."""
    return "-".join(title.lower().split())


def model_name(run_dir: Path, config: dict) -> str:
    """The model as a reader knows it: an alias or Hub id as given, a local checkpoint by its folder's name;
    with the trained model's architecture (``model/config.json``) when there is one."""
    given = config.get("model")
    if not given:
        name = "unknown"
    elif Path(str(given)).is_absolute() or Path(str(given)).exists():
        name = f"{Path(str(given)).name} (local checkpoint)"
    else:
        name = str(given)
    model_config = read_json(RunDir(run_dir).model / "config.json") or {}
    architectures = model_config.get("architectures") or []
    if architectures:
        name += f", {architectures[0]}"
    if model_config.get("image_size"):
        name += f" at {model_config['image_size']} px"
    return name


def data_name(run_dir: Path, metrics: dict | None) -> str:
    """The data a run trained on: the source's folder name (or ``hf:NAME``) and its format, with the image count."""
    pretraining = (metrics or {}).get("pretraining")
    if pretraining is not None:
        source = Path(str(RunDir(run_dir).read_config().get("data") or "unknown")).name
        images = (pretraining.get("train_images") or 0) + (pretraining.get("held_back_images") or 0)
        return f"{source} (images without labels), {images} images"
    try:
        info = DatasetInfo.load(RunDir(run_dir).dataset_dir())
    except UserError:
        return "dataset not available"
    source = str(info.source)
    shown = Path(source).name if Path(source).is_absolute() or Path(source).exists() else source
    return f"{shown} ({info.format} format), {sum(info.splits.values())} images"


def _page(run_dir: Path, metrics: dict | None, config: dict, bodies: dict[str, Markup]) -> str:
    """The whole page: a header that names the model and the data, a table of contents and the sections
    in ``bodies``' order."""
    task = (metrics or read_json(RunDir(run_dir).cv) or {}).get("task") or "unknown task"
    return render(
        "report.html.j2", name=run_dir.name, task=task,
        model=model_name(run_dir, config), source=data_name(run_dir, metrics), version=VITUNE_VERSION,
        hardware=(metrics or {}).get("hardware") or "not recorded (trained before vitune 0.3)",
        generated=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        toc=[(anchor(name), name) for name in bodies],
        sections=[(anchor(name), name, body) for name, body in bodies.items()],
    ) + "\n"


def fine_tuning_bodies(run_dir: Path, metrics: dict | None) -> dict[str, Markup]:
    """The sections of a fine-tuned run's report, in :data:`SECTIONS` order; a cross-validation parent
    (``cv.json``) has its folds' table after Training, and no Training of its own (each fold's report has it)."""
    evaluations = read_evaluations(run_dir)
    bodies = {"Data": data_section(run_dir)}
    cv = read_json(RunDir(run_dir).cv)
    if cv is None or metrics is not None:
        bodies["Training"] = training_section(run_dir, metrics)
    if cv is not None:
        bodies[CROSS_VALIDATION] = cross_validation_section(cv, evaluations)
    return bodies | {
        "Metrics": metrics_section(run_dir, metrics, evaluations),
        "Per-label results": per_label_section(metrics, evaluations),
        "Subgroups": subgroups_section(run_dir, evaluations),
        "Calibration": calibration_section(run_dir, evaluations),
        "Where the model looks": explanations_section(run_dir),
        "Heads": heads_section(run_dir),
        "Configuration": config_section(run_dir, "train"),
    }


def pretraining_bodies(run_dir: Path, metrics: dict) -> dict[str, Markup]:
    """The sections of a `vitune pretrain` run's report (Data, Training, Reconstructions, Configuration): there is no
    classifier to evaluate or explain yet."""
    return {
        "Data": pretraining_data_section(run_dir, metrics["pretraining"]),
        "Training": training_section(run_dir, metrics),
        "Reconstructions": reconstructions_section(run_dir, metrics),
        "Configuration": config_section(run_dir, "pretrain"),
    }


def build_report(config: ReportConfig) -> Path:
    """Write the self-contained HTML report of a RUN_DIR (and with ``config.pdf`` its PDF beside it); return the HTML's path."""
    run = RunDir(config.run)
    if not run.root.is_dir():
        raise UserError(f"RUN_DIR {run.root} does not exist: give the --out folder of `vitune train`")
    if not run.metrics.is_file() and not run.model.is_dir() and not run.cv.is_file():
        raise UserError(f"{run.root} is not a vitune run (no {run.metrics.name}, {run.model.name}/ or {run.cv.name})")
    if config.pdf:
        require_printer()  # before the minutes of explaining, not after
    metrics = read_json(run.metrics)
    if metrics is not None and metrics.get("pretraining") is not None:
        bodies = pretraining_bodies(run.root, metrics)
    else:
        bodies = fine_tuning_bodies(run.root, metrics)
    written = write_atomic(config.out, _page(run.root, metrics, run.read_config(), bodies))
    if config.pdf:
        print_pdf(written, config.pdf_out)
    return written
