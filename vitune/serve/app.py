"""The served app: the API and the page on one FastAPI app, run by uvicorn on the bound socket."""

from __future__ import annotations

import gc
import logging
import socket
import ssl
from typing import Callable

from vitune.config import ServeConfig
from vitune.errors import UserError
from vitune.serve.api import build_api
from vitune.serve.explaining import ServedExplainer
from vitune.serve.page import mount_page
from vitune.serve.security import AccessGuard, check_exposure, is_loopback, read_token
from vitune.serve.service import ServedModel

log = logging.getLogger(__name__)


def create_app(config: ServeConfig, served: ServedModel | None = None, token: str | None = None):
    """The FastAPI app of ``vitune serve``: ``/healthz``, ``/v1/predict`` and the page at ``/``.

    ``served`` defaults to the run and head of ``config`` (loaded now); explanations load their own
    copy of the run's model on the first request that asks for one. With a ``token`` the API needs
    it as a bearer token and the page a login (:mod:`vitune.serve.security`).
    """
    served = served or ServedModel.from_config(config)
    explainer = ServedExplainer(config.run, config.device)
    app = build_api(served, config.max_upload_bytes, explainer)
    app.state.served = served
    if token is not None:
        app.add_middleware(AccessGuard, token=token)
    return mount_page(app, served, config.run, config.max_upload_bytes, explainer, token)


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
    """Load the run, bind ``config.host:config.port`` and serve until Ctrl-C (HTTPS with a certificate)."""
    import uvicorn

    token = read_token(config)
    check_exposure(config, token)  # before the model loads: a refused start is quick
    app = create_app(config, token=token)
    # the libraries' objects live as long as the server: collections skip them (no pauses mid-request, quick exit)
    gc.freeze()
    sock = bind(config.host, config.port)
    port = sock.getsockname()[1]
    if token is None and not is_loopback(config.host):
        log.warning("listening on %s without a token (--insecure): anyone who reaches this address can use the "
                    "page and the API", config.host)
    settings = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                              ssl_certfile=config.ssl_certfile, ssl_keyfile=config.ssl_keyfile)
    try:
        settings.load()
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise UserError(f"cannot serve HTTPS with --ssl-certfile {config.ssl_certfile} and --ssl-keyfile "
                        f"{config.ssl_keyfile}: {exc}; give a PEM certificate and its private key") from exc
    scheme = "http" if config.ssl_certfile is None else "https"
    login = "token required" if token is not None else "no login"
    echo(f"vitune serve: {scheme}://{config.host}:{port}/ (run {app.state.served.name}, head {config.head}, "
         f"backend {config.backend}, --tta {config.tta}, {login}; API: GET /healthz, POST /v1/predict) - Ctrl-C stops")
    server = uvicorn.Server(settings)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
