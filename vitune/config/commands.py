"""The configs of the other commands: data prepare and show, heads, evaluate, predict, export, report, demo."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vitune.config.base import (
    BACKENDS,
    DEFAULT_OPSET,
    HEAD_NAMES,
    MIN_OPSET,
    MODEL_HEAD,
    SPLIT_METHODS,
    TASK_CHOICES,
    TTA_MODES,
    CommandConfig,
    check_choice,
    check_count,
    check_pooling,
    check_positive,
    parse_heads,
    split_names,
)
from vitune.errors import UserError
from vitune.storage.layout import SAMPLE_GRID, RunDir
from vitune.tasks.labels import UNCERTAIN_POLICIES

# DATASET_DIR columns a --meta-columns name may not take (config imports no data module: spelled here)
DEFAULT_AGE_EDGES = (40, 60, 80)  # the age bins 0-39, 40-59, 60-79, 80+
RESERVED_COLUMNS = frozenset({"pixel_values", "labels", "file", "group", "sex", "age", "view"})


@dataclass
class PrepareConfig(CommandConfig):
    """Settings of ``vitune data prepare SOURCE --out DATASET_DIR``, validated on construction.

    Args:
        source: Image folder, label CSV, ChestX-ray14 or CIFAR folder, or hf:NAME[:CONFIG].
        out: DATASET_DIR to write (a datasets.DatasetDict + dataset.json).
        fmt: auto|imagefolder|csv|chestxray14|cifar|hf.
        image_size: Square size S (default: the model's, else 224).
        model: Take the image size from this model (alias, Hub id, dir).
        task: auto|single_label|multi_label|regression.
        split: auto|random|stratified|group|official.
        val_fraction: Fraction of images for validation.
        test_fraction: Fraction of images for test.
        seed: Seed of the split.
        group_column: Patient/subject id column: no group spans two splits.
        image_column: CSV column with the image file names.
        label_column: CSV/metadata column with the labels; several (A,B) for one column per finding.
        label_separator: Separator of several labels in one cell, e.g. '|'.
        no_finding_as_label: ChestX-ray14: keep 'No Finding' as a 15th label.
        workers: Decoding processes (default: all cores).
        views: Keep only these views, e.g. PA,AP (from a "View Position" column or the DICOM ViewPosition).
        uncertain: ignore|zeros|ones: uncertain (-1) findings become unknown (NaN, masked), negative or positive.
        meta_columns: Other label-CSV columns to keep beside sex, age and view (e.g. site,scanner), for evaluate --by.
    """

    arguments: ClassVar[dict[str, str]] = {"source": "SOURCE"}
    flags: ClassVar[dict[str, str]] = {"fmt": "--format"}
    usage = "vitune data prepare SOURCE --out DATASET_DIR"

    source: str
    out: Path
    fmt: str = "auto"
    image_size: int | None = None
    model: str | None = None
    task: str = "auto"
    split: str = "auto"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    group_column: str | None = None
    image_column: str | None = None
    label_column: list[str] | None = None
    label_separator: str | None = None
    no_finding_as_label: bool = False
    workers: int | None = None
    views: list[str] | None = None
    uncertain: str = "ignore"
    meta_columns: list[str] | None = None

    def __post_init__(self) -> None:
        self.source = str(self.source)
        if not self.source.startswith("hf:"):
            self.source = str(Path(self.source).expanduser())
        self.out = Path(self.out).expanduser()
        if self.task not in TASK_CHOICES:
            raise UserError(f"unknown --task {self.task!r}: use one of {', '.join(TASK_CHOICES)}")
        if self.split not in SPLIT_METHODS:
            raise UserError(f"unknown --split {self.split!r}: use one of {', '.join(SPLIT_METHODS)}")
        for flag, value in (("--val-fraction", self.val_fraction), ("--test-fraction", self.test_fraction)):
            if not 0.0 <= value < 1.0:
                raise UserError(f"{flag} {value} is outside [0, 1): pass a fraction such as 0.1")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UserError(
                f"--val-fraction + --test-fraction = {self.val_fraction + self.test_fraction:g} leaves no "
                "training data: make their sum below 1"
            )
        if self.image_size is not None and not 1 <= self.image_size <= 4096:
            raise UserError(f"--image-size {self.image_size} is out of range: use 1 to 4096 (224 is usual)")
        if self.workers is not None and self.workers < 1:
            raise UserError(f"workers must be at least 1, got {self.workers}")
        given_views = self.views
        self.views = split_names(self.views)
        if self.views is not None and not self.views:
            raise UserError(f"--views {given_views!r} names no view: give them comma-separated, e.g. PA,AP")
        given_columns = self.label_column
        self.label_column = split_names(self.label_column)
        if self.label_column == [] or len(set(self.label_column or ())) < len(self.label_column or ()):
            raise UserError(f"--label-column {given_columns!r} names a column twice or none: give each finding once")
        check_choice("uncertain", self.uncertain, UNCERTAIN_POLICIES)
        self.meta_columns = split_names(self.meta_columns)
        reserved = sorted(set(self.meta_columns or ()) & RESERVED_COLUMNS)
        if reserved:
            raise UserError(f"--meta-columns {','.join(reserved)}: that name is a DATASET_DIR column already; "
                            "sex, age and view are kept without asking")

    def view_set(self) -> frozenset[str] | None:
        """The views ``--views`` keeps (upper case), or None to keep every image."""
        if self.views is None:
            return None
        return frozenset(view.upper() for view in self.views)

    def fingerprint_settings(self, image_size: int) -> dict[str, Any]:
        """The options that change the cached result (not ``out``, ``model`` or ``workers``)."""
        settings = asdict(self)
        for key in ("source", "out", "model", "workers"):
            settings.pop(key)
        if settings["views"] is None:
            settings.pop("views")  # datasets prepared before --views existed keep their fingerprint
        else:
            settings["views"] = sorted(self.view_set())  # PA,AP and ap,pa are one filter
        if settings["label_column"] is not None:
            settings["label_column"] = ",".join(self.label_column)  # as 0.2 wrote it: those datasets stay cached
        if settings["uncertain"] == "ignore":
            settings.pop("uncertain")  # likewise for datasets prepared before --uncertain
        if settings["meta_columns"] is None:
            settings.pop("meta_columns")
        settings["image_size"] = image_size
        return settings


@dataclass
class ShowConfig(CommandConfig):
    """Settings of ``vitune data show DATASET_DIR``.

    Args:
        dataset_dir: A DATASET_DIR written by `vitune data prepare`.
        out: Sample grid PNG (default: DATASET_DIR/samples.png).
        rows: How many first rows to print.
    """

    arguments: ClassVar[dict[str, str]] = {"dataset_dir": "DATASET_DIR"}
    usage = "vitune data show DATASET_DIR"

    dataset_dir: str
    out: str | None = None
    rows: int = 10

    def __post_init__(self) -> None:
        self.dataset_dir = str(self.dataset_dir)
        check_count("rows", self.rows)
        self.out = str(self.out) if self.out is not None else str(Path(self.dataset_dir) / SAMPLE_GRID)


@dataclass
class HeadsConfig(CommandConfig):
    """Settings of ``vitune heads --model RUN_DIR|MODEL --data DATASET_DIR``; checks itself on construction.

    Args:
        model: RUN_DIR from `vitune train`, or a checkpoint (alias, Hub id, directory).
        data: DATASET_DIR from `vitune data prepare`.
        out: Output DIR (default: RUN_DIR/heads when --model is a run).
        heads: Heads to fit (svm,logreg,mlp,ensemble).
        pooling: cls|mean token pooling of the backbone.
        C: SVM C (default: chosen by 3-fold CV on train among 0.1, 1, 10, 100).
        batch_size: Embedding batch size.
        seed: Random seed (SVM landmarks, MLP).
        cache_dir: Embedding cache (default: OUT/embeddings).
        no_calibrate: Fit no temperature on validation (each head's probabilities are used as they come).
        backend: torch, onnx or onnx-int8: the embedding pass in ONNX Runtime on the CPU, through the encoder exported
            beside the run (or OUT) when missing or stale.
    """

    usage = "vitune heads --model RUN_DIR|MODEL --data DATASET_DIR"

    model: str
    data: str
    out: str | None = None
    heads: list[str] = field(default_factory=lambda: list(HEAD_NAMES))
    pooling: str = "cls"
    C: float | None = None
    batch_size: int = 32
    seed: int = 0
    cache_dir: str | None = None
    no_calibrate: bool = False
    backend: str = "torch"

    def __post_init__(self) -> None:
        self.model, self.data = str(self.model), str(self.data)
        self.heads = parse_heads(self.heads)
        check_pooling(self.pooling)
        check_choice("backend", self.backend, BACKENDS)
        if self.C is not None and not self.C > 0:
            raise UserError(f"--C must be positive, got {self.C}")
        check_count("batch_size", self.batch_size)
        if self.out is not None:
            self.out = str(self.out)


@dataclass
class EvaluateConfig(CommandConfig):
    """Settings of ``vitune evaluate RUN_DIR``; checks itself on construction.

    Args:
        run: RUN_DIR from `vitune train`.
        data: DATASET_DIR (default: the run's own, from config.yaml).
        split: Split to evaluate (validation when there is no test split).
        bootstrap: Bootstrap resamples for the 95% intervals.
        seed: Seed of the bootstrap.
        batch_size: Inference batch size.
        device: cpu, cuda, cuda:1 ... (default: the first GPU, else the CPU).
        backend: torch, onnx or onnx-int8 (ONNX Runtime on the CPU, on RUN_DIR/export/, exported when missing or stale).
        by: Metadata columns to compare subgroups on, e.g. sex,age,view (and any --meta-columns of prepare).
        age_bins: Lower edges of the age bins after the first; 40,60,80 gives 0-39, 40-59, 60-79, 80+.
        no_calibrate: Score without the run's fitted temperature (calibration.json).
        tta: Test-time augmentation: none, flip (the mirrored view) or crops (five crops); the calibrated
            probabilities of the original and those views are averaged.
    """

    arguments: ClassVar[dict[str, str]] = {"run": "RUN_DIR"}
    usage = "vitune evaluate RUN_DIR"

    run: str
    data: str | None = None
    split: str = "test"
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 64
    device: str | None = None
    backend: str = "torch"
    by: list[str] | None = None
    age_bins: list[int] = field(default_factory=lambda: list(DEFAULT_AGE_EDGES))
    no_calibrate: bool = False
    tta: str = "none"

    def __post_init__(self) -> None:
        self.run = str(self.run)
        check_count("batch_size", self.batch_size)
        check_choice("tta", self.tta, TTA_MODES)
        self.by = split_names(self.by)
        if self.by is not None and not self.by:
            raise UserError("--by names no column: give them comma-separated, e.g. sex,age,view")
        edges = split_names(self.age_bins) or []
        if not all(str(edge).isdigit() for edge in edges):
            raise UserError(f"--age-bins {','.join(map(str, edges))} must be whole ages, e.g. 40,60,80")
        self.age_bins = [int(edge) for edge in edges]
        if not self.age_bins or self.age_bins != sorted(set(self.age_bins)) or self.age_bins[0] <= 0:
            raise UserError(f"--age-bins {self.age_bins} must be increasing ages above 0, e.g. 40,60,80")
        check_count("bootstrap", self.bootstrap, minimum=0)
        check_choice("backend", self.backend, BACKENDS)


@dataclass
class PredictConfig(CommandConfig):
    """Settings of ``vitune predict RUN_DIR IMAGES_OR_FOLDERS...``; checks itself on construction.

    Args:
        run: RUN_DIR from `vitune train`.
        inputs: Image files and/or folders (searched recursively).
        out: CSV to write (default: print a table).
        head: model|svm|logreg|mlp|ensemble (heads from `vitune heads`).
        heads_dir: Where the heads are (default: RUN_DIR/heads).
        batch_size: Inference batch size.
        device: cpu, cuda, cuda:1 ... (default: the first GPU, else the CPU).
        explain: Also write explanations of the predicted labels into this folder (as `vitune explain`).
        backend: torch, onnx or onnx-int8 (ONNX Runtime on the CPU, on RUN_DIR/export/, exported when missing or stale).
        tta: Test-time augmentation: none, flip (the mirrored view) or crops (five crops); the calibrated
            probabilities of the original and those views are averaged.
    """

    arguments: ClassVar[dict[str, str]] = {"run": "RUN_DIR", "inputs": "IMAGES_OR_FOLDERS"}
    usage = "vitune predict RUN_DIR IMAGES_OR_FOLDERS..."

    run: str
    inputs: list[str]
    out: str | None = None
    head: str = MODEL_HEAD
    heads_dir: str | None = None
    batch_size: int = 32
    device: str | None = None
    explain: str | None = None
    backend: str = "torch"
    tta: str = "none"

    def __post_init__(self) -> None:
        self.run, self.inputs = str(self.run), [str(p) for p in self.inputs]
        check_count("batch_size", self.batch_size)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("tta", self.tta, TTA_MODES)
        if self.head != MODEL_HEAD and self.head not in HEAD_NAMES:
            raise UserError(f"unknown --head {self.head!r}: use one of {', '.join((MODEL_HEAD, *HEAD_NAMES))}")
        if self.explain is not None and self.head != MODEL_HEAD:
            raise UserError(f"--explain shows where the fine-tuned model looks, not the {self.head} head: "
                            "drop --head or --explain")


@dataclass
class ExportConfig(CommandConfig):
    """Settings of ``vitune export RUN_DIR --onnx FILE``; checks itself on construction.

    Args:
        run: RUN_DIR from `vitune train`.
        onnx: ONNX file to write.
        quantize: Also write FILE.int8.onnx (dynamic int8) and score it.
        opset: ONNX opset version.
        tolerance: Largest allowed |onnxruntime - torch| logit difference, over the logits' largest magnitude
            (at least 1).
        data: DATASET_DIR for the checks (default: the run's own).
        max_samples: Validation images scored before/after quantisation.
        batch_size: Batch size of those checks.
    """

    arguments: ClassVar[dict[str, str]] = {"run": "RUN_DIR"}
    usage = "vitune export RUN_DIR --onnx FILE"

    run: str
    onnx: str
    quantize: bool = False
    opset: int = DEFAULT_OPSET
    tolerance: float = 1e-4
    data: str | None = None
    max_samples: int = 512
    batch_size: int = 32

    def __post_init__(self) -> None:
        self.run, self.onnx = str(self.run), str(self.onnx)
        check_positive("tolerance", self.tolerance)
        check_count("max_samples", self.max_samples)
        check_count("batch_size", self.batch_size)
        if self.opset < MIN_OPSET:
            raise UserError(f"--opset {self.opset} is too old for the transformer's attention: "
                            f"use {MIN_OPSET} or newer (default {DEFAULT_OPSET})")


@dataclass
class ReportConfig(CommandConfig):
    """Settings of ``vitune report RUN_DIR``.

    Args:
        run: RUN_DIR from `vitune train`.
        out: HTML file (default: RUN_DIR/report.html).
        pdf: Also print the report to a PDF beside it (report.pdf), with headless Chromium.
    """

    arguments: ClassVar[dict[str, str]] = {"run": "RUN_DIR"}
    usage = "vitune report RUN_DIR [--pdf]"

    run: str
    out: str | None = None
    pdf: bool = False

    @property
    def pdf_out(self) -> str:
        """The PDF written with ``--pdf``: the HTML file's name with ``.pdf``."""
        return str(Path(self.out).with_suffix(".pdf"))

    def __post_init__(self) -> None:
        self.run = str(self.run)
        self.out = str(self.out) if self.out is not None else str(RunDir(self.run).report)


@dataclass
class DemoConfig(CommandConfig):
    """Settings of ``vitune demo``; checks itself on construction.

    Args:
        out: RUN_DIR of the demo (a previous demo there is replaced).
        model: Fine-tune this model instead of a small scratch ViT.
        patients: Synthetic patients (about 3 images each).
        epochs: Training epochs.
        lr: Peak learning rate.
        batch_size: Training batch size.
        bootstrap: Bootstrap resamples for the test intervals.
        seed: Seed of the data, split, model and training.
    """

    out: Path = Path("runs/demo")
    model: str | None = None
    patients: int = 1000
    epochs: float = 10
    lr: float = 5e-4
    batch_size: int = 32
    bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.patients < 20:
            raise UserError(f"--patients {self.patients} is too few for train, validation and test: use 20 or more")
        if not self.epochs > 0 or not self.lr > 0 or self.batch_size < 1:
            raise UserError("--epochs, --lr and --batch-size must be positive")
