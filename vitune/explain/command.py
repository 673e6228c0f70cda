"""``vitune explain`` (and ``vitune predict --explain``): explanations of image files written to a folder.

``DIR`` gets, all at once (built in a staging folder and renamed into place, under DIR's lock):

- ``overlays/NNNN-STEM-LABEL.png``: the source image (at least 224 px wide, scaled up sharp when
  smaller), beside it the same image under the label's heatmap with a ring round the peak, and the
  colour bar; the label and score are in the file name and ``explanations.json``, not on the pixels;
- ``explanations.json``: ``{"method", "images": [{"file", "width", "height", "labels": {LABEL:
  {"score", "peak": [x, y], "overlay"}}}], "skipped": [{"file", "reason"}]}``, peaks in the
  source's pixels (x right, y down);
- ``heatmaps.npz``: the raw maps, ``"I/LABEL"`` -> float32 ``[h, w]`` for image ``I`` of ``images``.

Files are found and skipped as ``vitune predict`` finds and skips them.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from vitune.config import ExplainConfig
from vitune.data.sources.base import Skipped
from vitune.errors import UserError
from vitune.explain.explainer import ImageExplanation, encode_png, iter_explanations, method_name
from vitune.models.run import Run, load_run
from vitune.runtime.progress import progress
from vitune.storage.atomic import disk_full, remove_orphans, replace_dir, staging_dir, write_atomic
from vitune.storage.lock import OutputLock

EXPLANATIONS_FILE, HEATMAPS_FILE, OVERLAYS_DIR = "explanations.json", "heatmaps.npz", "overlays"


@dataclass
class ExplainResult:
    """What ``explain`` wrote: the folder, the method, the explained files and the skipped ones."""

    out: Path
    method: str
    images: list[dict]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def overlays(self) -> int:
        """How many overlay PNGs were written."""
        return sum(len(entry["labels"]) for entry in self.images)


def _safe_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "image"


class _Writer:
    """Collects the JSON entries and maps while writing each overlay into the staging folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / OVERLAYS_DIR).mkdir(parents=True)
        self.images: list[dict] = []
        self.maps: dict[str, np.ndarray] = {}
        self.skipped: list[Skipped] = []

    def add(self, item: ImageExplanation) -> None:
        """Write ``item``'s overlays and keep its entry and maps (an unusable image goes to ``skipped``)."""
        if item.reason is not None:
            self.skipped.append(Skipped(item.file, item.reason))
            return
        index = len(self.images)
        entry = item.to_json()
        for label in item.labels:
            name = f"{OVERLAYS_DIR}/{index:04d}-{_safe_name(Path(item.file).stem)}-{_safe_name(label)}.png"
            (self.folder / name).write_bytes(encode_png(item.overlay(label)))
            entry["labels"][label]["overlay"] = name
            self.maps[f"{index}/{label}"] = item.labels[label].heatmap.astype(np.float32)
        self.images.append(entry)

    def finish(self, method: str) -> None:
        """Write ``explanations.json`` and ``heatmaps.npz``."""
        document = {"method": method, "images": self.images,
                    "skipped": [{"file": s.file, "reason": s.reason} for s in self.skipped]}
        write_atomic(self.folder / EXPLANATIONS_FILE, json.dumps(document, indent=2) + "\n")
        buffer = io.BytesIO()
        np.savez(buffer, **self.maps)
        write_atomic(self.folder / HEATMAPS_FILE, buffer.getvalue())


def _check_out(out: Path) -> None:
    """``out`` may be new, empty or earlier explanations (replaced); never a file or another folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the explanations")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPLANATIONS_FILE).is_file():
        raise UserError(f"--out {out} holds other files and no {EXPLANATIONS_FILE}: choose an empty or new folder")


def write_explanations(run: Run, images: Iterable, out: Path | str, labels: Sequence[str] | None = None,
                       top: int | None = None, method: str | None = None, batch_size: int = 16,
                       skipped: Sequence[Skipped] = (), total: int | None = None) -> ExplainResult:
    """Explain ``images`` (anything :func:`explain_images` takes) into folder ``out``; see the module docstring.

    ``skipped`` are files already rejected (e.g. by :func:`vitune.data.inputs.expand_inputs`); a
    :class:`UserError` is raised when no image at all could be explained.
    """
    out = Path(out).expanduser()
    _check_out(out)
    chosen = method_name(run, method)
    with OutputLock(out):
        remove_orphans(out)
        kept = f"{out} is unchanged" if out.exists() else "nothing was written"
        with disk_full(f"explaining into {out}", kept), staging_dir(out) as staging:
            writer = _Writer(staging / "explanations")
            writer.skipped.extend(skipped)
            stream = iter_explanations(run, images, labels, top, chosen, batch_size)
            for item in progress(stream, total=total, desc="explaining", unit="image"):
                writer.add(item)
            if not writer.images:
                reasons = "; ".join(f"{Path(s.file).name}: {s.reason}" for s in writer.skipped[:3])
                raise UserError(f"no image to explain{f' ({reasons})' if reasons else ''}: give readable image files")
            writer.finish(chosen)
            replace_dir(writer.folder, out)
    return ExplainResult(out=out, method=chosen, images=writer.images, skipped=writer.skipped)


def explain(config: ExplainConfig) -> ExplainResult:
    """``vitune explain``: explain every image in ``config.inputs`` (files or folders) into ``config.out``."""
    from vitune.data.inputs import expand_inputs

    files, skipped = expand_inputs(config.inputs)
    run = load_run(config.run, config.device)
    return write_explanations(run, files, config.out, labels=config.labels, top=config.top,
                              method=config.method, batch_size=config.batch_size, skipped=skipped, total=len(files))
