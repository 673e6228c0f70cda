"""TrainConfig: every setting of a `vitune train` run, validated, and saved as ``config.yaml``.

:class:`TrainerConfig` holds the settings it shares with `vitune pretrain` (:mod:`vitune.config.pretrain`):
the ones ``transformers.Trainer`` takes, and where the run reads and writes. Defaults are the seeds' recipe (3 epochs, lr 2e-4, 25 % warm-up then cosine decay). The YAML
file written into RUN_DIR holds every field, so ``vitune train --config RUN_DIR/config.yaml``
repeats the run; flags given on the command line override the file's values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vitune.config.base import CommandConfig, check_choice, check_count, check_pooling, check_positive, split_names
from vitune.errors import UserError
from vitune.storage.atomic import write_atomic
from vitune.tasks.losses import MULTI_LABEL_LOSSES

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = (
    "cosine",
    "linear",
    "constant",
    "constant_with_warmup",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
)
REGRESSION_LOSSES = ("mse", "bce")
POS_WEIGHTS = ("off", "auto")
# "light" = random resized crop (area 0.85-1) plus a small shift. Horizontal flips are a separate
# opt-in (`augment_hflip`) because laterality carries meaning in chest X-rays (heart on the left,
# situs inversus, left/right-specific findings and markers): a flipped film is a different patient.
# "strong" = the published fine-tuning recipe's RandAugment-class augmentation (vitune/augment.py).
AUGMENTS = ("none", "light", "strong")
RECIPES = ("seed", "strong")  # presets: vitune/config/presets/recipes/<name>.yaml
DEEPSPEED_PRESETS = ("zero2", "zero3")  # shipped DeepSpeed configs: vitune/config/presets/ds_<name>.json
FSDP_MODES = ("full_shard", "shard_grad_op")  # what FSDP shards: weights, gradients and optimizer state, or the last two
REPORT_TO = ("none", "tensorboard", "mlflow", "wandb")
HUB_REPO_ID = re.compile(r"([\w.-]+/)?[\w.-]+")
REQUIRED = ("data", "model", "out")
LOCAL_PATHS = ("data", "model", "out", "deepspeed")
# TrainConfig setting -> the transformers.TrainingArguments field that takes its value as it is: the one
# mapping between the two, used to build a run's TrainingArguments and to name the fields a tune trial sets.
TRAINING_ARGUMENTS = {
    "epochs": "num_train_epochs",
    "lr": "learning_rate",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "warmup": "warmup_steps",  # below 1: a fraction of the steps
    "scheduler": "lr_scheduler_type",
    "weight_decay": "weight_decay",
    "seed": "seed",
    "save_total_limit": "save_total_limit",
    "compile": "torch_compile",
    "gradient_checkpointing": "activation_checkpointing",
}


@dataclass
class TrainerConfig(CommandConfig):
    """The settings every command on ``transformers.Trainer`` shares (`vitune train`, `vitune pretrain`).

    A command's config extends it with its own settings and may give a shared one another default
    (a subclass field of the same name keeps its place). The Trainer's features come with these:
    resume, DDP and DeepSpeed, progress, ``--report-to`` and the one writer of RUN_DIR.

    Args:
        data: DATASET_DIR from `vitune data prepare`.
        model: Alias (`vitune models`), Hub id, local checkpoint or RUN_DIR.
        out: RUN_DIR to write.
        epochs: Training epochs.
        lr: Peak learning rate.
        batch_size: Per-device training batch size.
        eval_batch_size: Per-device evaluation batch size (default: 2x batch size).
        warmup: Warm-up as a fraction of the steps.
        scheduler: cosine|linear|constant|...
        weight_decay: AdamW weight decay ([CLS], distillation and mask tokens and position embeddings keep none).
        precision: auto|fp32|bf16|fp16 (auto: bf16 on a capable GPU, else fp32).
        grad_accum: Gradient accumulation steps.
        seed: Random seed.
        resume: Continue from the last checkpoint in RUN_DIR/checkpoints.
        augment_hflip: Random horizontal flips (off: X-ray laterality matters).
        max_steps: Stop after this many optimizer steps.
        num_workers: Data-loader workers (default: 0 on CPU, half the cores on GPU).
        logging_steps: Log every N steps (default: about 50 points per run).
        save_total_limit: Checkpoints kept, best included.
        deepspeed: DeepSpeed ZeRO: zero2|zero3 (the shipped configs) or a DeepSpeed JSON config file.
        fsdp: PyTorch FSDP: full_shard (weights, gradients, optimizer state) or shard_grad_op (the last two).
        trust_remote_code: Allow Hub model code.
        report_to: none|tensorboard|mlflow|wandb, several as A,B: logs go inside RUN_DIR
          (MLflow: RUN_DIR/mlruns unless MLFLOW_TRACKING_URI is set).
        compile: torch.compile the model (TrainingArguments.torch_compile).
        gradient_checkpointing: Recompute activations in the backward pass (less memory, more compute).
    """

    noun = "training setting"
    usage = "vitune train --data DATASET_DIR --model MODEL --out RUN_DIR"

    data: str
    model: str
    out: str
    epochs: float = 3
    lr: float = 2e-4
    batch_size: int = 32
    eval_batch_size: int | None = None
    warmup: float = 0.25
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    precision: str = "auto"
    grad_accum: int = 1
    seed: int = 0
    resume: bool = False
    augment_hflip: bool = False
    max_steps: int | None = None
    num_workers: int | None = None
    logging_steps: int | None = None
    save_total_limit: int = 2
    deepspeed: str | None = None
    fsdp: str | None = None
    trust_remote_code: bool = False
    report_to: list[str] = field(default_factory=list)
    compile: bool = False
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name in REQUIRED:
            if not getattr(self, name):
                raise UserError(f"missing --{name}: `{self.usage}`")
            setattr(self, name, str(getattr(self, name)))
        for name, choices in (("precision", PRECISIONS), ("scheduler", SCHEDULERS)):
            check_choice(name, getattr(self, name), choices)
        for name in ("epochs", "batch_size", "grad_accum", "save_total_limit"):
            check_positive(name, getattr(self, name))
        for name in ("lr", "eval_batch_size", "max_steps", "logging_steps"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        if not 0.0 <= self.warmup < 1.0:
            raise UserError(f"--warmup {self.warmup} is a fraction of the training steps: give a value in [0, 1)")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay {self.weight_decay} is negative: use 0 or a small positive value")
        if self.num_workers is not None and self.num_workers < 0:
            raise UserError(f"--num-workers {self.num_workers} is negative: use 0 (main process) or more")
        self.report_to = report_destinations(self.report_to)

    def save(self, path: Path | str) -> None:
        """Write the YAML file that repeats this run from any working directory.

        Local paths (data, model directory, DeepSpeed file) are saved absolute; ``resume`` is a
        launch choice, saved as false.
        """
        values = {**self.to_dict(), "resume": False}
        for name in LOCAL_PATHS:
            if values[name] is not None and Path(values[name]).exists():
                values[name] = str(Path(values[name]).resolve())
        run = type(self)(**values)
        write_atomic(path, run.to_yaml())

    def training_argument_values(self) -> dict:
        """The ``transformers.TrainingArguments`` values this config sets as they are (:data:`TRAINING_ARGUMENTS`)."""
        return {argument: getattr(self, setting) for setting, argument in TRAINING_ARGUMENTS.items()}


@dataclass
class TrainConfig(TrainerConfig):
    """All settings of one training run; checks itself on construction.

    The settings every Trainer command shares are :class:`TrainerConfig`'s; these are fine-tuning's own.

    Args:
        regression_loss: mse|bce on the [0, 1]-scaled target.
        pos_weight: off|auto: auto weighs each label's positives by neg/pos (multi-label).
        loss: bce|focal|asl: multi-label loss; focal (Lin et al.) or the asymmetric loss of Ridnik et al. (timm's).
        focal_gamma: Focusing exponent of --loss focal.
        asl_gamma_neg: Focusing exponent of the negatives under --loss asl.
        asl_gamma_pos: Focusing exponent of the positives under --loss asl.
        asl_clip: Probability margin shifted off easy negatives under --loss asl.
        augment: none|light|strong: light = crop (area 0.85-1) + shift; strong = crop + RandAugment m6 + erasing.
        push_to_hub: Hub repo id (OWNER/NAME or NAME) to push model/ and its card to, with your token.
        lora: LoRA rank R (0: off): train low-rank adapters and the head only (ViT family, DINOv2, Swin).
        lora_alpha: LoRA scaling alpha (default: the rank R).
        lora_targets: Module names LoRA adapts, e.g. query,value (default: the query and value projections).
        recipe: seed|strong: preset of the other settings (vitune/config/presets/recipes/); settings given win.
        layer_decay: Layer-wise LR decay: the LR of layer l of L is lr * decay^(L - l) (ViT, DeiT, BEiT, DINOv2, Swin).
        drop_path: Stochastic depth rate of the last block (linear from 0 over the depth).
        ema: Keep an EMA of the weights with this decay (e.g. 0.9998); the EMA is evaluated and saved.
        label_smoothing: Label smoothing (classification).
        mixup: Mixup Beta alpha (0 = off).
        cutmix: Cutmix Beta alpha (0 = off); with mixup, one of the two per batch.
        pooling: cls|mean: the tokens the classifier reads; mean = the patch tokens' mean, then a LayerNorm, as MAE
          and EVA-X fine-tune (default: the model's own).
        folds: Patient-grouped K-fold cross-validation: K runs in RUN_DIR/fold-I on train+validation (test untouched),
          their validation metrics in RUN_DIR/cv.json.
        fold: Train fold I of --folds K alone into RUN_DIR (each fold's config.yaml; runs folds on several machines).
    """

    regression_loss: str = "mse"
    pos_weight: str = "off"
    loss: str = "bce"
    focal_gamma: float = 2.0
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    augment: str = "none"
    push_to_hub: str | None = None
    lora: int = 0
    lora_alpha: float | None = None
    lora_targets: list[str] | None = None
    recipe: str | None = None
    layer_decay: float | None = None
    drop_path: float = 0.0
    ema: float | None = None
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    pooling: str | None = None
    folds: int | None = None
    fold: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("lr", self.lr)
        self._check_folds()
        for name, choices in (("regression_loss", REGRESSION_LOSSES), ("pos_weight", POS_WEIGHTS),
                              ("augment", AUGMENTS), ("loss", MULTI_LABEL_LOSSES)):
            check_choice(name, getattr(self, name), choices)
        if self.pooling is not None:
            check_pooling(self.pooling)
        self.lora_targets = lora_target_names(self.lora_targets)
        _check_tracking_and_lora(self)
        self._check_recipe_settings()
        self._check_engine()

    def _check_recipe_settings(self) -> None:
        if self.recipe is not None:
            check_choice("recipe", self.recipe, RECIPES)
        ranges = {"layer_decay": ("(0, 1]", lambda v: 0 < v <= 1), "ema": ("(0, 1)", lambda v: 0 < v < 1),
                  "drop_path": ("[0, 1)", lambda v: 0 <= v < 1), "label_smoothing": ("[0, 1)", lambda v: 0 <= v < 1)}
        for name, (shown, fits) in ranges.items():
            value = getattr(self, name)
            if value is not None and not fits(value):
                raise UserError(f"{self.flag(name)} {value} is out of range: give a value in {shown}")
        for name in ("mixup", "cutmix"):
            if getattr(self, name) < 0:
                raise UserError(f"{self.flag(name)} {getattr(self, name)} is a Beta alpha: use 0 (off) or more")

    def _check_folds(self) -> None:
        """``--folds K`` is 2 or more; ``--fold I`` one of its folds; one model is pushed, not K."""
        if self.folds is not None:
            check_count("folds", self.folds, minimum=2)
        if self.fold is not None and self.folds is None:
            raise UserError(f"--fold {self.fold} picks one fold of a cross-validation: add --folds K")
        if self.fold is not None and not (isinstance(self.fold, int) and 0 <= self.fold < self.folds):
            raise UserError(f"--fold {self.fold!r} is not a fold of --folds {self.folds}: give 0 to {self.folds - 1}")
        if self.folds is not None and self.fold is None and self.push_to_hub is not None:
            raise UserError("--push-to-hub pushes one model and --folds trains K: push one fold's run "
                            "(vitune train --config RUN_DIR/fold-0/config.yaml --push-to-hub ...) or drop --folds")

    def _check_engine(self) -> None:
        """One engine at a time, and none that shards the weights under the settings that need them whole."""
        if self.fsdp is not None:
            check_choice("fsdp", self.fsdp, FSDP_MODES)
        if self.deepspeed is not None and self.fsdp is not None:
            raise UserError("--deepspeed and --fsdp are two ways to shard a run: choose one")
        sharded = "--fsdp" if self.fsdp else "--deepspeed"
        if self.ema is not None and (self.deepspeed or self.fsdp):
            raise UserError(f"--ema keeps a full copy of the weights on each process, which {sharded} shards: "
                            f"drop --ema or {sharded}")
        if self.lora and self.fsdp:
            raise UserError("--lora trains adapters small enough to keep whole on each process, which --fsdp shards: "
                            "drop --fsdp (DDP through torchrun, or --deepspeed zero2, fits LoRA)")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict over the ``recipe`` preset it names, rejecting unknown keys with the known ones."""
        return super().from_dict(with_recipe(values))


def recipe_path(name: str) -> Path:
    """The YAML preset of ``--recipe name`` shipped in ``vitune/config/presets``."""
    return Path(__file__).resolve().parent / "presets" / "recipes" / f"{name}.yaml"


def deepspeed_config_path(deepspeed: str) -> Path:
    """The DeepSpeed JSON file of ``--deepspeed``: a shipped preset (:data:`DEEPSPEED_PRESETS`) or the path given."""
    if deepspeed in DEEPSPEED_PRESETS:
        return Path(__file__).resolve().parent / "presets" / f"ds_{deepspeed}.json"
    return Path(deepspeed)


def with_recipe(values: dict) -> dict:
    """``values`` over the preset their ``recipe`` names (none: unchanged); an unknown recipe is a UserError."""
    name = values.get("recipe")
    if name is None:
        return values
    check_choice("recipe", name, RECIPES)
    preset = yaml.safe_load(recipe_path(name).read_text())
    return {**preset, **values}


def report_destinations(report_to: str | list[str]) -> list[str]:
    """``"tensorboard,mlflow"`` or a list -> ``["tensorboard", "mlflow"]``; ``"none"`` -> ``[]`` (checked)."""
    names = split_names(report_to) or []
    for name in names:
        check_choice("report_to", name, REPORT_TO)
    if "none" in names and len(names) > 1:
        raise UserError(f"--report-to {report_to!r}: give none, or one or more of {', '.join(REPORT_TO[1:])}")
    return [name for name in names if name != "none"]


def lora_target_names(targets: str | list[str] | None) -> list[str] | None:
    """``"query,value"`` or a list -> ``["query", "value"]``; None stays None (the family's default)."""
    names = split_names(targets)
    if names == []:
        raise UserError("--lora-targets is empty: give module names such as q_proj,v_proj")
    return names


def _check_tracking_and_lora(config: TrainConfig) -> None:
    if config.push_to_hub is not None and not HUB_REPO_ID.fullmatch(config.push_to_hub):
        raise UserError(f"--push-to-hub {config.push_to_hub!r} is not a Hub repo id: give OWNER/NAME or NAME")
    if isinstance(config.lora, bool) or not isinstance(config.lora, int) or config.lora < 0:
        raise UserError(f"--lora {config.lora!r} is the LoRA rank: give a whole number (8, 16; 0 = off)")
    if config.lora_alpha is not None:
        check_positive("lora_alpha", config.lora_alpha)
    if not config.lora and (config.lora_alpha is not None or config.lora_targets is not None):
        raise UserError("--lora-alpha and --lora-targets set up LoRA: add --lora R (the rank, e.g. 8)")
