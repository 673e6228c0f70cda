"""Where the model looks, for served images: ``POST /v1/predict?explain=1`` peaks and the page's overlays.

Explanations come from :func:`vitune.explain.explain_images` on the run's fine-tuned model, for
the labels the answer predicts (the score, for regression). They run on a copy of the model of
their own, loaded on the first request that asks: explaining switches a model to eager attention
while it runs, so it must not share the model the micro-batcher scores with. One explanation runs
at a time, in a thread, so the event loop keeps answering.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from vitune.serve.service import Prediction

OVERLAY_WIDTH = 1024  # the page shows overlay panels (source, map, colour bar) at most this wide (a 3,000 px film would be megabytes of PNG)


class ServedExplainer:
    """Explanations of uploads by the run's own model, one at a time."""

    def __init__(self, run_dir: Path | str, device: str | None):
        self.run_dir, self.device = run_dir, device
        self._run = None
        self._lock = asyncio.Lock()

    def _explain_now(self, data: bytes, labels: list[str] | None):
        from vitune.explain import explain_images
        from vitune.models.run import load_run

        if self._run is None:
            self._run = load_run(self.run_dir, self.device)
        return explain_images(self._run, [data], labels=labels, top=None if labels else 1)[0]

    async def explain(self, prediction: Prediction, data: bytes):
        """The :class:`~vitune.explain.ImageExplanation` of an upload, for the labels ``prediction`` decided."""
        labels = prediction.predicted or None  # none decided: the most probable; regression: the score
        async with self._lock:
            return await asyncio.to_thread(self._explain_now, data, labels)


def peaks(explanation) -> dict[str, list[float]]:
    """Each explained label's peak ``[x, y]`` in the upload's own pixels (x right, y down)."""
    return {label: [float(v) for v in entry.peak] for label, entry in explanation.labels.items()}


def overlay_pngs(explanation) -> list[tuple[str, bytes]]:
    """Each explained label's overlay as PNG bytes (scaled to ``OVERLAY_WIDTH`` at most): ``(label, png)``."""
    overlays = []
    for label in explanation.labels:
        image = explanation.overlay(label)
        if image.width > OVERLAY_WIDTH:
            image = image.resize((OVERLAY_WIDTH, max(1, round(image.height * OVERLAY_WIDTH / image.width))))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "PNG")
        overlays.append((label, buffer.getvalue()))
    return overlays
