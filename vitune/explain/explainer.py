"""Explaining a run's predictions image by image: :func:`explain_images`, the library entry point.

Images are read and resized exactly as ``vitune predict`` reads them (:mod:`vitune.data.images`),
scored by the run's classifier, and for each chosen label the method's map is computed in batches
of (image, label) pairs. The chosen labels are ``labels`` for every image, else each image's
``top`` K scores, else what the run predicts (:meth:`vitune.tasks.base.Task.explained_outputs`:
the predicted class, the multi-label findings at their tuned thresholds, the regression score).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image

from vitune.data.images import BadImage, pil_to_array, read_image, to_8bit
from vitune.errors import UserError
from vitune.explain.methods import Method, pick_method
from vitune.explain.overlay import overlay, peak
from vitune.models.forward import normalize
from vitune.models.run import Run, load_run

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]


@dataclass
class LabelExplanation:
    """One label of one image: its score, the map's peak in source pixels ``(x, y)`` and the raw map ``[h, w]``."""

    score: float
    peak: tuple[float, float]
    heatmap: np.ndarray


@dataclass
class ImageExplanation:
    """One input image: its name and size, the explained labels, the 8-bit source; ``reason`` when skipped."""

    file: str
    width: int = 0
    height: int = 0
    labels: dict[str, LabelExplanation] = field(default_factory=dict)
    source: Image.Image | None = None
    reason: str | None = None

    def overlay(self, label: str) -> Image.Image:
        """The panel of ``label`` (:func:`vitune.explain.overlay.overlay`): the source, its heatmap with the peak, the colour bar."""
        entry = self.labels[label]
        return overlay(self.source, entry.heatmap, entry.peak)

    def to_json(self) -> dict:
        """The ``explanations.json`` entry: file, width, height and per label its score and peak."""
        return {"file": self.file, "width": self.width, "height": self.height,
                "labels": {name: {"score": e.score, "peak": list(e.peak)} for name, e in self.labels.items()}}


def _name(item: ImageInput, index: int) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    return str(getattr(item, "filename", "") or f"image-{index}")


def _open(item: ImageInput) -> Image.Image:
    """Any accepted input -> a PIL image, with :mod:`vitune.data.images`' checks for files and bytes."""
    if isinstance(item, (str, Path)):
        try:
            return read_image(Path(item))
        except OSError as exc:
            raise BadImage(f"unreadable file: {exc.strerror or exc}") from exc
    if isinstance(item, (bytes, bytearray, memoryview)):
        return read_image(bytes(item))
    if isinstance(item, np.ndarray):
        try:
            return Image.fromarray(np.squeeze(item))
        except (TypeError, ValueError) as exc:
            raise BadImage(f"not an image array ({item.dtype}, shape {item.shape})") from exc
    if isinstance(item, Image.Image):
        return item
    raise BadImage(f"not an image: {type(item).__name__}")


def _decode(item: ImageInput, index: int, image_size: int) -> tuple[ImageExplanation, np.ndarray | None]:
    """The explanation shell of one input and its model pixels (None when it cannot be used)."""
    name = _name(item, index)
    try:
        image = _open(item)
        pixels = pil_to_array(image, image_size)
    except BadImage as exc:
        return ImageExplanation(file=name, reason=exc.reason), None
    source = to_8bit(image)
    return ImageExplanation(file=name, width=source.width, height=source.height, source=source), pixels


class _Chooser:
    """Which outputs to explain for one image's scores (``labels``, ``top`` K, or the task's default)."""

    def __init__(self, run: Run, labels: Sequence[str] | None, top: int | None):
        self.run, self.top = run, top
        self.fixed = None if labels is None else [self._index(name) for name in labels]
        self.thresholds = run.thresholds()
        if self.thresholds is None:
            self.thresholds = np.full(len(run.labels), 0.5)

    def _index(self, name: str) -> int:
        if name not in self.run.labels:
            raise UserError(f"unknown label {name!r}: the run's labels are {', '.join(self.run.labels)}")
        return self.run.labels.index(name)

    def __call__(self, scores: np.ndarray) -> list[int]:
        """Output indices for one image's score row."""
        if self.fixed is not None:
            return self.fixed
        if self.top is not None:
            return [int(i) for i in np.argsort(-scores, kind="stable")[: self.top]]
        return self.run.task.explained_outputs(scores, self.thresholds)


def _maps(run: Run, method: Method, pixels: np.ndarray, targets: list[int]) -> np.ndarray:
    """The method's maps ``[B, h, w]`` for image rows ``pixels`` and one output index each."""
    device = run.device
    batch = normalize(torch.as_tensor(pixels, device=device), run.prep)
    target = torch.as_tensor(targets, dtype=torch.long, device=device)
    return method.maps(run.model, batch, target).detach().float().cpu().numpy()


def _explain_chunk(run: Run, method: Method, chooser: _Chooser, shells: list[ImageExplanation],
                   pixels: np.ndarray, batch_size: int) -> None:
    """Fill ``shells`` (the readable images of a chunk, rows of ``pixels``) with their labels' maps."""
    scores = run.scores([pixels]).reshape(len(pixels), -1)
    jobs = [(row, output) for row in range(len(pixels)) for output in chooser(scores[row])]
    for start in range(0, len(jobs), batch_size):
        part = jobs[start : start + batch_size]
        maps = _maps(run, method, pixels[[row for row, _ in part]], [output for _, output in part])
        for (row, output), heatmap in zip(part, maps):
            shell = shells[row]
            shell.labels[run.labels[output]] = LabelExplanation(
                score=float(scores[row, output]), peak=peak(heatmap, shell.width, shell.height), heatmap=heatmap)


def iter_explanations(run: Run | Path | str, images: Iterable[ImageInput], labels: Sequence[str] | None = None,
                      top: int | None = None, method: str | None = None,
                      batch_size: int = 16) -> Iterator[ImageExplanation]:
    """:func:`explain_images` as a stream: one result per input, in order, a batch decoded at a time."""
    run = run if isinstance(run, Run) else load_run(run)
    chosen, chooser = pick_method(method, run.config), _Chooser(run, labels, top)
    items = iter(enumerate(images))
    while True:
        chunk = [_decode(item, index, run.prep.image_size) for index, item in _take(items, batch_size)]
        if not chunk:
            return
        readable = [(shell, pixels) for shell, pixels in chunk if pixels is not None]
        if readable:
            _explain_chunk(run, chosen, chooser, [s for s, _ in readable], np.stack([p for _, p in readable]),
                           batch_size)
        yield from (shell for shell, _ in chunk)


def _take(items: Iterator, n: int) -> list:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            break
    return chunk


def explain_images(run: Run | Path | str, images: Iterable[ImageInput], labels: Sequence[str] | None = None,
                   top: int | None = None, method: str | None = None, batch_size: int = 16) -> list[ImageExplanation]:
    """Explain each image's chosen labels with the run's model: one :class:`ImageExplanation` per input, in order.

    ``run`` is a :class:`vitune.models.run.Run` or a RUN_DIR; ``images`` are files, encoded bytes, PIL
    images or uint8 arrays (``H x W`` or ``H x W x 3``). ``labels`` explains those labels for every
    image, ``top`` each image's K best scores, neither the run's predictions. ``method`` is one of
    :data:`vitune.config.EXPLAIN_METHODS` (default: the best-pointing one the model supports). An
    image that cannot be used comes back with ``reason`` set and no labels.
    """
    return list(iter_explanations(run, images, labels, top, method, batch_size))


def method_name(run: Run, method: str | None = None) -> str:
    """The method :func:`explain_images` uses for ``run`` when asked for ``method``."""
    return pick_method(method, run.config).name


def encode_png(image: Image.Image) -> bytes:
    """An overlay as PNG bytes (for writing or serving)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
