"""Who may use ``vitune serve``: the access token, the bind check and the guard in front of the app.

With a token (``--token-file PATH`` or ``VITUNE_SERVE_TOKEN``) every API route under ``/v1/``
needs ``Authorization: Bearer TOKEN`` (401 otherwise, compared in constant time) and the page
asks for a login whose password is the token (Gradio's own login and session cookie). Failed
logins are rate-limited per client address. ``GET /healthz`` stays open for health checks: it
tells the run's name and labels, never a patient's data.

A server that listens beyond this machine without a token is refused unless ``--insecure``.

slowapi was checked for the rate limit: it counts every request of a route, while only the
failed logins must count here, so the few lines of :class:`LoginLimiter` do it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections import defaultdict, deque
from pathlib import Path

from starlette.responses import JSONResponse

from vitune.config import ServeConfig
from vitune.errors import UserError

TOKEN_ENV = "VITUNE_SERVE_TOKEN"
MIN_TOKEN_CHARS = 16
API_PREFIX = "/v1/"
LOGIN_PATHS = ("/login", "/login/")
LOGIN_MESSAGE = "Log in with any user name and the server's access token as the password."
MAX_FAILED_LOGINS = 5
FAILED_LOGIN_WINDOW_S = 60.0
REFUSED_LOGIN = 400  # the status of Gradio's login route for wrong credentials


def read_token(config: ServeConfig) -> str | None:
    """The access token: ``--token-file``'s content, else ``$VITUNE_SERVE_TOKEN``, else None (no login)."""
    if config.token_file is not None:
        path = Path(config.token_file)
        try:
            token = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"--token-file {path}: cannot read it ({exc}); give a text file holding the token") from exc
        source = f"--token-file {path}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
        source = TOKEN_ENV
    if len(token) < MIN_TOKEN_CHARS:
        raise UserError(f"{source}: the token has {len(token)} characters, at least {MIN_TOKEN_CHARS} are needed "
                        "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_exposure(config: ServeConfig, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token, unless ``--insecure`` says it is meant."""
    if token is None and not config.insecure and not is_loopback(config.host):
        raise UserError(f"--host {config.host} lets anyone on the network use the model and see its answers: give "
                        f"--token-file PATH (or set {TOKEN_ENV}), or add --insecure if that is what you want")


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison of a presented token with the server's."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, else None."""
    if authorization is None:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


class LoginLimiter:
    """Failed logins per client address: after ``limit`` within ``window`` seconds, that client waits."""

    def __init__(self, limit: int = MAX_FAILED_LOGINS, window: float = FAILED_LOGIN_WINDOW_S):
        self.limit, self.window = limit, window
        self.failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, client: str) -> deque[float]:
        failures = self.failures[client]
        while failures and failures[0] <= time.monotonic() - self.window:
            failures.popleft()
        return failures

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again (0: now)."""
        failures = self._recent(client)
        if len(failures) < self.limit:
            return 0
        return max(1, int(failures[0] + self.window - time.monotonic()) + 1)

    def failed(self, client: str) -> None:
        """Count a failed login of ``client``."""
        self._recent(client).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        """Forget ``client``'s failures."""
        self.failures.pop(client, None)


class AccessGuard:
    """ASGI middleware: the bearer token on ``/v1/`` routes and the failed-login limit on the page's login.

    Written as plain ASGI rather than ``BaseHTTPMiddleware`` so Gradio's streamed event responses
    pass through untouched.
    """

    def __init__(self, app, token: str, limiter: LoginLimiter | None = None):
        self.app = app
        self.token = token
        self.limiter = limiter or LoginLimiter()

    async def __call__(self, scope, receive, send) -> None:
        """Refuse or pass on one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith(API_PREFIX):
            await self._api(scope, receive, send)
        elif path in LOGIN_PATHS and scope["method"] == "POST":
            await self._login(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _api(self, scope, receive, send) -> None:
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if token_matches(bearer_token(headers.get("authorization")), self.token):
            await self.app(scope, receive, send)
            return
        refusal = JSONResponse({"error": "missing or wrong token: send the header 'Authorization: Bearer TOKEN'"},
                               status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await refusal(scope, receive, send)

    async def _login(self, scope, receive, send) -> None:
        client = scope["client"][0] if scope.get("client") else "unknown"
        wait = self.limiter.retry_after(client)
        if wait:
            refusal = JSONResponse({"detail": f"too many failed logins: try again in {wait} s"}, status_code=429,
                                   headers={"Retry-After": str(wait)})
            await refusal(scope, receive, send)
            return

        async def watch(message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == REFUSED_LOGIN:
                    self.limiter.failed(client)
                elif message["status"] < 300:
                    self.limiter.succeeded(client)
            await send(message)

        await self.app(scope, receive, watch)


def page_login(token: str):
    """Gradio's ``auth`` callable: any user name, the token as the password (compared in constant time)."""

    def check(username: str, password: str) -> bool:
        return token_matches(password, token)

    return check
