"""``vitune report``: one self-contained ``RUN_DIR/report.html`` summarising a run.

Sections: data (``dataset.json`` counts, labels, skipped files, a sample grid), training (loss and
learning-rate curves, per-epoch history), metrics (each ``vitune evaluate`` split with its 95 %
bootstrap intervals, else the end-of-training validation metrics), per-label results, where the
model looks (test images explained, :mod:`vitune.evaluation.explanations`), heads (``heads/heads.json``)
and the configuration (``config.yaml``). Every image is embedded as a base64 data URI and the
stylesheet is inline, so the file can be mailed or archived alone. A missing part is noted in its
section instead of failing the report. Local paths are shown relative to the RUN_DIR, so the
report says nothing of the machine that wrote it.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import logging
import os
from pathlib import Path

from vitune.config import LOCAL_PATHS, ReportConfig
from vitune.data.dataset_dir import DatasetInfo
from vitune.errors import UserError
from vitune.storage.layout import SAMPLE_GRID, HeadsDir, RunDir

log = logging.getLogger(__name__)

SECTIONS = ("Data", "Training", "Metrics", "Per-label results", "Where the model looks", "Heads", "Configuration")
MAX_SKIPPED_SHOWN = 10
PER_LABEL_ORDER = ("roc_auc", "roc_auc_ci", "average_precision", "f1", "f1_tuned", "threshold_tuned",
                   "positives", "support", "unknown")
EVAL_PLOTS = (("roc", "ROC curves"), ("pr", "Precision-recall curves"), ("confusion", "Confusion matrix"),
              ("scatter", "Predicted vs true"))

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1d1d1f; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem;
margin-top: 2.2rem; } h3 { margin-bottom: .4rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f5f5f7; }
figure { display: inline-block; margin: .4rem 1rem .8rem 0; vertical-align: top; }
figure img { max-width: 520px; border: 1px solid #eee; } figcaption { font-size: .85rem; color: #555; }
pre { background: #f5f5f7; padding: .8rem; overflow-x: auto; font-size: .85rem; }
.missing { color: #8a5a00; background: #fff7e6; padding: .4rem .6rem; border-left: 3px solid #f0a500; }
.meta { color: #555; font-size: .9rem; }
"""


# --- html helpers ------------------------------------------------------------------------------


def _esc(value) -> str:
    return html.escape(str(value))


def fmt(value) -> str:
    """A table cell: floats to 4 decimals (3 significant digits when tiny or huge), ``[low, high]``, n/a for None."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if value == 0 or 0.01 <= abs(value) < 1e4 else f"{value:.3g}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"[{fmt(float(value[0]))}, {fmt(float(value[1]))}]"
    return str(value)


def table(headers: list[str], rows: list[list]) -> str:
    """An HTML table with escaped cells."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(path: Path, caption: str) -> str:
    """A PNG file embedded as a base64 data URI, with a caption."""
    return png_figure(Path(path).read_bytes(), caption)


def png_figure(png: bytes, caption: str) -> str:
    """PNG bytes embedded as a base64 data URI, with a caption."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def missing(text: str) -> str:
    """A note for an optional part that is not there."""
    return f'<p class="missing">{_esc(text)}</p>'


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


def data_section(run_dir: Path) -> str:
    """Dataset counts per split, labels, skipped files and the sample grid."""
    try:
        dataset_dir = RunDir(run_dir).dataset_dir()
        info = DatasetInfo.load(dataset_dir)
    except UserError as exc:
        recorded = str(RunDir(run_dir).read_config().get("data") or "")
        reason = str(exc).replace(recorded, relative(recorded, run_dir)) if recorded else str(exc)
        return missing(f"dataset not available: {reason}")
    parts = [
        f'<p class="meta">{_esc(relative(dataset_dir, run_dir))} — task {_esc(info.task)}, {info.image_size}px images, '
        f"format {_esc(info.format)}, source {_esc(relative(info.source, run_dir))}</p>",
        table(["split", "images"], [[s, n] for s, n in info.splits.items()] + [["total", sum(info.splits.values())]]),
        f"<p><b>{len(info.labels)} label(s):</b> {_esc(', '.join(info.labels))}</p>",
        f"<p><b>Skipped while preparing:</b> {len(info.skipped)} file(s)</p>",
    ]
    if info.skipped:
        shown = info.skipped[:MAX_SKIPPED_SHOWN]
        parts.append(table(["file", "reason"], [[s.get("file"), s.get("reason")] for s in shown]))
    try:
        parts.append(image(_sample_grid(run_dir, dataset_dir), "Sample images with their labels"))
    except (UserError, OSError) as exc:
        parts.append(missing(f"no sample grid: {exc}"))
    return "\n".join(parts)


def training_section(run_dir: Path, metrics: dict | None) -> str:
    """Loss and learning-rate curves, timing and the per-epoch history."""
    parts = []
    plots = [(RunDir(run_dir).plots / name, caption) for name, caption in
             (("loss.png", "Training loss"), ("lr.png", "Learning rate"))]
    figures = [image(path, caption) for path, caption in plots if path.is_file()]
    parts.append("".join(figures) if figures else missing("no training curves (plots/loss.png, plots/lr.png)"))
    if metrics is None:
        parts.append(missing(f"no {RunDir(run_dir).metrics.name}: training did not finish"))
        return "\n".join(parts)
    parts.append(f'<p class="meta">training time {fmt(metrics.get("train_seconds"))} s, '
                 f'{fmt(metrics.get("samples_per_second"))} samples/s</p>')
    history = metrics.get("history") or []
    if history:
        keys = list(dict.fromkeys(key for row in history for key in row))
        parts.append(table(keys, [[row.get(k) for k in keys] for row in history]))
    return "\n".join(parts)


def read_evaluations(run_dir: Path) -> list[dict]:
    """Results of ``vitune evaluate``, test split first."""
    found = [read_json(p) for p in RunDir(run_dir).evaluated()]
    return sorted((f for f in found if f), key=lambda f: (f.get("split") != "test", f.get("split", "")))


def _metrics_table(result: dict) -> str:
    intervals = result.get("confidence_intervals") or {}
    rows = [[key, value, intervals.get(key)] for key, value in (result.get("metrics") or {}).items()]
    return table(["metric", "value", "95% CI"], rows)


def metrics_section(run_dir: Path, metrics: dict | None, evaluations: list[dict]) -> str:
    """Each evaluated split with intervals and plots, and the end-of-training validation metrics."""
    parts = []
    for result in evaluations:
        split = result.get("split", "?")
        boot = result.get("bootstrap") or {}
        parts.append(f"<h3>{_esc(split)} split ({result.get('num_samples')} images)</h3>")
        if result.get("note"):
            data = str(result.get("data") or "")
            note = result["note"].replace(data, relative(data, run_dir)) if data else result["note"]
            parts.append(f"<p>{_esc(note)}</p>")
        parts.append(_metrics_table(result))
        parts.append(f'<p class="meta">95% percentile bootstrap intervals from {boot.get("resamples")} '
                     f"resamples (seed {boot.get('seed')}).</p>")
        thresholds = (result.get("thresholds") or {}).get("tuned_on")
        if thresholds:
            parts.append("<p>f1_macro is at threshold 0.5; f1_macro_tuned at per-label thresholds tuned for F1 "
                         f"on the {_esc(thresholds)} split.</p>")
        figures = [image(run_dir / result["plots"][key], f"{caption} ({split})")
                   for key, caption in EVAL_PLOTS if key in (result.get("plots") or {})
                   and (run_dir / result["plots"][key]).is_file()]
        parts.append("".join(figures))
    if not evaluations:
        parts.append(missing("no evaluation with confidence intervals yet: run `vitune evaluate RUN_DIR`"))
    if metrics is not None:
        parts.append(f"<h3>End of training ({_esc(metrics.get('split', 'validation'))} split, "
                     f"{metrics.get('num_samples')} images)</h3>")
        parts.append(_metrics_table(metrics))
        if not evaluations:
            plots = RunDir(run_dir).plots
            figures = [image(plots / name, caption) for name, caption in
                       (("roc.png", "ROC curves"), ("confusion.png", "Confusion matrix")) if (plots / name).is_file()]
            parts.append("".join(figures))
    return "\n".join(parts)


def per_label_section(metrics: dict | None, evaluations: list[dict]) -> str:
    """One row per label from the first evaluation (else the training metrics)."""
    source = evaluations[0] if evaluations else metrics
    per_label = (source or {}).get("per_label") or {}
    if not per_label:
        return missing("no per-label results (regression runs have one output)")
    present = set(key for values in per_label.values() for key in values)
    if "threshold_tuned" in present:
        present.discard("threshold")  # always 0.5 there: f1 is "at 0.5", f1_tuned "at threshold_tuned"
    keys = [k for k in PER_LABEL_ORDER if k in present] + sorted(present - set(PER_LABEL_ORDER))
    title = f"<p class=\"meta\">{_esc(source.get('split', ''))} split</p>"
    rows = [[name, *(values.get(k) for k in keys)] for name, values in per_label.items()]
    return title + table(["label", *keys], rows)


def explanations_section(run_dir: Path) -> str:
    """Per label the test split's top positives and worst false positives with their overlays."""
    if not RunDir(run_dir).model.is_dir():
        return missing("no model/ to explain")
    from vitune.evaluation.explanations import where_the_model_looks

    try:
        return where_the_model_looks(run_dir, png_figure)
    except UserError as exc:
        recorded = str(RunDir(run_dir).read_config().get("data") or "")
        reason = str(exc).replace(recorded, relative(recorded, run_dir)) if recorded else str(exc)
        return missing(f"no explanations: {reason}")


def heads_section(run_dir: Path) -> str:
    """The frozen-backbone heads' comparison from ``heads/heads.json``."""
    report = read_json(HeadsDir(RunDir(run_dir).heads).report)
    if report is None:
        return missing("no heads/heads.json: run `vitune heads --model RUN_DIR --data DATASET_DIR --out RUN_DIR/heads`")
    parts = []
    embedding = report.get("embedding") or {}
    if embedding:
        parts.append(f'<p class="meta">embedding dim {fmt(embedding.get("dim"))}, computed in '
                     f'{fmt(embedding.get("seconds"))} s (cached: {fmt(embedding.get("cached"))})</p>')
    heads = report.get("heads") or {}
    metric_keys = list(dict.fromkeys(k for h in heads.values() for k in (h.get("metrics") or {})))
    rows = [[name, h.get("backend"), h.get("fit_seconds"), h.get("predict_seconds"),
             *((h.get("metrics") or {}).get(k) for k in metric_keys)] for name, h in heads.items()]
    parts.append(table(["head", "backend", "fit s", "predict s", *metric_keys], rows))
    return "\n".join(parts)


def config_section(run_dir: Path) -> str:
    """``config.yaml``, with its local paths relative to the RUN_DIR."""
    import yaml

    run = RunDir(run_dir)
    if not run.config.is_file():
        return missing(f"no {run.config.name}")
    values = run.read_config()
    shown = {k: relative(v, run_dir) if k in LOCAL_PATHS and v is not None else v for k, v in values.items()}
    return f"<pre>{_esc(yaml.safe_dump(shown, sort_keys=False))}</pre>"


# --- report ------------------------------------------------------------------------------------


def _page(run_dir: Path, metrics: dict | None, config: dict, bodies: dict[str, str]) -> str:
    task = (metrics or {}).get("task") or "unknown task"
    model = relative(config["model"], run_dir) if config.get("model") else "unknown"
    generated = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    sections = "\n".join(f'<section id="{_esc(name.lower().replace(" ", "-"))}"><h2>{_esc(name)}</h2>\n{bodies[name]}'
                         "</section>" for name in SECTIONS)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>vitune report: {_esc(run_dir.name)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>vitune report: {_esc(run_dir.name)}</h1>\n"
        f'<p class="meta">model {_esc(model)} — {_esc(task)} — generated {generated}</p>\n'
        f"{sections}\n</body></html>\n"
    )


def build_report(config: ReportConfig) -> Path:
    """Write the self-contained HTML report of a RUN_DIR and return its path."""
    run = RunDir(config.run)
    if not run.root.is_dir():
        raise UserError(f"RUN_DIR {run.root} does not exist: give the --out folder of `vitune train`")
    if not run.metrics.is_file() and not run.model.is_dir():
        raise UserError(f"{run.root} is not a vitune run (no {run.metrics.name} or {run.model.name}/)")
    metrics = read_json(run.metrics)
    evaluations = read_evaluations(run.root)
    bodies = {
        "Data": data_section(run.root),
        "Training": training_section(run.root, metrics),
        "Metrics": metrics_section(run.root, metrics, evaluations),
        "Per-label results": per_label_section(metrics, evaluations),
        "Where the model looks": explanations_section(run.root),
        "Heads": heads_section(run.root),
        "Configuration": config_section(run.root),
    }
    out = Path(config.out)
    out.write_text(_page(run.root, metrics, run.read_config(), bodies), encoding="utf-8")
    return out
