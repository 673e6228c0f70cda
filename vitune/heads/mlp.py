"""The MLP head: a small torch MLP (one ReLU hidden layer) on standardised embeddings.

Deterministic (seeded initialisation and shuffling without touching the global RNG); the fitted
weights are plain numpy arrays, so prediction needs no torch and storage no pickle.
"""

from __future__ import annotations

import numpy as np

from vitune.heads.base import Head, target_scaler


class MLPHead(Head):
    """A small torch MLP (one ReLU hidden layer) on standardised embeddings, deterministic seed."""

    _array_state = ("w1_", "b1_", "w2_", "b2_")
    _value_state = ("target_mean_", "target_scale_")

    def __init__(self, task: str = "multi_label", hidden_size: int = 256, max_steps: int = 500,
                 batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4,
                 n_classes: int | None = None, random_state: int = 0):
        self._keep_params(locals())

    def fit(self, X, y) -> "MLPHead":
        """Train with AdamW for ``max_steps`` mini-batches (seeded init and shuffling)."""
        import torch

        X, y = self._validate_fit(X, y)
        self.backend_ = "torch"
        xs = torch.as_tensor(self._fit_scaler(X), dtype=torch.float32)
        self.target_mean_, self.target_scale_ = 0.0, 1.0
        if not self._task.is_classification:
            self.target_mean_, self.target_scale_ = target_scaler(y)
            y = ((y - self.target_mean_) / self.target_scale_)[:, None]
        ys = torch.as_tensor(y, dtype=torch.long if y.dtype == np.int64 else torch.float32)  # class ids or values
        threads = torch.get_num_threads()
        # One thread: these matmuls are too small to split, and on a busy machine OpenMP workers
        # waiting for each other made fitting 10-50x slower (measured on a shared 2-core box).
        torch.set_num_threads(1)
        try:
            self._train(xs, ys)
        finally:
            torch.set_num_threads(threads)
        return self

    def _train(self, xs, ys) -> None:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            net = torch.nn.Sequential(torch.nn.Linear(xs.shape[1], self.hidden_size), torch.nn.ReLU(),
                                      torch.nn.Linear(self.hidden_size, self.n_outputs_))
            optimizer = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            loss_fn, batch = self._task.loss, min(self.batch_size, len(xs))
            order = torch.randperm(len(xs))
            for step in range(self.max_steps):
                start = (step * batch) % len(xs)
                if start + batch > len(xs):
                    order, start = torch.randperm(len(xs)), 0
                idx = order[start : start + batch]
                optimizer.zero_grad()
                loss_fn(net(xs[idx]), ys[idx]).backward()
                optimizer.step()
        first, last = net[0], net[2]
        self.w1_, self.b1_ = first.weight.detach().numpy().copy(), first.bias.detach().numpy().copy()
        self.w2_, self.b2_ = last.weight.detach().numpy().copy(), last.bias.detach().numpy().copy()

    def _decision(self, X) -> np.ndarray:
        """Output logits ``[N, outputs]`` (numpy forward pass of the saved weights)."""
        X = self._validate_predict(X)
        hidden = np.maximum(self.scaler_.transform(X) @ self.w1_.T + self.b1_, 0.0)
        return hidden @ self.w2_.T + self.b2_

    def predict_scores(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """Probabilities or target-unit predictions."""
        scores = super().predict_scores(X)
        return scores if self._task.is_classification else scores * self.target_scale_ + self.target_mean_
