"""Refreshing an ``mcp_oauth`` credential's access token at its token endpoint (OAuth 2.0's refresh-token grant,
RFC 6749 §6), so a session's MCP calls go on past the token's ``expires_at`` without anyone rotating it.

A token is refreshed when it is used (a turn opening its MCP credentials) within :data:`MARGIN_SECONDS` of its
expiry, not on a timer: a credential nobody uses costs nothing. The request is a form POST with the stored refresh
token, the client id, the ``resource`` and ``scope`` when set, and the client secret as the endpoint method says
(HTTP Basic, or in the body). The endpoint is reached as MCP servers are: the same host policy
(``RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS``, public addresses only otherwise) applied to the address connected to,
no proxy from the environment, bounded in time and in what is read. A new refresh token in the answer replaces the
old one (rotation). Errors name the credential's field and the endpoint's status or OAuth ``error`` code, never a
token or the endpoint's body.
"""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from ....net.host_policy import HostPolicy
from ....process.off_loop_import import import_off_loop
from ....protocol.errors import APIError

MARGIN_SECONDS = 60  # a token this close to its expiry is refreshed before it is sent
TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 64 << 10
MAX_LIFETIME_SECONDS = 10 * 365 * 86_400  # an ``expires_in`` past this is read as no expiry


class TokenEndpoint(Protocol):
    """Where the refresh is sent: one form POST, its status and (bounded) body."""

    async def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]: ...


class GuardedTokenEndpoint:
    """The token endpoint over HTTP, its sockets checked by the MCP host policy (run/tools/mcp_session.py)."""

    def __init__(self, policy: HostPolicy) -> None:
        self.policy = policy

    async def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]:
        await import_off_loop("....run.tools.mcp_session", __package__)  # and httpx2 with it
        import httpx2

        from ....run.tools.mcp_session import guarded_transport

        async with httpx2.AsyncClient(transport=guarded_transport(self.policy), timeout=TIMEOUT_SECONDS,
                                      follow_redirects=False, trust_env=False) as client, \
                client.stream("POST", url, data=form, headers=headers) as answer, \
                contextlib.aclosing(answer.aiter_bytes()) as chunks:  # closed here on a break, not by the GC
            body = bytearray()
            async for chunk in chunks:
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    break
            return answer.status_code, bytes(body)


def refresh_due(public: dict[str, Any], now: datetime) -> bool:
    """Whether the credential can be refreshed and its token is at or near its known expiry."""
    if not public.get("refresh") or not public.get("expires_at"):
        return False
    return datetime.fromisoformat(public["expires_at"]) - timedelta(seconds=MARGIN_SECONDS) <= now


async def refresh_token(endpoint: TokenEndpoint, public: dict[str, Any], secret: dict[str, Any], *, param: str,
                        now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The credential's ``(public, secret)`` after a refresh: a new access token and expiry (none if the endpoint
    gives no ``expires_in``), a rotated refresh token where the endpoint sends one."""
    refresh = public["refresh"]
    form = {"grant_type": "refresh_token", "refresh_token": secret["refresh_token"]}
    headers = {"Accept": "application/json"}
    method = refresh["token_endpoint_auth"]["type"]
    if method == "client_secret_basic":  # RFC 6749 §2.3.1: both parts form-encoded before Basic
        pair = f"{quote(refresh['client_id'], safe='')}:{quote(secret['client_secret'], safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        form["client_id"] = refresh["client_id"]
        if method == "client_secret_post":
            form["client_secret"] = secret["client_secret"]
    for key in ("resource", "scope"):
        if refresh.get(key):
            form[key] = refresh[key]
    try:
        status, body = await endpoint.post(refresh["token_endpoint"], form, headers)
    except Exception as error:  # noqa: BLE001  (any transport failure is the endpoint's; named, not raised on)
        raise _failed(502, param, f"its token endpoint could not be reached ({type(error).__name__})") from None
    answer = _json(body)
    if status != 200:
        code = answer.get("error") if isinstance(answer.get("error"), str) else None
        reason = f"error '{code[:64]}'" if code and code.isascii() and code.replace("_", "").isalnum() else "no error"
        raise _failed(400 if 400 <= status < 500 else 502, param,
                      f"its token endpoint answered HTTP {status} ({reason})")
    token = answer.get("access_token")
    if not isinstance(token, str) or not token or any(char in token for char in "\r\n\0"):
        raise _failed(502, param, "its token endpoint's answer holds no usable 'access_token'")
    token_type = answer.get("token_type", "bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise _failed(502, param, "its token endpoint's answer is not a bearer token")
    lifetime = answer.get("expires_in")
    public, secret = dict(public), dict(secret, token=token)
    if isinstance(lifetime, int) and not isinstance(lifetime, bool) and 0 < lifetime <= MAX_LIFETIME_SECONDS:
        expires = now.astimezone(UTC) + timedelta(seconds=lifetime)
        public["expires_at"] = expires.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    else:
        public["expires_at"] = None
    rotated = answer.get("refresh_token")
    if isinstance(rotated, str) and rotated and not any(char in rotated for char in "\r\n\0"):
        secret["refresh_token"] = rotated
    return public, secret


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _failed(status: int, param: str, why: str) -> APIError:
    return APIError(status, f"The credential named by '{param}' could not be refreshed: {why}.",
                    type="invalid_request_error", param=param, code="credential_refresh_failed")
