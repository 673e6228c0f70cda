"""Where the model looks: class-specific heatmaps for the ViT family and Swin.

- :mod:`~vitune.explain.attention`: attention rollout, plain and gradient-weighted (Chefer et al.
  2021), written here as no library offers them for transformers' models;
- :mod:`~vitune.explain.gradcam`: Grad-CAM through the ``grad-cam`` package with a token reshape
  (the one method for Swin, which has no [CLS] token);
- :mod:`~vitune.explain.methods`: the methods by name and the default for a model;
- :mod:`~vitune.explain.overlay`: peaks in source pixels and overlay images;
- :mod:`~vitune.explain.explainer`: :func:`explain_images`, the library entry point;
- :mod:`~vitune.explain.command`: ``vitune explain`` / ``predict --explain`` writing a folder;
- :mod:`~vitune.explain.pointing`: the pointing game used to choose the default;
- :mod:`~vitune.evaluation.explanations`: the report's "Where the model looks" section.
"""

from vitune.explain.command import ExplainResult, explain, write_explanations
from vitune.explain.explainer import ImageExplanation, LabelExplanation, explain_images, iter_explanations
from vitune.explain.methods import METHODS, pick_method

__all__ = [
    "METHODS", "ExplainResult", "ImageExplanation", "LabelExplanation", "explain", "explain_images",
    "iter_explanations", "pick_method", "write_explanations",
]
