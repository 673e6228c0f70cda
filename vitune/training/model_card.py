"""The model card of a run (``model/README.md``) and ``--push-to-hub``.

The card is a Hub model card: YAML metadata (library_name, pipeline_tag, tags, datasets, base_model
and a ``model-index`` holding the main validation metric) built with ``huggingface_hub.ModelCardData``,
then the data summary, the validation and per-label results, the training config, how to use it and
its intended use and limitations. Pushing checks first that it can succeed (not offline, a token,
the Hub reachable within seconds), so an offline machine gets a clear error and never a hang.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from vitune.config import PretrainConfig, TrainConfig
from vitune.data.dataset_dir import DatasetInfo
from vitune.errors import UserError
from vitune.models.families import family_of
from vitune.tasks import get_task

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
HUB_TIMEOUT_S = 5.0  # how long --push-to-hub waits for the Hub to answer before it gives up
NOT_A_MEDICAL_DEVICE = (
    "**This model is not a medical device.** It has not been cleared or approved by any regulator and must "
    "not be used to diagnose, treat or triage patients, nor for any other clinical decision."
)


def _hub_id(model: str) -> str | None:
    """``config.model`` as a Hub id for ``base_model``, or None for a local checkpoint."""
    from vitune.models.aliases import resolve_model

    source = resolve_model(model)
    return None if Path(source).exists() else source


def card_metadata(config: TrainConfig, info: DatasetInfo, document: dict):
    """The ``ModelCardData`` of a run: Hub metadata and the model-index with the main validation metric."""
    from huggingface_hub import EvalResult, ModelCardData

    task = get_task(info.task)
    value = document["metrics"].get(task.main_metric)
    dataset = Path(config.data).name
    results = [EvalResult(task_type="image-classification", dataset_type=dataset, dataset_name=dataset,
                          dataset_split="validation", metric_type=task.main_metric, metric_value=value,
                          metric_name=task.main_metric)] if value is not None else None
    tags = ["vitune", "image-classification", "vision", info.task.replace("_", "-")]
    if config.lora:
        tags.append("lora")
    return ModelCardData(library_name="transformers", pipeline_tag="image-classification", tags=tags,
                         datasets=[dataset], base_model=_hub_id(config.model), metrics=[task.main_metric],
                         model_name=Path(config.out).name, eval_results=results)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _results_section(info: DatasetInfo, document: dict) -> str:
    main = get_task(info.task).main_metric
    metrics = _table(["metric", "value"], [[f"{k} (main)" if k == main else k, v] for k, v in document["metrics"].items()])
    per_label = document.get("per_label") or {}
    columns = list(dict.fromkeys(key for values in per_label.values() for key in values))
    labels = _table(["label", *columns], [[name, *(values.get(c) for c in columns)] for name, values in per_label.items()])
    text = f"## Results\n\nOn the validation split ({document['num_samples']} images), the best epoch's model:\n\n{metrics}\n"
    return text + (f"\n### Per label\n\n{labels}\n" if per_label else "")


def _data_section(config: TrainConfig, info: DatasetInfo) -> str:
    splits = _table(["split", "images"], [[name, n] for name, n in info.splits.items()])
    skipped = f" {len(info.skipped)} source images were skipped (unreadable or invalid)." if info.skipped else ""
    return (f"## Data\n\n`{Path(config.data).name}`: a {info.task} dataset of {len(info.labels)} labels "
            f"({', '.join(info.labels)}), {info.format} format, images resized to {info.image_size} px, "
            f"split {info.split_method or 'as given'} (seed {info.seed}).{skipped}\n\n{splits}\n")


def _training_section(config: TrainConfig, document: dict) -> str:
    params = document.get("parameters") or {}
    share = (f" {params['trainable']:,} of {params['total']:,} parameters trained "
             f"({100 * params['trainable'] / params['total']:.1f} %)." if params.get("total") else "")
    lora = f" LoRA rank {config.lora} (adapter in `adapter/`, merged into this model)." if config.lora else ""
    return (f"## Training\n\nFine-tuned with vitune on transformers' Trainer in "
            f"{document.get('train_seconds', 0):.0f} s.{share}{lora} The full config (`vitune train --config` "
            f"repeats the run):\n\n```yaml\n{config.to_yaml()}```\n")


def _usage_section(config: TrainConfig, model_config) -> str:
    where = config.push_to_hub or str(Path(config.out) / "model")
    family = family_of(model_config)
    if not family.vitune_class:
        return ("## How to use\n\n```python\nfrom transformers import pipeline\n\n"
                f"classifier = pipeline(\"image-classification\", model=\"{where}\")\n"
                "classifier(\"image.png\", top_k=None)\n```\n")
    return (f"## How to use\n\nThe model is a {family.name} (`model_type: {family.model_type}`): vitune's class, which "
            "transformers loads once vitune has registered it (`pip install vitune`). Without that, transformers "
            "says it does not know the model type.\n\n```python\nfrom transformers import pipeline\n\n"
            "from vitune.models.pooling import register_auto_classes\n\n"
            "register_auto_classes()  # AutoConfig, AutoModel and AutoModelForImageClassification learn the class\n"
            f"classifier = pipeline(\"image-classification\", model=\"{where}\")\n"
            "classifier(\"image.png\", top_k=None)\n```\n\n"
            f"`vitune predict`, `vitune evaluate`, `vitune serve` and `vitune export` load it as they are.\n")


def _limitations_section(info: DatasetInfo) -> str:
    return (
        "## Intended use and limitations\n\n"
        "For research, teaching and as a starting point for models that are then validated properly. "
        "The metrics above are on the validation split that chose the best epoch, so they are optimistic: "
        "measure held-out data with `vitune evaluate RUN_DIR --split test`. The model knows only the labels "
        f"it was trained on ({', '.join(info.labels)}), learns the biases of its data (site, scanner, "
        "population, label noise) and can fail silently on images unlike them.\n\n"
        f"{NOT_A_MEDICAL_DEVICE}\n"
    )


def model_card(config: TrainConfig, info: DatasetInfo, document: dict, model_config) -> str:
    """The text of ``model/README.md`` for a run with ``metrics.json`` content ``document`` and the trained
    model's config ``model_config``."""
    name = Path(config.out).name
    base = _hub_id(config.model) or Path(config.model).name
    sections = [
        f"# {name}\n\n`{base}` fine-tuned with vitune for {info.task} image classification "
        f"on `{Path(config.data).name}`.\n",
        _results_section(info, document),
        _data_section(config, info),
        _training_section(config, document),
        _usage_section(config, model_config),
        _limitations_section(info),
    ]
    return f"---\n{card_metadata(config, info, document).to_yaml()}\n---\n\n" + "\n".join(sections)


def pretraining_card(config: PretrainConfig, document: dict) -> str:
    """The text of ``model/README.md`` of a `vitune pretrain` run: an encoder without a classifier, how it was
    pre-trained (``metrics.json`` content ``document``) and how to fine-tune or load it."""
    from huggingface_hub import ModelCardData

    name = Path(config.out).name
    details = document["pretraining"]
    base = _hub_id(config.model) if details["start"] != "random" else None
    metadata = ModelCardData(library_name="transformers", pipeline_tag="image-feature-extraction",
                             tags=["vitune", "vision", "mae", "self-supervised"], base_model=base, model_name=name)
    history = document.get("history") or []
    losses = _table(["epoch", "train_loss", "eval_loss"],
                    [[entry.get("epoch"), entry.get("train_loss"), entry.get("eval_loss")] for entry in history])
    settings = _table(["setting", "value"], [[key, details.get(key)] for key in (
        "start", "mask_ratio", "norm_pix_loss", "decoder_width", "decoder_depth", "learning_rate", "total_batch")])
    started = {"random": "a random start", "encoder": f"the encoder of `{base or Path(config.model).name}`",
               "mae": f"the MAE `{base or Path(config.model).name}`, continued"}[details["start"]]
    where = str(Path(config.out) / "model")
    sections = [
        f"# {name}\n\nA vision transformer encoder pre-trained with vitune as a masked autoencoder (MAE) on "
        f"`{Path(config.data).name}`, from {started}. It has no classifier: it is the start of a fine-tuning run.\n",
        f"## Pre-training\n\n{details['train_images']} images at {details['image_size']} px "
        f"({details['held_back_images']} more held back for the reconstruction loss, {len(details['skipped'])} "
        f"skipped as unreadable), {document.get('train_seconds', 0):.0f} s. The decoder that reconstructed the masked "
        f"patches is left out here; the whole MAE is in the run's `mae/`.\n\n{settings}\n\n{losses}\n",
        f"## How to use\n\n```bash\nvitune train --data DATASET_DIR --model {Path(config.out)} --out RUN_DIR "
        f"--pooling mean\n```\n\nor, for its features:\n\n```python\nfrom transformers import AutoModel\n\n"
        f"encoder = AutoModel.from_pretrained(\"{where}\")\n```\n",
        "## Intended use and limitations\n\nA starting point for fine-tuning on images like those it was pre-trained "
        "on. Reconstructing masked patches says nothing of how well a classifier built on it will do: fine-tune it "
        f"and evaluate on held-out data. It learns the biases of its images (site, scanner, population).\n\n"
        f"{NOT_A_MEDICAL_DEVICE}\n",
    ]
    return f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(sections)


def check_can_push(repo_id: str) -> str:
    """The user's Hub token, after checking that ``repo_id`` can be pushed to now (else a :class:`UserError`)."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise UserError(f"--push-to-hub {repo_id}: the Hub is off (HF_HUB_OFFLINE is set): unset it, or drop "
                        "--push-to-hub and upload RUN_DIR/model later with `hf upload`")
    token = get_token()
    if not token:
        raise UserError(f"--push-to-hub {repo_id} needs your Hub token: run `hf auth login` or set HF_TOKEN")
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"--push-to-hub {repo_id}: cannot reach {constants.ENDPOINT} ({exc.strerror or exc}): "
                        "check the network, or drop --push-to-hub and upload RUN_DIR/model later") from exc
    return token


def push_to_hub(model_dir: Path, repo_id: str) -> str:
    """Upload ``model_dir`` (model, processor, card) to ``repo_id``; returns the repo's URL."""
    from huggingface_hub import HfApi

    token = check_can_push(repo_id)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, repo_type="model",
                          commit_message="vitune: fine-tuned model and card")
    except Exception as exc:  # HTTP, auth and network errors of the Hub client
        raise UserError(f"--push-to-hub {repo_id} failed: {str(exc).splitlines()[0] if str(exc) else exc!r}; "
                        f"the model is saved in {model_dir}") from exc
    log.info("pushed %s to %s", model_dir, url)
    return str(url)
