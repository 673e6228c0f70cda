"""The web page at ``/``, built with Gradio: drop images, read their scores; a tab with the model card.

Each uploaded file (DICOM included) is scored through the same :class:`ServedModel` as the API, so
the page's numbers are the API's and ``vitune predict``'s. A file gets a bar chart of its labels,
most probable first, with each label's decision threshold marked (the tuned ones of ``vitune
evaluate`` when the run has them), the decisions and, unless unticked, an overlay per decided
label showing where the model looks (:mod:`vitune.serve.explaining`); a file that is no usable
image gets its reason. Gradio is told not to phone home (``GRADIO_ANALYTICS_ENABLED=False``, set by
:mod:`vitune.serve` before Gradio is imported) and the theme's fonts are served locally. The
results' markup is in ``templates/results.html.j2`` (Jinja2, autoescaped: a label or a file name is
shown as text).
"""

from __future__ import annotations

import asyncio
import html
import tempfile
from pathlib import Path

import gradio as gr
from markupsafe import Markup

from vitune.config import MODEL_HEAD
from vitune.data.images import BadImage
from vitune.errors import UserError
from vitune.evaluation.templating import template_environment
from vitune.serve.card import metrics_html, model_card_text
from vitune.serve.examples import write_examples
from vitune.serve.explaining import ServedExplainer, overlay_pngs
from vitune.serve.security import LOGIN_MESSAGE, page_login
from vitune.serve.service import Prediction, ServedModel

# the results of the "Predict" tab: macros of templates/results.html.j2, called from Python
RESULTS = template_environment("vitune.serve").get_template("results.html.j2").module

CSS = """
.vt-result { margin: .6rem 0 1.2rem; } .vt-result h3 { margin: 0 0 .3rem; font-size: 1.05rem; }
.vt-row { display: grid; grid-template-columns: minmax(6rem, 14rem) 1fr 4.5rem 6rem; gap: .6rem; align-items: center;
          font-size: .9rem; margin: .15rem 0; }
.vt-track { position: relative; height: .9rem; background: var(--neutral-200, #e5e7eb); border-radius: 3px; }
.vt-fill { position: absolute; inset: 0 auto 0 0; background: var(--neutral-400, #9ca3af); border-radius: 3px; }
.vt-on .vt-fill { background: var(--color-accent, #f97316); } .vt-on .vt-label { font-weight: 600; }
.vt-cut { position: absolute; top: -.2rem; bottom: -.2rem; width: 2px; background: #111; }
.vt-score, .vt-cutoff { font-variant-numeric: tabular-nums; text-align: right; }
.vt-cutoff { color: var(--body-text-color-subdued, #6b7280); }
.vt-error { color: #b91c1c; }
.vt-ood { border-left: 4px solid #d97706; background: #fffbeb; color: #92400e; padding: .4rem .6rem; margin: .4rem 0; }
.vitune-card table { border-collapse: collapse; margin: .5rem 0 1rem; }
.vitune-card th, .vitune-card td { border: 1px solid #ddd; padding: .2rem .5rem; text-align: right; }
.vitune-card th:first-child, .vitune-card td:first-child { text-align: left; }
.vitune-card img { max-width: 480px; } .vitune-card .missing { color: #8a5a00; }
.vt-overlays { display: flex; flex-wrap: wrap; gap: .6rem; margin-top: .5rem; } .vt-overlay { max-width: 100%; }
.vt-overlay-figure { margin: 0; } .vt-overlay-figure figcaption { font-size: .85rem; }
"""


def decision_rule(served: ServedModel) -> str:
    """How the page's decisions are taken, in words."""
    if not served.is_classification:
        return "regression: the predicted value"
    if served.cutoffs is None:
        return "single-label: the most probable class"
    if served.tuned_thresholds:
        return "multi-label: per-label thresholds tuned on validation by `vitune evaluate` (marked)"
    if served.head != MODEL_HEAD:
        return f"multi-label: threshold 0.5 (the tuned thresholds belong to the model, not the {served.head} head)"
    return "multi-label: threshold 0.5 (no thresholds.json yet: `vitune evaluate RUN_DIR` tunes them)"


def prediction_html(served: ServedModel, prediction: Prediction, overlays: list[tuple[str, bytes]] = (),
                    not_explained: str | None = None) -> Markup:
    """One image's result: the decisions, its labels as a bar chart sorted by probability, then ``overlays``
    (``(label, png)`` each) or why the image was ``not_explained``."""
    cutoffs = dict(zip(served.labels, served.cutoffs)) if served.cutoffs is not None else {}
    ranked = sorted(prediction.scores.items(), key=lambda item: -item[1])
    bars = [{"label": label, "score": score, "width": 100 * min(max(score, 0.0), 1.0), "cutoff": cutoffs.get(label),
             "chosen": label in prediction.predicted} for label, score in ranked]
    return RESULTS.prediction(file=prediction.file, value=prediction.value,
                              decided=", ".join(prediction.predicted) or "none above its threshold", bars=bars,
                              overlays=overlays, not_explained=not_explained,
                              out_of_distribution=prediction.out_of_distribution, ood_distance=prediction.ood_distance,
                              ood_threshold=served.ood_threshold)


def refusal_html(file: str, reason: str) -> Markup:
    """A file that could not be scored, with its reason."""
    return RESULTS.refusal(file=file, reason=reason)


def _take_upload(path: Path) -> bytes:
    """An upload's bytes, its copy in Gradio's cache removed at once: a patient's image stays on disk no longer
    than its request."""
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


async def _one_file(served: ServedModel, path: str, max_bytes: int, explainer: ServedExplainer | None) -> str:
    name = Path(path).name
    try:
        data = await asyncio.to_thread(_take_upload, Path(path))
        if len(data) > max_bytes:
            return refusal_html(name, f"upload too large: {len(data)} bytes, at most {max_bytes}")
        prediction = await served.predict(name, data)
        if explainer is None:
            return prediction_html(served, prediction)
        try:
            explanation = await explainer.explain(prediction, data)
        except UserError as exc:  # a model no method explains
            return prediction_html(served, prediction, not_explained=str(exc))
        return prediction_html(served, prediction, overlay_pngs(explanation))
    except BadImage as exc:
        return refusal_html(name, exc.reason)
    except OSError as exc:
        return refusal_html(name, f"unreadable upload: {exc.strerror or exc}")


def build_page(served: ServedModel, run_dir: Path | str, max_bytes: int, explainer: ServedExplainer) -> gr.Blocks:
    """The Gradio page: a "Predict" tab (upload, example images, results, where the model looks) and a "Model card" tab."""
    title = f"vitune: {served.name}"

    async def predict_files(paths: list[str] | None, explain: bool) -> str:
        if not paths:
            return RESULTS.empty()
        chosen = explainer if explain else None
        return "".join(await asyncio.gather(*(_one_file(served, path, max_bytes, chosen) for path in paths)))

    # the examples' PNGs live as long as the page (Gradio copies them into its cache as it builds it)
    examples_folder = tempfile.TemporaryDirectory(prefix="vitune-examples-")
    summary = f"run {served.name}, head {served.head}, {len(served.labels)} output(s); {decision_rule(served)}"
    # uploads are copies of patients' images: removed after 10 minutes, and all of them when the server restarts
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(600, 600)) as page:
        gr.Markdown(f"# {html.escape(title)}\n{html.escape(summary)}")
        with gr.Tab("Predict"):
            files = gr.File(label="Images", file_count="multiple", type="filepath", elem_id="vitune-upload")
            examples = write_examples(run_dir, Path(examples_folder.name))
            if examples:
                # a click fills the upload box, whose change event scores the image as an upload would be
                gr.Examples([[[str(example.path)]] for example in examples], inputs=[files],
                            example_labels=[example.caption for example in examples],
                            label="Example images from the validation split (click one)", elem_id="vitune-examples",
                            api_visibility="private")
            explain = gr.Checkbox(True, label="Show where the model looks (an overlay per decided label)",
                                  elem_id="vitune-explain")
            button = gr.Button("Predict", variant="primary")
            results = gr.HTML(elem_id="vitune-results")
            gr.on([files.change, button.click], predict_files, inputs=[files, explain], outputs=results,
                  concurrency_limit=served.batcher.max_batch, api_visibility="private")
        with gr.Tab("Model card"):
            card = model_card_text(run_dir)
            if card:
                gr.Markdown(card, elem_id="vitune-model-card")
            gr.HTML(metrics_html(run_dir, summary), elem_id="vitune-metrics")
    page.vitune_examples_folder = examples_folder
    return page


def mount_page(app, served: ServedModel, run_dir: Path | str, max_bytes: int, explainer: ServedExplainer,
               token: str | None = None):
    """Mount the page at ``/`` of ``app`` (after the API routes, which keep their paths).

    With a ``token`` the page opens on Gradio's login, the token being the password.
    """
    auth = None if token is None else page_login(token)
    return gr.mount_gradio_app(app, build_page(served, run_dir, max_bytes, explainer), path="/", footer_links=[],
                               run_history=False, max_file_size=max_bytes, css=CSS, ssr_mode=False,
                               mcp_server=False, auth=auth, auth_message=LOGIN_MESSAGE)
