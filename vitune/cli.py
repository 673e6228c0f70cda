"""The ``vitune`` command line: a thin Typer layer over the library API.

Each command parses flags, calls one library function and prints its result. A
:class:`vitune.errors.UserError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from vitune.config import (
    DemoConfig,
    EvaluateConfig,
    ExportConfig,
    HeadsConfig,
    PredictConfig,
    PrepareConfig,
    ReportConfig,
    ShowConfig,
    TrainConfig,
)
from vitune.errors import UserError
from vitune.layout import HeadsDir


def train_help(name: str, text: str) -> str:
    """Help of a `vitune train` flag, ending with its default as TrainConfig defines it."""
    return f"{text} [{TrainConfig.default(name)}]."


app = typer.Typer(
    help="Fine-tune vision transformers on your own images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show defaults as [3]: print them literally
    add_completion=False,
)
data_app = typer.Typer(help="Prepare and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command("models")
def models_cmd() -> None:
    """List the model aliases with their Hub ids and image sizes."""
    from vitune.models import list_models

    aliases = list_models()
    name_width = max(len("alias"), *(len(alias.name) for alias in aliases))
    hub_width = max(len("hub id"), *(len(alias.hub_id) for alias in aliases))
    typer.echo(f"{'alias':<{name_width}}  {'size':>4}  {'hub id':<{hub_width}}  note".rstrip())
    for alias in aliases:
        typer.echo(f"{alias.name:<{name_width}}  {alias.image_size:>4}  {alias.hub_id:<{hub_width}}  {alias.note}".rstrip())


@data_app.command("prepare")
def data_prepare_cmd(
    source: str = typer.Argument(..., help="Image folder, label CSV, ChestX-ray14 or CIFAR folder, or hf:NAME[:CONFIG]."),
    out: Path = typer.Option(..., "--out", help="DATASET_DIR to write (a datasets.DatasetDict + dataset.json)."),
    fmt: str = typer.Option(PrepareConfig.default("fmt"), "--format", help="auto|imagefolder|csv|chestxray14|cifar|hf."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Square size S (default: the model's, else 224)."),
    model: Optional[str] = typer.Option(None, "--model", help="Take the image size from this model (alias, Hub id, dir)."),
    task: str = typer.Option(PrepareConfig.default("task"), "--task", help="auto|single_label|multi_label|regression."),
    split: str = typer.Option(PrepareConfig.default("split"), "--split", help="auto|random|stratified|group|official."),
    val_fraction: float = typer.Option(PrepareConfig.default("val_fraction"), "--val-fraction", help="Fraction of images for validation."),
    test_fraction: float = typer.Option(PrepareConfig.default("test_fraction"), "--test-fraction", help="Fraction of images for test."),
    seed: int = typer.Option(PrepareConfig.default("seed"), "--seed", help="Seed of the split."),
    group_column: Optional[str] = typer.Option(None, "--group-column", help="Patient/subject id column: no group spans two splits."),
    image_column: Optional[str] = typer.Option(None, "--image-column", help="CSV column with the image file names."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="CSV/metadata column with the labels."),
    label_separator: Optional[str] = typer.Option(None, "--label-separator", help="Separator of several labels in one cell, e.g. '|'."),
    no_finding_as_label: bool = typer.Option(False, "--no-finding-as-label", help="ChestX-ray14: keep 'No Finding' as a 15th label."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: all cores)."),
) -> None:
    """Decode SOURCE once into a cached, split DATASET_DIR."""
    config = PrepareConfig(**locals())
    from vitune.data.prepare import prepare

    info = prepare(config)
    counts = ", ".join(f"{name} {n}" for name, n in info.splits.items())
    typer.echo(
        f"{out}: {info.format}, {info.task}, {len(info.labels)} labels, {info.image_size}px, "
        f"split {info.split_method} (seed {info.seed}): {counts}"
    )
    if info.skipped:
        shown = "; ".join(f"{row['file']}: {row['reason']}" for row in info.skipped[:5])
        more = f" (+{len(info.skipped) - 5} more in dataset.json)" if len(info.skipped) > 5 else ""
        typer.echo(f"skipped {len(info.skipped)}: {shown}{more}")


@data_app.command("show")
def data_show_cmd(
    dataset_dir: Path = typer.Argument(..., help="A DATASET_DIR written by `vitune data prepare`."),
    out: Optional[Path] = typer.Option(None, "--out", help="Sample grid PNG (default: DATASET_DIR/samples.png)."),
    rows: int = typer.Option(ShowConfig.default("rows"), "--rows", help="How many first rows to print."),
) -> None:
    """Print the first rows and label frequencies; write a labelled sample grid."""
    config = ShowConfig(**locals())
    from vitune.data.show import show

    show(config)


@app.command("train")
def train_cmd(
    data: Optional[str] = typer.Option(None, "--data", help="DATASET_DIR from `vitune data prepare`."),
    model: Optional[str] = typer.Option(None, "--model", help="Alias (`vitune models`), Hub id or local checkpoint."),
    out: Optional[str] = typer.Option(None, "--out", help="RUN_DIR to write."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (e.g. RUN_DIR/config.yaml); flags override it."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help=train_help("epochs", "Training epochs")),
    lr: Optional[float] = typer.Option(None, "--lr", help=train_help("lr", "Peak learning rate")),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=train_help("batch_size", "Per-device training batch size")),
    eval_batch_size: Optional[int] = typer.Option(None, "--eval-batch-size", help="Per-device evaluation batch size [2x batch size]."),
    warmup: Optional[float] = typer.Option(None, "--warmup", help=train_help("warmup", "Warm-up as a fraction of the steps")),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=train_help("scheduler", "cosine|linear|constant|...")),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help=train_help("weight_decay", "AdamW weight decay")),
    precision: Optional[str] = typer.Option(None, "--precision", help=train_help("precision", "auto|fp32|bf16|fp16 (auto: bf16 on a capable GPU, else fp32)")),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help=train_help("grad_accum", "Gradient accumulation steps")),
    seed: Optional[int] = typer.Option(None, "--seed", help=train_help("seed", "Random seed")),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Continue from the last checkpoint in RUN_DIR/checkpoints."),
    regression_loss: Optional[str] = typer.Option(None, "--regression-loss", help=train_help("regression_loss", "mse|bce on the [0, 1]-scaled target")),
    pos_weight: Optional[str] = typer.Option(None, "--pos-weight", help=train_help("pos_weight", "off|auto: auto weighs each label's positives by neg/pos (multi-label)")),
    augment: Optional[str] = typer.Option(None, "--augment", help=train_help("augment", "none|light: light = random resized crop (area 0.85-1) + small shift")),
    augment_hflip: Optional[bool] = typer.Option(None, "--augment-hflip/--no-augment-hflip", help="Random horizontal flips (off: X-ray laterality matters)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="Data-loader workers [0 on CPU, half the cores on GPU]."),
    logging_steps: Optional[int] = typer.Option(None, "--logging-steps", help="Log every N steps [about 50 points per run]."),
    save_total_limit: Optional[int] = typer.Option(None, "--save-total-limit", help=train_help("save_total_limit", "Checkpoints kept, best included")),
    deepspeed: Optional[str] = typer.Option(None, "--deepspeed", help="DeepSpeed JSON config (e.g. vitune/configs/ds_zero2.json)."),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code/--no-trust-remote-code", help="Allow Hub model code (off)."),
) -> None:
    """Fine-tune MODEL on DATASET_DIR with transformers.Trainer; write RUN_DIR."""
    import os

    from vitune.train import train

    flags = {k: v for k, v in locals().items() if k not in ("config", "os", "train")}
    settings = TrainConfig.from_yaml(config, **flags) if config else TrainConfig.from_dict(
        {k: v for k, v in flags.items() if v is not None}
    )
    result = train(settings)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only the main process reports
        return
    metrics = ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in result.metrics["metrics"].items())
    typer.echo(f"{result.run_dir}: validation {metrics} ({result.metrics['train_seconds']:.1f} s training)")


def print_heads_table(result, console=None) -> None:
    """The comparison table of ``vitune heads``: head, backend, main metric, other metrics, seconds."""
    from rich.console import Console
    from rich.table import Table

    main = result.main_metric
    names = list(next(iter(result.heads.values()))["metrics"]) if result.heads else [main]
    others = [k for k in names if k != main]
    table = Table(title=f"heads on {result.split} ({result.num_samples} samples, {result.task})")
    for column in ("head", "backend", f"{main} (main)", *others, "fit s", "predict s"):
        table.add_column(column, justify="left" if column in ("head", "backend") else "right", no_wrap=True)
    for name, entry in result.heads.items():
        metrics = entry["metrics"]
        table.add_row(name, entry["backend"], *(_cell(metrics[k]) for k in (main, *others)),
                      f"{entry['fit_seconds']:.2f}", f"{entry['predict_seconds']:.2f}")
    # never squeeze the numbers: a log file or a narrow terminal gets the full table
    (console or Console(width=max(Console().width, 120))).print(table)


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@app.command("heads")
def heads_cmd(
    model: str = typer.Option(..., "--model", help="RUN_DIR from `vitune train`, or a checkpoint (alias, Hub id, directory)."),
    data: Path = typer.Option(..., "--data", help="DATASET_DIR from `vitune data prepare`."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output DIR [RUN_DIR/heads when --model is a run]."),
    heads: str = typer.Option(HeadsConfig.default("heads"), "--heads", help="Comma-separated heads to fit."),
    pooling: str = typer.Option(HeadsConfig.default("pooling"), "--pooling", help="cls|mean token pooling of the backbone."),
    C: Optional[float] = typer.Option(None, "--C", help="SVM C (default: chosen by 3-fold CV on train among 0.1, 1, 10, 100)."),
    batch_size: int = typer.Option(HeadsConfig.default("batch_size"), "--batch-size", help="Embedding batch size."),
    seed: int = typer.Option(HeadsConfig.default("seed"), "--seed", help="Random seed (SVM landmarks, MLP)."),
) -> None:
    """Fit SVM / logistic / MLP / ensemble heads on frozen embeddings; write DIR/heads.json."""
    config = HeadsConfig(**locals())
    from vitune.heads import fit_heads

    result = fit_heads(config)
    print_heads_table(result)
    typer.echo(f"{HeadsDir(result.out).report}: {len(result.heads)} heads on {result.split}")


@app.command("evaluate")
def evaluate_cmd(
    run: Path = typer.Argument(..., help="RUN_DIR from `vitune train`."),
    data: Optional[Path] = typer.Option(None, "--data", help="DATASET_DIR (default: the run's own, from config.yaml)."),
    split: str = typer.Option(EvaluateConfig.default("split"), "--split", help="Split to evaluate (validation when there is no test split)."),
    bootstrap: int = typer.Option(EvaluateConfig.default("bootstrap"), "--bootstrap", help="Bootstrap resamples for the 95% intervals."),
    seed: int = typer.Option(EvaluateConfig.default("seed"), "--seed", help="Seed of the bootstrap."),
    batch_size: int = typer.Option(EvaluateConfig.default("batch_size"), "--batch-size", help="Inference batch size."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: the first GPU, else the CPU)."),
) -> None:
    """Metrics with 95% bootstrap intervals, thresholds tuned on validation, ROC/PR plots."""
    config = EvaluateConfig(**locals())
    from vitune.evaluate import evaluate

    result = evaluate(config)
    typer.echo(f"{result.split}: {result.num_samples} images ({result.task})")
    for key, value in result.metrics.items():
        ci = result.confidence_intervals.get(key)
        text = "n/a" if value is None else f"{value:.4f}"
        typer.echo(f"  {key:<24} {text}" + (f"  95% CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    typer.echo(f"wrote {result.path}")
    if (result.thresholds or {}).get("path"):
        typer.echo(f"wrote {result.thresholds['path']} (tuned on {result.thresholds['tuned_on']})")


@app.command("predict")
def predict_cmd(
    run: Path = typer.Argument(..., help="RUN_DIR from `vitune train`."),
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV to write (default: print a table)."),
    head: str = typer.Option(PredictConfig.default("head"), "--head", help="model|svm|logreg|mlp|ensemble (heads from `vitune heads`)."),
    heads_dir: Optional[Path] = typer.Option(None, "--heads-dir", help="Where the heads are (default: RUN_DIR/heads)."),
    batch_size: int = typer.Option(PredictConfig.default("batch_size"), "--batch-size", help="Inference batch size."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: the first GPU, else the CPU)."),
) -> None:
    """Predict images: per-label probabilities and decisions (thresholds from `vitune evaluate`)."""
    config = PredictConfig(**locals())
    from vitune.predict import format_table, predict

    result = predict(config)
    for skipped in result.skipped:
        typer.echo(f"skipped {skipped.file}: {skipped.reason}", err=True)
    if result.out is None:
        typer.echo(format_table(result))
    where = f", wrote {result.out}" if result.out else ""
    typer.echo(f"predicted {len(result.rows)} image(s), skipped {len(result.skipped)}{where}", err=True)


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="RUN_DIR from `vitune train`."),
    onnx: Path = typer.Option(..., "--onnx", help="ONNX file to write."),
    quantize: bool = typer.Option(False, "--quantize", help="Also write FILE.int8.onnx (dynamic int8) and score it."),
    opset: int = typer.Option(ExportConfig.default("opset"), "--opset", help="ONNX opset version."),
    tolerance: float = typer.Option(ExportConfig.default("tolerance"), "--tolerance", help="Largest allowed |onnxruntime - torch| logit difference."),
    data: Optional[Path] = typer.Option(None, "--data", help="DATASET_DIR for the checks (default: the run's own)."),
    max_samples: int = typer.Option(ExportConfig.default("max_samples"), "--max-samples", help="Validation images scored before/after quantisation."),
) -> None:
    """Export the model to ONNX (dynamic batch), verified with onnxruntime against torch."""
    config = ExportConfig(**locals())
    from vitune.export import export_onnx

    result = export_onnx(config)
    typer.echo(f"wrote {result.onnx} ({result.size_mb} MB, opset {result.opset}): onnxruntime vs torch "
               f"max abs diff {result.max_abs_diff:.2e} on {result.check_images} images")
    quant = result.quantized
    if quant:
        change = ""
        if quant["before"] is not None:
            change = f", {quant['metric']} {quant['before']:.4f} -> {quant['after']:.4f} on {quant['samples']} {quant['split']} images"
        typer.echo(f"wrote {quant['path']} ({quant['size_mb']} MB, int8): max abs logit diff "
                   f"{quant['max_abs_diff']:.2e}{change}")


@app.command("report")
def report_cmd(
    run: Path = typer.Argument(..., help="RUN_DIR from `vitune train`."),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file (default: RUN_DIR/report.html)."),
) -> None:
    """Write one self-contained HTML report: data, curves, metrics with intervals, heads, config."""
    config = ReportConfig(**locals())
    from vitune.report import build_report

    typer.echo(f"wrote {build_report(config)}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(DemoConfig.default("out"), "--out", help="RUN_DIR of the demo (a previous demo there is replaced)."),
    model: Optional[str] = typer.Option(None, "--model", help="Fine-tune this model instead of a small scratch ViT."),
    patients: int = typer.Option(DemoConfig.default("patients"), "--patients", help="Synthetic patients (about 3 images each)."),
    epochs: float = typer.Option(DemoConfig.default("epochs"), "--epochs", help="Training epochs."),
    lr: float = typer.Option(DemoConfig.default("lr"), "--lr", help="Peak learning rate."),
    batch_size: int = typer.Option(DemoConfig.default("batch_size"), "--batch-size", help="Training batch size."),
    bootstrap: int = typer.Option(DemoConfig.default("bootstrap"), "--bootstrap", help="Bootstrap resamples for the test intervals."),
    seed: int = typer.Option(DemoConfig.default("seed"), "--seed", help="Seed of the data, split, model and training."),
) -> None:
    """The whole path on built-in synthetic chest X-rays, offline: data, train, heads, evaluate, report."""
    config = DemoConfig(**locals())
    from vitune.demo import run_demo

    run_demo(config, echo=typer.echo, show_heads=print_heads_table)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    from vitune.progress import quiet_library_bars

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_library_bars()
    try:
        app(standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(UserError.exit_code)
    except OSError as exc:  # an output or input path the system refuses (not writable, a file for a folder...)
        if exc.filename is None:
            raise
        typer.echo(f"error: {exc.filename}: {exc.strerror or exc}", err=True)
        sys.exit(UserError.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click's usage errors arrive here in non-standalone mode
        if not _is_click_error(exc):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `vitune` / `vitune data`: show the help
            typer.echo(exc.format_message())
        else:
            command = exc.ctx.command_path if getattr(exc, "ctx", None) else "vitune"
            typer.echo(f"error: {exc.format_message()} (see `{command} --help`)", err=True)
        sys.exit(UserError.exit_code)


def _is_click_error(exc: Exception) -> bool:
    """A click (or typer's vendored click) ClickException: a bad flag, value or command."""
    # typer >= 0.20 vendors click as typer._click, so isinstance checks against click miss them
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)
