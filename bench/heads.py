"""Benchmark the heads: embedding throughput, then vitune's SVM head vs one-vs-rest ``SVC(kernel="rbf")``.

Run: ``.venv/bin/python bench/heads.py`` (``--quick`` for a smaller smoke run). Prints a table and
writes nothing. The SVM comparison uses the same synthetic embeddings, the same train/test split
and the same standardisation and C for both sides; both use all cores (``OneVsRestClassifier``
with ``n_jobs=-1`` for scikit-learn, BLAS threads for vitune). Labels come from a nonlinear
function of a low-dimensional projection plus noise, so an RBF kernel beats a linear model and
AUC stays well below 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitune.heads import LogRegHead, SVMHead, cuml_available  # noqa: E402
from vitune.runtime.progress import quiet_library_bars  # noqa: E402
from vitune.tasks import compute_metrics  # noqa: E402


def synthetic_embeddings(n_train: int, n_test: int, dim: int = 768, n_labels: int = 14, latent: int = 6,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ViT-like embeddings: a ``latent``-dim signal spread over ``dim`` correlated features plus noise.

    Each label is a noisy radial bump around its own centre in latent space with its own
    prevalence (5-30 %), like ChestX-ray14's findings.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    z = rng.normal(size=(n, latent))
    mixing = rng.normal(size=(latent, dim)) / np.sqrt(latent)
    x = np.tanh(z @ mixing) + 0.6 * rng.normal(size=(n, dim))
    centres = rng.normal(scale=0.8, size=(n_labels, latent))
    distance = ((z[:, None, :] - centres[None]) ** 2).sum(-1)
    logit = -distance + rng.logistic(scale=1.5, size=distance.shape)
    prevalence = rng.uniform(0.05, 0.30, size=n_labels)
    cut = np.array([np.quantile(logit[:, j], 1.0 - p) for j, p in enumerate(prevalence)])
    y = (logit > cut).astype(np.float64)
    x = x.astype(np.float32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def macro_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Macro ROC AUC over labels (vitune's metric)."""
    names = [f"l{j}" for j in range(y.shape[1])]
    return compute_metrics("multi_label", y, scores, names).metrics["roc_auc_macro"]


def timed(fn):
    """(result, seconds) of ``fn()``."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_embedding(n_images: int, batch_size: int) -> None:
    """Images/s of a ViT-Small-sized backbone (random weights, 224 px, CPU or GPU) through vitune."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from vitune.models.encoder import Encoder, embed_batches

    with tempfile.TemporaryDirectory() as tmp:
        config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                           image_size=224, patch_size=16)
        torch.manual_seed(0)
        ViTModel(config, add_pooling_layer=False).save_pretrained(tmp)
        ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(tmp)
        encoder = Encoder(tmp)
        pixels = np.random.default_rng(0).integers(0, 255, (n_images, 3, 224, 224), dtype=np.uint8)
        batches = [pixels[i : i + batch_size] for i in range(0, n_images, batch_size)]
        embed_batches(encoder, batches[:1])  # warm-up: weights loaded, kernels picked
        (values, _), seconds = timed(lambda: embed_batches(encoder, batches))
    print(f"embedding: ViT-S/16 224px ({encoder.device}, {torch.get_num_threads()} threads): "
          f"{n_images} images in {seconds:.1f} s = {n_images / seconds:.1f} images/s, dim {values.shape[1]}")


def bench_svm(n_train: int, n_test: int, C: float) -> None:
    """vitune's SVM head vs one-vs-rest SVC(rbf) on the same embeddings and split."""
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x_train, y_train, x_test, y_test = synthetic_embeddings(n_train, n_test)
    print(f"svm: {n_train} train + {n_test} test embeddings x {x_train.shape[1]}, {y_train.shape[1]} labels, "
          f"prevalence {y_train.mean(0).min():.2f}-{y_train.mean(0).max():.2f}, C={C}")
    rows = []

    def run(name, model, fit, score):
        _, fit_s = timed(lambda: fit(model))
        scores, predict_s = timed(lambda: score(model))
        rows.append((name, fit_s, predict_s, macro_auc(y_test, scores)))
        print(f"  {name:<40} fit {fit_s:7.2f} s  predict {predict_s:6.2f} s  macro AUC {rows[-1][3]:.4f}", flush=True)

    svc = make_pipeline(StandardScaler(), OneVsRestClassifier(SVC(kernel="rbf", C=C), n_jobs=-1))
    run("sklearn OvR SVC(rbf)", svc, lambda m: m.fit(x_train, y_train), lambda m: m.decision_function(x_test))
    head_fit, head_scores = (lambda m: m.fit(x_train, y_train)), (lambda m: m.predict_scores(x_test))
    run(f"vitune svm (sklearn backend, C={C})", SVMHead("multi_label", C=C, backend="sklearn"), head_fit, head_scores)
    run("vitune svm (sklearn backend, C by 3-fold CV)", SVMHead("multi_label", C=None, backend="sklearn"),
        head_fit, head_scores)
    run("vitune logreg (linear reference)", LogRegHead("multi_label"), head_fit, head_scores)
    base = rows[0]
    for name, fit_s, predict_s, auc in rows[1:3]:
        speedup = (base[1] + base[2]) / (fit_s + predict_s)
        print(f"  {name}: {speedup:.1f}x faster (fit+predict; fit {base[1] / fit_s:.1f}x), "
              f"AUC {auc - base[3]:+.4f} vs SVC -> {'PASS' if speedup >= 5 and auc >= base[3] - 0.01 else 'FAIL'}")
    if not cuml_available():
        print("  cuML: skipped (needs `pip install vitune[gpu]` and a CUDA GPU)")
        return
    run(f"vitune svm (cuml backend, C={C})", SVMHead("multi_label", C=C, backend="cuml"), head_fit, head_scores)
    name, fit_s, predict_s, auc = rows[-1]
    print(f"  cuML vs scikit-learn SVC: fit {base[1] / fit_s:.1f}x, predict {base[2] / predict_s:.1f}x, "
          f"AUC {auc - base[3]:+.4f}")


def main() -> None:
    """Parse flags and run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 training embeddings, 16 images")
    parser.add_argument("--C", type=float, default=1.0, help="SVM C for both sides [1.0]")
    args = parser.parse_args()
    quiet_library_bars()  # a log gets the table, not bar fragments
    bench_embedding(n_images=16 if args.quick else 64, batch_size=16)
    bench_svm(n_train=1000 if args.quick else 5000, n_test=500 if args.quick else 2000, C=args.C)


if __name__ == "__main__":
    main()
