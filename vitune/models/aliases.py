"""Model registry and loading: aliases, Hub ids and local checkpoints, one code path for all.

Preprocessing (size, mean, std) is resolved from the checkpoint's own image processor, never from
copied constants, in the spirit of timm's ``resolve_data_config``. Each alias names its family in
the family table (:mod:`vitune.models.families`), which `vitune models` shows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from vitune.errors import UserError
from vitune.models import timm as timm_models
from vitune.models.families import BEIT, DEIT, DINOV2, SWIN, TIMM_WRAPPER, VIT, Family, family_of, pooled_classifier
from vitune.storage.layout import RunDir
from vitune.tasks import Task, get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelAlias:
    """A named model: its Hub id, family and native image size."""

    name: str
    hub_id: str
    family: Family
    image_size: int
    note: str = ""


def _vit(size: str, patch: int, res: int) -> ModelAlias:
    # The 224 checkpoints are the ImageNet-21k pre-trained ones (no head, the seeds' starting point);
    # the 384 ones exist only as ImageNet-1k fine-tunes.
    suffix = "-in21k" if res == 224 else ""
    return ModelAlias(
        name=f"vit-{size}-p{patch}-{res}",
        hub_id=f"google/vit-{size}-patch{patch}-{res}{suffix}",
        family=VIT,
        image_size=res,
        note="ImageNet-21k pre-trained" if res == 224 else "ImageNet-21k + 1k fine-tuned at 384",
    )


REGISTRY: dict[str, ModelAlias] = {
    a.name: a
    for a in [
        *(_vit(s, p, r) for s in ("base", "large") for p in (16, 32) for r in (224, 384)),
        ModelAlias("deit-tiny", "facebook/deit-tiny-patch16-224", DEIT, 224),
        ModelAlias("deit-small", "facebook/deit-small-patch16-224", DEIT, 224),
        ModelAlias("deit-base", "facebook/deit-base-patch16-224", DEIT, 224),
        ModelAlias("swin-tiny", "microsoft/swin-tiny-patch4-window7-224", SWIN, 224),
        ModelAlias("swin-base", "microsoft/swin-base-patch4-window7-224-in22k", SWIN, 224),
        ModelAlias("beit-base", "microsoft/beit-base-patch16-224-pt22k-ft22k", BEIT, 224),
        ModelAlias("dinov2-small", "facebook/dinov2-small", DINOV2, 224),
        ModelAlias("dinov2-base", "facebook/dinov2-base", DINOV2, 224),
        ModelAlias("timm-vit-small-augreg", "timm/vit_small_patch16_224.augreg_in21k", TIMM_WRAPPER, 224,
                   "ImageNet-21k AugReg"),
        ModelAlias("timm-vit-base-augreg", "timm/vit_base_patch16_224.augreg_in21k", TIMM_WRAPPER, 224,
                   "ImageNet-21k AugReg"),
        ModelAlias("timm-vit-base-mae", "timm/vit_base_patch16_224.mae", TIMM_WRAPPER, 224, "MAE pre-trained"),
        ModelAlias("timm-deit3-base", "timm/deit3_base_patch16_224.fb_in22k_ft_in1k", TIMM_WRAPPER, 224, "DeiT III"),
    ]
}


def list_models() -> list[ModelAlias]:
    """All aliases, in registry order."""
    return list(REGISTRY.values())


def resolve_model(name: str) -> str:
    """Map an alias to its Hub id and a RUN_DIR to its ``model/``; a local directory or any other Hub id is
    returned as is."""
    if name in REGISTRY:
        return REGISTRY[name].hub_id
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and RunDir(path).is_run():
            return str(RunDir(path).model)
        if not (path / "config.json").is_file():
            raise UserError(
                f"{name} is not a model checkpoint (no config.json): give a `save_pretrained` "
                "directory, a Hub id or an alias from `vitune models`"
            )
        return str(path)
    if name.count("/") != 1:
        raise UserError(
            f"unknown model {name!r}: not an alias (see `vitune models`), a local directory or a Hub id"
        )
    return name


@dataclass(frozen=True)
class Preprocessing:
    """What the model expects of its input: square size and per-channel normalisation."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _processor_size(processor, config) -> int:
    size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = size or getattr(processor, "size", None)
    for key in ("height", "shortest_edge", "width"):
        value = getattr(size, key, None) if not isinstance(size, dict) else size.get(key)
        if value:
            return int(value)
    return int(getattr(config, "image_size", 224))


def load_image_processor(model: str, trust_remote_code: bool = False):
    """The checkpoint's own image processor (slow/PIL flavour: no torchvision needed).

    A timm checkpoint's (its ``pretrained_cfg``) comes back as the equivalent plain processor.
    """
    from transformers import AutoImageProcessor

    source = resolve_model(model)
    register_vitune_models()
    try:
        processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise UserError(f"cannot load the image processor of {model!r}: {exc}".splitlines()[0]) from exc
    return timm_models.plain_processor(processor) if timm_models.is_timm_processor(processor) else processor


def load_model_config(model: str, trust_remote_code: bool = False):
    """The checkpoint's ``PretrainedConfig``; an unknown or unreachable model is a :class:`UserError`."""
    from transformers import AutoConfig

    register_vitune_models()
    try:
        return AutoConfig.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0].rstrip(".") if str(exc) else type(exc).__name__
        raise UserError(
            f"cannot load model {model!r}: {reason}. Give a `vitune models` alias, a Hub id (needs the "
            "network or the local Hub cache) or a local save_pretrained directory"
        ) from exc


def register_vitune_models() -> None:
    """Let transformers load vitune's own model types (the mean-pooled ViT, :mod:`vitune.models.pooling`)."""
    from vitune.models.pooling import register_auto_classes

    register_auto_classes()


def resolve_preprocessing(model: str, trust_remote_code: bool = False) -> Preprocessing:
    """Size, mean and std from the checkpoint's processor and config (no copied constants)."""
    config = load_model_config(model, trust_remote_code)
    try:
        processor = load_image_processor(model, trust_remote_code)
    except UserError:
        log.warning("%s has no image processor; using its config's image_size and mean/std 0.5", model)
        size = int(getattr(config, "image_size", 224))
        return Preprocessing(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    mean = tuple(float(v) for v in (processor.image_mean if processor.do_normalize else (0.0, 0.0, 0.0)))
    std = tuple(float(v) for v in (processor.image_std if processor.do_normalize else (1.0, 1.0, 1.0)))
    return Preprocessing(_processor_size(processor, config), mean, std)  # type: ignore[arg-type]


def default_image_size(model: str | None) -> int:
    """The image size a dataset should be cached at for ``model`` (224 when unknown)."""
    if model is None:
        return 224
    if model in REGISTRY:
        return REGISTRY[model].image_size
    return resolve_preprocessing(model).image_size


def load_classifier(
    model: str,
    task: str | Task,
    labels: list[str],
    trust_remote_code: bool = False,
    config_overrides: dict | None = None,
    pooling: str | None = None,
):
    """A classification model from ``model`` with a fresh head sized for ``labels`` and ``task``.

    ``id2label``/``label2id`` and ``problem_type`` are set so the saved model works with
    ``pipeline("image-classification")``. A replaced head is reported (expected missing keys).
    ``config_overrides`` are further config values (``drop_path_rate``). A family without an image
    classifier of its own (ViT-MAE) loads its pre-trained encoder into the classifier of the family
    it fine-tunes as (ViT). ``pooling`` (``cls``/``mean``, None: the checkpoint's own) picks the head's
    tokens (:func:`vitune.models.families.pooled_classifier`): ``mean`` makes a ViT vitune's mean-pooled ViT.
    """
    from transformers import AutoModelForImageClassification

    source = resolve_model(model)
    task = get_task(task)
    names = task.output_names(labels)
    head = {"num_labels": len(names), "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)}, "problem_type": task.problem_type}
    overrides = config_overrides or {}
    config = load_model_config(model, trust_remote_code)
    classifier_family, pooling_values = pooled_classifier(config, pooling)
    values = {**head, **overrides, **pooling_values}
    if timm_models.is_timm_config(config):  # timm takes the head size from the config alone
        timm_config = timm_models.classifier_config(config, len(names), head["id2label"], task.problem_type)
        settings = {"config": timm_config, **overrides}
    elif classifier_family is not family_of(config):
        settings = {"config": fine_tuning_config(config, classifier_family, values)}
    else:
        settings = values
    try:
        net = AutoModelForImageClassification.from_pretrained(
            source,
            **settings,
            ignore_mismatched_sizes=True,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,  # never unpickle downloaded weights
        )
    except OSError as exc:
        raise UserError(f"cannot load model {model!r}: {exc}".splitlines()[0]) from exc
    log.info("loaded %s with a new %d-output head for %s", source, len(names), task.name)
    return net


def fine_tuning_config(config, family: Family, settings: dict):
    """The config of ``family``'s model with the architecture of ``config`` (another family's: a pre-training
    one, the ViT a mean-pooled ViT comes from) and ``settings`` (the head, the overrides); keys only
    ``config``'s family knows are left out."""
    from transformers import AutoConfig

    known = AutoConfig.for_model(family.model_type).to_dict()
    bookkeeping = ("model_type", "architectures", "transformers_version")
    shared = {key: value for key, value in config.to_dict().items() if key in known and key not in bookkeeping}
    return AutoConfig.for_model(family.model_type, **{**shared, **settings})
