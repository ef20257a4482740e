"""Bearer API keys: constant-time comparison, scoring keys and admin keys kept apart."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi import Request

from service.api.errors import ForbiddenError, NotFoundError, UnauthorizedError
from service.config import ApiKey, AuthSettings

BEARER = "bearer "


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[: len(BEARER)].lower() != BEARER:
        return None
    return header[len(BEARER) :].strip() or None


def _matches(token: str, secret: str) -> bool:
    return hmac.compare_digest(token.encode(), secret.encode())


def _find(token: str, keys: Sequence[ApiKey]) -> ApiKey | None:
    """Compare against every key (no early exit), so timing does not tell which one matched."""
    found = None
    for key in keys:
        if _matches(token, key.key.get_secret_value()):
            found = key
    return found


def scoring_key(request: Request, auth: AuthSettings) -> ApiKey | None:
    """The caller's key for scoring routes; None when scoring is open. Raises 401."""
    if not auth.api_keys:
        return None
    token = _token(request)
    if token is None:
        raise UnauthorizedError("send 'Authorization: Bearer <key>'")
    key = _find(token, auth.api_keys)
    if key is None:
        raise UnauthorizedError("the API key is not valid")
    return key


def require_admin(request: Request, auth: AuthSettings) -> None:
    """Admin routes need an admin key; without configured admin keys they do not exist."""
    if not auth.admin_keys:
        raise NotFoundError("the admin API is disabled: set auth.admin_keys to enable it")
    token = _token(request)
    if token is None:
        raise UnauthorizedError("send 'Authorization: Bearer <admin key>'")
    admin = False
    for secret in auth.admin_keys:
        admin |= _matches(token, secret.get_secret_value())
    if not admin:
        if _find(token, auth.api_keys) is not None:
            raise ForbiddenError("a scoring key cannot use the admin API")
        raise UnauthorizedError("the admin key is not valid")
