"""The served app: the API and the page on one FastAPI app, run by uvicorn on the bound socket."""

from __future__ import annotations

import gc
import logging
import socket
from typing import Callable

from vitune.config import ServeConfig
from vitune.config.serve import LOOPBACK
from vitune.errors import UserError
from vitune.serve.api import build_api
from vitune.serve.explaining import ServedExplainer
from vitune.serve.page import mount_page
from vitune.serve.service import ServedModel

log = logging.getLogger(__name__)


def create_app(config: ServeConfig, served: ServedModel | None = None):
    """The FastAPI app of ``vitune serve``: ``/healthz``, ``/v1/predict`` and the page at ``/``.

    ``served`` defaults to the run and head of ``config`` (loaded now); explanations load their own
    copy of the run's model on the first request that asks for one.
    """
    served = served or ServedModel.from_config(config)
    explainer = ServedExplainer(config.run, config.device)
    app = build_api(served, config.max_upload_bytes, explainer)
    app.state.served = served
    return mount_page(app, served, config.run, config.max_upload_bytes, explainer)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; a busy port or an unknown address is a :class:`UserError`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only then (else each kept-alive request waits ~40 ms)
        sock = socket.socket(family, kind, proto)
    except (OSError, socket.gaierror) as exc:
        raise UserError(f"--host {host}: cannot listen there ({exc}); "
                        "use 127.0.0.1 or an address of this machine") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server there? "
                        "choose another --port)") from exc
    return sock


def serve(config: ServeConfig, echo: Callable[[str], None] = print) -> None:
    """Load the run, bind ``config.host:config.port`` and serve until Ctrl-C."""
    import uvicorn

    app = create_app(config)
    # the libraries' objects live as long as the server: collections skip them (no pauses mid-request, quick exit)
    gc.freeze()
    sock = bind(config.host, config.port)
    port = sock.getsockname()[1]
    if config.host != LOOPBACK:
        log.warning("listening on %s: anyone who reaches this address can use the page and the API "
                    "(there is no login)", config.host)
    echo(f"vitune serve: http://{config.host}:{port}/ (run {app.state.served.name}, head {config.head}; "
         f"API: GET /healthz, POST /v1/predict) - Ctrl-C stops")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
