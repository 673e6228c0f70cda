"""The config of ``vitune serve RUN_DIR``: where to listen, which head answers, the batching and upload limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vitune.config.base import (
    BACKENDS,
    HEAD_NAMES,
    MODEL_HEAD,
    TTA_MODES,
    CommandConfig,
    check_choice,
    check_count,
    check_positive,
)
from vitune.errors import UserError

LOOPBACK = "127.0.0.1"
MAX_PORT = 65535


@dataclass
class ServeConfig(CommandConfig):
    """Settings of ``vitune serve RUN_DIR``; checks itself on construction.

    Args:
        run: RUN_DIR from `vitune train`.
        host: Address to listen on (127.0.0.1: this machine only; any other address needs a token or --insecure).
        port: TCP port of the page and the API (0: any free port, printed).
        head: model|svm|logreg|mlp|ensemble (heads from `vitune heads`).
        heads_dir: Where the heads are (default: RUN_DIR/heads).
        max_batch: Most concurrent requests scored in one forward pass.
        max_upload_mb: Largest upload accepted, in MB (larger ones get 413).
        device: cpu, cuda, cuda:1 ... (default: the first GPU, else the CPU).
        backend: torch, onnx or onnx-int8 (ONNX Runtime on the CPU, on RUN_DIR/export/, exported when missing or stale).
        token_file: File holding the access token (else $VITUNE_SERVE_TOKEN): the API needs `Authorization: Bearer
            TOKEN`, the page a login with it.
        ssl_certfile: PEM certificate: serve HTTPS (with --ssl-keyfile).
        ssl_keyfile: PEM private key of --ssl-certfile.
        insecure: Allow a non-loopback --host without a token (anyone who reaches it can use the page and API).
        tta: Test-time augmentation: none, flip (the mirrored view) or crops (five crops); the calibrated
            probabilities of the original and those views are averaged.
    """

    arguments: ClassVar[dict[str, str]] = {"run": "RUN_DIR"}
    usage = "vitune serve RUN_DIR"

    run: str
    host: str = LOOPBACK
    port: int = 7860
    head: str = MODEL_HEAD
    heads_dir: str | None = None
    max_batch: int = 8
    max_upload_mb: float = 32.0
    device: str | None = None
    backend: str = "torch"
    token_file: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    insecure: bool = False
    tta: str = "none"

    def __post_init__(self) -> None:
        self.run = str(self.run)
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= MAX_PORT:
            raise UserError(f"--port {self.port} is not a TCP port: use 1 to {MAX_PORT} (0: any free port)")
        check_count("max_batch", self.max_batch)
        check_positive("max_upload_mb", self.max_upload_mb)
        if self.head != MODEL_HEAD and self.head not in HEAD_NAMES:
            raise UserError(f"unknown --head {self.head!r}: use one of {', '.join((MODEL_HEAD, *HEAD_NAMES))}")
        check_choice("backend", self.backend, BACKENDS)
        check_choice("tta", self.tta, TTA_MODES)
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise UserError("HTTPS needs both --ssl-certfile and --ssl-keyfile (or neither)")

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)
