"""The explanation methods by name, and the default: the best-pointing one the model supports.

Each method maps normalised pixels ``[B, 3, S, S]`` and one logit index per image to a map
``[B, h, w]`` (larger = more relevant; the grid is the model's patches, or the input for Grad-CAM).
The order of :data:`vitune.config.EXPLAIN_METHODS` is the pointing score on synthetic lesions
with known boxes (``bench/explain.py``, figures in the README), best first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from vitune.config import EXPLAIN_METHODS, check_choice
from vitune.errors import UserError
from vitune.explain.attention import gradient_rollout_maps, rollout_maps, supports_rollout
from vitune.explain.gradcam import gradcam_maps, supports_gradcam
from vitune.models.families import families_with


@dataclass(frozen=True)
class Method:
    """One explanation method: its name, whether a model config suits it, and its batched maps."""

    name: str
    supports: Callable[[object], bool]
    maps: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    class_specific: bool = True


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("grad-rollout", supports_rollout, gradient_rollout_maps),
        Method("rollout", supports_rollout, rollout_maps, class_specific=False),
        Method("gradcam", supports_gradcam, gradcam_maps),
    )
}
assert tuple(METHODS) == EXPLAIN_METHODS


def _explained_families() -> str:
    """The families some method explains, for messages (Grad-CAM covers every one rollout does)."""
    return ", ".join(family.name for family in families_with("supports_gradcam"))


def pick_method(name: str | None, config) -> Method:
    """The method ``name`` (checked against the model) or, for None, the best one the model supports."""
    model_type = getattr(config, "model_type", "unknown")
    if name is None:
        for method in METHODS.values():
            if method.supports(config):
                return method
        raise UserError(f"no explanation method supports {model_type} models: vitune explains {_explained_families()}")
    check_choice("method", name, EXPLAIN_METHODS)
    method = METHODS[name]
    if not method.supports(config):
        usable = [m.name for m in METHODS.values() if m.supports(config)]
        alternatives = ", ".join(usable) if usable else f"another architecture ({_explained_families()})"
        raise UserError(f"--method {name} does not apply to {model_type} models: use {alternatives}")
    return method
