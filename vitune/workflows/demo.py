"""`vitune demo`: the whole path on built-in data, offline, in a few minutes on a laptop CPU.

synthetic ChestX-ray14-like release -> ``prepare`` (official split) -> ``train`` -> ``heads``
-> ``evaluate`` (test split) -> ``report``. Each step is the same library call a user makes;
this module only wires them and prints a summary.

No pretrained weights can be downloaded offline, so by default the demo trains a small ViT
(4 layers, width 128, 8 px patches at 64 px) from a random start: the synthetic findings are
simple enough for that. ``model=`` fine-tunes any alias, Hub id or local checkpoint instead, with
the data prepared at that model's resolution.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vitune.config import DemoConfig
from vitune.errors import UserError
from vitune.storage.atomic import write_atomic

MARKER = "demo.json"  # written into OUT: marks a folder a later demo may overwrite
DEMO_IMAGE_SIZE = 64
SCRATCH_VIT = dict(patch_size=8, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512)


def make_scratch_vit(out: Path | str, image_size: int = DEMO_IMAGE_SIZE, seed: int = 0) -> Path:
    """Write a small randomly initialised ViT checkpoint (``save_pretrained`` layout) into ``out``.

    Its image processor normalises with mean = std = 0.5, like the Google ViT checkpoints.
    """
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    out = Path(out)
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = ViTModel(ViTConfig(image_size=image_size, **SCRATCH_VIT), add_pooling_layer=False)
    model.save_pretrained(out)
    ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(out)
    return out


def clear_previous_demo(out: Path) -> None:
    """Make ``out`` ready: absent, empty, or a previous demo (then emptied)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the demo run")
    entries = list(out.iterdir())
    if entries and not (out / MARKER).is_file():
        raise UserError(f"--out {out} holds other files and is not a previous demo: choose an empty or new folder")
    for entry in entries:
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


class _Steps:
    """Times the demo's steps and prints one line per step."""

    def __init__(self, echo, total: int):
        self.echo, self.total, self.done, self.seconds = echo, total, 0, {}

    def run(self, name: str, action):
        """Announce step ``name``, run ``action()``, keep its duration and return its result."""
        self.done += 1
        self.echo(f"[{self.done}/{self.total}] {name} ...")
        start = time.perf_counter()
        result = action()
        self.seconds[name] = round(time.perf_counter() - start, 1)
        return result

    def report(self, name: str, text: str) -> None:
        """One summary line for the step just run, with its seconds."""
        self.echo(f"[{self.done}/{self.total}] {name}: {text} ({self.seconds[name]:.1f} s)")


@dataclass
class DemoResult:
    """The demo's summary, as written to ``OUT/demo.json``."""

    status: str
    seconds: float
    step_seconds: dict[str, float]
    model: str
    images: dict[str, int]
    validation_roc_auc_macro: float
    heads_validation_roc_auc_macro: dict[str, float]
    test_roc_auc_macro: float
    test_roc_auc_macro_ci: list[float] | None
    report: str

    def to_json(self) -> dict:
        """The ``demo.json`` document."""
        return asdict(self)


def run_demo(config: DemoConfig, echo=print, show_heads=None) -> DemoResult:
    """Run the whole vitune path on built-in data into ``config.out``; return the summary (``demo.json``).

    ``echo`` prints each step's line; ``show_heads`` (optional) is called with the heads result,
    e.g. to print the CLI's comparison table.
    """
    from vitune.config import EvaluateConfig, HeadsConfig, ReportConfig
    from vitune.evaluation.evaluate import evaluate
    from vitune.evaluation.report import build_report
    from vitune.heads import fit_heads

    out = config.out
    clear_previous_demo(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / MARKER, json.dumps({"status": "running"}) + "\n")
    started = time.perf_counter()
    steps = _Steps(echo, 5)

    info = steps.run("data", lambda: demo_data(config))
    counts = ", ".join(f"{split} {n}" for split, n in info.splits.items())
    steps.report("data", f"{sum(info.splits.values())} synthetic chest X-rays of {config.patients} patients, "
                         f"{len(info.labels)} findings, {info.image_size}px, patient-grouped official split: {counts}")

    run = steps.run("train", lambda: demo_train(config, info.image_size))
    val_auc = run.metrics["metrics"]["roc_auc_macro"]
    steps.report("train", f"{config.model or 'small ViT from a random start'}, {config.epochs:g} epochs, "
                          f"validation roc_auc_macro {val_auc:.4f}")

    heads = steps.run("heads", lambda: fit_heads(HeadsConfig(model=out, data=out / "data", seed=config.seed)))
    if show_heads is not None:
        show_heads(heads)
    head_aucs = {name: entry["metrics"]["roc_auc_macro"] for name, entry in heads.heads.items()}
    steps.report("heads", "validation roc_auc_macro " + ", ".join(f"{n} {v:.4f}" for n, v in head_aucs.items()))

    test = steps.run("evaluate", lambda: evaluate(EvaluateConfig(run=out, data=out / "data", split="test",
                                                                 bootstrap=config.bootstrap, seed=config.seed)))
    test_auc = test.metrics["roc_auc_macro"]
    interval = test.confidence_intervals.get("roc_auc_macro")  # None when too few resamples were valid
    shown = f"{interval[0]:.4f}-{interval[1]:.4f}" if interval else "n/a"
    steps.report("evaluate", f"test roc_auc_macro {test_auc:.4f} (95% CI {shown}) on {test.num_samples} images")

    report = steps.run("report", lambda: build_report(ReportConfig(run=out)))
    steps.report("report", str(report))

    summary = DemoResult(
        status="done", seconds=round(time.perf_counter() - started, 1), step_seconds=steps.seconds,
        model=config.model or "scratch-vit", images=info.splits, validation_roc_auc_macro=val_auc,
        heads_validation_roc_auc_macro=head_aucs, test_roc_auc_macro=test_auc, test_roc_auc_macro_ci=interval,
        report=str(report),
    )
    write_atomic(out / MARKER, json.dumps(summary.to_json(), indent=2) + "\n")
    echo(f"done in {summary.seconds:.0f} s: test roc_auc_macro {test_auc:.4f}; open {report}")
    return summary


def demo_data(config: DemoConfig):
    """Write the synthetic release into ``OUT/source`` and prepare it into ``OUT/data``."""
    from vitune.config import PrepareConfig
    from vitune.data.synthetic import make_chestxray_like
    from vitune.workflows.prepare import prepare

    source = make_chestxray_like(config.out / "source", n_patients=config.patients, seed=config.seed)
    image_size = DEMO_IMAGE_SIZE if config.model is None else None
    return prepare(PrepareConfig(source=source, out=config.out / "data", image_size=image_size, model=config.model,
                                 split="official", seed=config.seed))


def demo_train(config: DemoConfig, image_size: int):
    """Fine-tune ``config.model`` (default: a small scratch ViT in ``OUT/base-model``) into OUT."""
    from vitune.config import TrainConfig
    from vitune.training.fine_tune import train

    model = config.model or str(make_scratch_vit(config.out / "base-model", image_size, config.seed))
    return train(TrainConfig(
        data=str(config.out / "data"), model=model, out=str(config.out), epochs=config.epochs, lr=config.lr,
        batch_size=config.batch_size, warmup=0.1, weight_decay=0.05, seed=config.seed,
    ))
