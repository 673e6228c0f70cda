"""The ``vitune`` command line: a thin Typer layer over the library API.

Each command is built from its config dataclass (:mod:`vitune.config`): one flag per field, with the
field's default and the help of the class docstring, so nothing is written twice. The function
behind a command takes the validated config, calls one library function and prints its result.
A :class:`vitune.errors.UserError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import signal
import sys
import typing
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import typer

from vitune import config as settings
from vitune.errors import UserError
from vitune.storage.layout import HeadsDir

app = typer.Typer(
    help="Fine-tune vision transformers on your own images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show defaults as [3]: print them literally
    add_completion=False,
)
data_app = typer.Typer(help="Prepare and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
CONFIG_FILE_HELP = "YAML config (e.g. RUN_DIR/config.yaml); flags override it."
INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT)
ARGUMENT_NAMES = {"run": "RUN_DIR", "inputs": "IMAGES_OR_FOLDERS"}  # else the field name in capitals


def _parameter(config_cls, spec: dataclasses.Field, annotation, overridable: bool) -> inspect.Parameter:
    """The typer parameter of one config field: a positional argument or a flag with its default and help."""
    help_text = config_cls.field_help().get(spec.name, "")
    required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
    default = ... if required else config_cls.default(spec.name)
    if spec.name in config_cls.arguments:
        metavar = ARGUMENT_NAMES.get(spec.name, spec.name.upper())
        info = typer.Argument(default, help=help_text, show_default=not required, metavar=metavar)
    elif overridable:  # None = not given, so a --config file's value stands
        names = f"{config_cls.flag(spec.name)}/--no-{config_cls.flag(spec.name)[2:]}" if annotation is bool else None
        shown = "" if required or default is None or isinstance(default, bool) else f" [{default:g}]" if isinstance(
            default, float) else f" [{default}]"
        info = typer.Option(None, *filter(None, [names or config_cls.flag(spec.name)]), help=help_text + shown)
        annotation = Optional[annotation]
    else:
        info = typer.Option(default, config_cls.flag(spec.name), help=help_text, show_default=default is not None)
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def config_command(group: typer.Typer, name: str, config_cls, overridable: bool = False):
    """Register the decorated ``function(config)`` as command ``name`` with one flag per field of ``config_cls``.

    ``overridable`` commands (``train``) also take ``--config FILE.yaml``; the flags given override it.
    """
    hints = typing.get_type_hints(config_cls)

    def register(function: Callable) -> Callable:
        parameters = [_parameter(config_cls, spec, hints[spec.name], overridable)
                      for spec in dataclasses.fields(config_cls)]
        if overridable:
            parameters.insert(3, inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                                   default=typer.Option(None, "--config", help=CONFIG_FILE_HELP)))

        def command(**values) -> None:
            function(config_cls.from_cli(values))

        command.__signature__ = inspect.Signature(parameters)
        command.__doc__, command.__name__ = function.__doc__, function.__name__
        group.command(name)(command)
        return function

    return register


@app.command("models")
def models_cmd() -> None:
    """List the model aliases with their Hub ids and image sizes."""
    from vitune.models.aliases import list_models

    aliases = list_models()
    name_width = max(len("alias"), *(len(alias.name) for alias in aliases))
    hub_width = max(len("hub id"), *(len(alias.hub_id) for alias in aliases))
    typer.echo(f"{'alias':<{name_width}}  {'size':>4}  {'hub id':<{hub_width}}  note".rstrip())
    for alias in aliases:
        typer.echo(f"{alias.name:<{name_width}}  {alias.image_size:>4}  {alias.hub_id:<{hub_width}}  {alias.note}".rstrip())


@config_command(data_app, "prepare", settings.PrepareConfig)
def data_prepare_cmd(config: settings.PrepareConfig) -> None:
    """Decode SOURCE once into a cached, split DATASET_DIR."""
    from vitune.data.prepare import prepare

    info = prepare(config)
    counts = ", ".join(f"{name} {n}" for name, n in info.splits.items())
    typer.echo(
        f"{config.out}: {info.format}, {info.task}, {len(info.labels)} labels, {info.image_size}px, "
        f"split {info.split_method} (seed {info.seed}): {counts}"
    )
    if info.skipped:
        shown = "; ".join(f"{row['file']}: {row['reason']}" for row in info.skipped[:5])
        more = f" (+{len(info.skipped) - 5} more in dataset.json)" if len(info.skipped) > 5 else ""
        typer.echo(f"skipped {len(info.skipped)}: {shown}{more}")


@config_command(data_app, "show", settings.ShowConfig)
def data_show_cmd(config: settings.ShowConfig) -> None:
    """Print the first rows and label frequencies; write a labelled sample grid."""
    from vitune.data.show import show

    show(config)


@config_command(app, "train", settings.TrainConfig, overridable=True)
def train_cmd(config: settings.TrainConfig) -> None:
    """Fine-tune MODEL on DATASET_DIR with transformers.Trainer; write RUN_DIR."""
    import os

    from vitune.training.fine_tune import train

    result = train(config)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only the main process reports
        return
    metrics = ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in result.metrics["metrics"].items())
    typer.echo(f"{result.run_dir}: validation {metrics} ({result.metrics['train_seconds']:.1f} s training)")


@config_command(app, "tune", settings.TuneConfig)
def tune_cmd(config: settings.TuneConfig) -> None:
    """Search lr, batch size, warm-up and weight decay (Optuna or Ray Tune); write DIR/tune.json and best.yaml."""
    from vitune.storage.layout import TuneDir
    from vitune.training.tune import tune

    result = tune(config)
    document, folder = result.document, TuneDir(result.out)
    states = ", ".join(f"{n} {s}" for s, n in Counter(t["state"] for t in document["trials"]).items())
    params = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in document["best"]["params"].items())
    typer.echo(f"{folder.report}: {len(document['trials'])} trials ({states}); best {document['metric']} "
               f"{document['best']['value']:.4f} with {params}")
    typer.echo(f"train it: vitune train --config {folder.best} --out RUN_DIR")


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


@config_command(app, "heads", settings.HeadsConfig)
def heads_cmd(config: settings.HeadsConfig) -> None:
    """Fit SVM / logistic / MLP / ensemble heads on frozen embeddings; write DIR/heads.json."""
    from vitune.heads import fit_heads

    result = fit_heads(config)
    print_heads_table(result)
    typer.echo(f"{HeadsDir(result.out).report}: {len(result.heads)} heads on {result.split}")


@config_command(app, "evaluate", settings.EvaluateConfig)
def evaluate_cmd(config: settings.EvaluateConfig) -> None:
    """Metrics with 95% bootstrap intervals, thresholds tuned on validation, ROC/PR plots."""
    from vitune.evaluation.evaluate import evaluate

    result = evaluate(config)
    typer.echo(f"{result.split}: {result.num_samples} images ({result.task})")
    for key, value in result.metrics.items():
        ci = result.confidence_intervals.get(key)
        text = "n/a" if value is None else f"{value:.4f}"
        typer.echo(f"  {key:<24} {text}" + (f"  95% CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    typer.echo(f"wrote {result.path}")
    if (result.thresholds or {}).get("path"):
        typer.echo(f"wrote {result.thresholds['path']} (tuned on {result.thresholds['tuned_on']})")


@config_command(app, "predict", settings.PredictConfig)
def predict_cmd(config: settings.PredictConfig) -> None:
    """Predict images: per-label probabilities and decisions (thresholds from `vitune evaluate`)."""
    from vitune.inference.predict import format_table, predict

    result = predict(config)
    for skipped in result.skipped:
        typer.echo(f"skipped {skipped.file}: {skipped.reason}", err=True)
    if result.out is None:
        typer.echo(format_table(result))
    where = f", wrote {result.out}" if result.out else ""
    typer.echo(f"predicted {len(result.files)} image(s), skipped {len(result.skipped)}{where}", err=True)
    if result.explanations is not None:
        report_explanations(result.explanations)


@config_command(app, "explain", settings.ExplainConfig)
def explain_cmd(config: settings.ExplainConfig) -> None:
    """Where the model looks: per image and label an overlay, explanations.json (peaks) and heatmaps.npz."""
    from vitune.explain import explain

    result = explain(config)
    report_explanations(result)


def report_explanations(result) -> None:
    """The skipped files on stderr, then one summary line."""
    for skipped in result.skipped:
        typer.echo(f"skipped {skipped.file}: {skipped.reason}", err=True)
    typer.echo(f"explained {len(result.images)} image(s) with {result.method} ({result.overlays} overlays), "
               f"skipped {len(result.skipped)}, wrote {result.out}", err=True)


@config_command(app, "serve", settings.ServeConfig)
def serve_cmd(config: settings.ServeConfig) -> None:
    """Serve a web page (/) and a JSON API (/v1/predict, /healthz) for the run; 127.0.0.1 by default."""
    from vitune.serve.app import serve  # gradio and uvicorn load only here: `vitune --help` stays fast

    serve(config, echo=typer.echo)


@config_command(app, "export", settings.ExportConfig)
def export_cmd(config: settings.ExportConfig) -> None:
    """Export the model to ONNX (dynamic batch), verified with onnxruntime against torch."""
    from vitune.inference.export import export_onnx

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


@config_command(app, "report", settings.ReportConfig)
def report_cmd(config: settings.ReportConfig) -> None:
    """Write one self-contained HTML report: data, curves, metrics with intervals, heads, config."""
    from vitune.evaluation.report import build_report

    typer.echo(f"wrote {build_report(config)}")


@config_command(app, "demo", settings.DemoConfig)
def demo_cmd(config: settings.DemoConfig) -> None:
    """The whole path on built-in synthetic chest X-rays, offline: data, train, heads, evaluate, report."""
    from vitune.workflows.demo import run_demo

    run_demo(config, echo=typer.echo, show_heads=print_heads_table)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    from vitune.runtime.progress import quiet_library_bars
    from vitune.runtime.signals import clear_stop_request, request_stop

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_library_bars()
    clear_stop_request()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:  # a background job started with Ctrl-C ignored keeps it so
            signal.signal(sig, request_stop)  # `kill` unwinds like Ctrl-C: staging folders are removed
    try:
        _run_app()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_app() -> None:
    """The app, each way it can end turned into an exit code (2 for a user mistake) and at most one line."""
    try:
        code = app(standalone_mode=False)  # typer turns Ctrl-C into a returned 130 here, not an exception
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
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except Exception as exc:  # click's usage errors arrive here in non-standalone mode
        if not _is_click_error(exc):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `vitune` / `vitune data`: show the help
            typer.echo(exc.format_message())
        else:
            command = exc.ctx.command_path if getattr(exc, "ctx", None) else "vitune"
            typer.echo(f"error: {exc.format_message()} (see `{command} --help`)", err=True)
        sys.exit(UserError.exit_code)
    if code == INTERRUPTED:
        typer.echo("interrupted: nothing half-written was kept", err=True)
    if isinstance(code, int) and code:
        sys.exit(code)


def _is_click_error(exc: Exception) -> bool:
    """A click (or typer's vendored click) ClickException: a bad flag, value or command."""
    # typer >= 0.20 vendors click as typer._click, so isinstance checks against click miss them
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)
