"""Settings of ``vitune explain``: :class:`ExplainConfig` and the method names (no ML import here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vitune.config.base import CommandConfig, check_choice, check_count, split_names
from vitune.errors import UserError

# Best pointing first (README, `bench/explain.py`): the default is the first one the model supports.
EXPLAIN_METHODS = ("grad-rollout", "rollout", "gradcam")


def parse_labels(labels: str | list[str] | None) -> list[str] | None:
    """``"A,B"`` or a list -> label names (None: not given); an empty list is an error."""
    names = split_names(labels)
    if names == []:
        raise UserError("--labels is empty: give label names separated by commas, e.g. --labels Effusion,Mass")
    return names


@dataclass
class ExplainConfig(CommandConfig):
    """Settings of ``vitune explain RUN_DIR IMAGES_OR_FOLDERS... --out DIR``; checks itself on construction.

    Args:
        run: RUN_DIR from `vitune train`.
        inputs: Image files and/or folders (searched recursively).
        out: Folder for the overlays, explanations.json and heatmaps.npz.
        labels: Labels to explain for every image, e.g. A,B (default: the predicted ones).
        top: Explain each image's K highest-scoring labels instead.
        method: grad-rollout|rollout|gradcam (default: the best-pointing one the model supports).
        batch_size: Images per forward and backward pass.
        device: cpu, cuda, cuda:1 ... (default: the first GPU, else the CPU).
    """

    arguments: ClassVar[dict[str, str]] = {"run": "RUN_DIR", "inputs": "IMAGES_OR_FOLDERS"}
    usage = "vitune explain RUN_DIR IMAGES_OR_FOLDERS... --out DIR"

    run: str
    inputs: list[str]
    out: str
    labels: list[str] | None = None
    top: int | None = None
    method: str | None = None
    batch_size: int = 16
    device: str | None = None

    def __post_init__(self) -> None:
        self.run, self.inputs, self.out = str(self.run), [str(p) for p in self.inputs], str(self.out)
        check_count("batch_size", self.batch_size)
        if self.top is not None:
            check_count("top", self.top)
        if self.labels is not None and self.top is not None:
            raise UserError("--labels and --top both given: choose the labels or the top K, not both")
        self.labels = parse_labels(self.labels)
        if self.method is not None:
            check_choice("method", self.method, EXPLAIN_METHODS)
