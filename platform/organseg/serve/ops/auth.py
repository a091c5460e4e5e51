"""Optional bearer-token authentication for HTTP and gRPC.

On when the server has ``ORGANSEG_API_TOKEN`` in its environment or the Serve config names a token file
(``args.api_token_file``, e.g. a mounted Kubernetes Secret). The file is re-read when it changes, so a
rotated Secret takes effect without a restart. Tokens are compared in constant time. Health and readiness
stay open so that load balancers and Kubernetes probes need no secret.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from organseg.errors import ConfigError
from organseg.serve.ops.requests import Unauthenticated

TOKEN_ENV = "ORGANSEG_API_TOKEN"
OPEN_HTTP_PATHS = frozenset({"/healthz", "/readyz"})
OPEN_GRPC_METHODS = frozenset({"Health"})


def read_token_file(path: Path | str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"API token file {path}: cannot read it ({exc.strerror})") from None
    if not token:
        raise ConfigError(f"API token file {path} is empty")
    return token


class TokenCheck:
    """The server side: which token (if any) a request must carry."""

    def __init__(self, token_file: str | None = None, env_token: str | None = None) -> None:
        self.token_file = token_file
        self._env = env_token if env_token is not None else os.environ.get(TOKEN_ENV, "").strip()
        self._file_token: str | None = None
        self._stamp: tuple[float, int] | None = None
        if token_file:
            try:
                self._refresh()  # fail at start, not on the first request
            except OSError as exc:
                raise ConfigError(
                    f"API token file {token_file}: cannot read it ({exc.strerror})"
                ) from None

    def _refresh(self) -> None:
        stat = os.stat(self.token_file)  # a vanished file fails closed (OSError → 401 below)
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self._stamp:
            self._file_token = read_token_file(self.token_file)
            self._stamp = stamp

    @property
    def enabled(self) -> bool:
        return bool(self.token_file or self._env)

    def expected(self) -> list[str]:
        tokens = [self._env] if self._env else []
        if self.token_file:
            try:
                self._refresh()
            except (OSError, ConfigError):
                return tokens or ["\0unreadable token file\0"]  # fail closed
            tokens.append(self._file_token or "")
        return tokens

    def check(self, presented: str | None) -> None:
        """Raise :class:`Unauthenticated` unless ``presented`` (``"Bearer <token>"``) matches."""
        if not self.enabled:
            return
        scheme, _, token = (presented or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing bearer token (send 'Authorization: Bearer <token>')")
        given = token.strip().encode()
        ok = False
        for expected in self.expected():  # constant time per candidate; no early exit
            ok |= hmac.compare_digest(given, expected.encode())
        if not ok:
            raise Unauthenticated("invalid bearer token")


def client_token(token_file: Path | str | None = None) -> str | None:
    """What clients send: ``--token-file`` when given, else ``$ORGANSEG_API_TOKEN``."""
    if token_file is not None:
        return read_token_file(token_file)
    return os.environ.get(TOKEN_ENV, "").strip() or None
