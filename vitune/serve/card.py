"""The page's "Model card" tab: what the run is and how well it scored.

The model card ``model/README.md`` when the run has one (its YAML front matter, the Hub's
``model-index``, left out of the shown text), then the report's own sections (:mod:`vitune.evaluation.report`):
each ``vitune evaluate`` split with its 95% bootstrap intervals, else the end-of-training
validation metrics, the per-label table (AUC per label) and the heads' comparison.
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from vitune.evaluation.report import heads_section, metrics_section, per_label_section, read_evaluations, read_json
from vitune.evaluation.templating import template_environment
from vitune.storage.layout import RunDir

MODEL_CARD = "README.md"  # in RUN_DIR/model, where save_pretrained and the Hub expect it


def model_card_text(run_dir: Path | str) -> str | None:
    """``model/README.md`` without its YAML front matter, or None when the run has no model card."""
    path = RunDir(run_dir).model / MODEL_CARD
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = text[end + 4 :] if end != -1 else text
    return text.strip() or None


def metrics_html(run_dir: Path | str, summary: str) -> Markup:
    """The metrics with intervals, the per-label table and the heads, as HTML under a summary line."""
    root = RunDir(run_dir).root
    metrics = read_json(RunDir(root).metrics)
    evaluations = read_evaluations(root)
    sections = {
        "Metrics": metrics_section(root, metrics, evaluations),
        "Per-label results": per_label_section(metrics, evaluations),
        "Heads": heads_section(root),
    }
    return Markup(template_environment("vitune.serve").get_template("card.html.j2").render(summary=summary,
                                                                                           sections=sections))
