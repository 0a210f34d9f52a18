"""The refresh-token grant as services/agents/vaults/oauth.py sends it and reads its answer, against a recorded endpoint
(the integration suite, test_agents_vault_oauth.py, runs it against a real HTTP endpoint through both doors)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import web

from responses_bridge.net.host_policy import HostPolicy
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.agents.vaults.oauth import (
    MAX_ANSWER_BYTES,
    GuardedTokenEndpoint,
    refresh_due,
    refresh_token,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Endpoint:
    def __init__(self, status: int, answer: object) -> None:
        self.status, self.answer = status, orjson.dumps(answer)
        self.sent: list[tuple[str, dict[str, str], dict[str, str]]] = []

    async def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]:
        self.sent.append((url, form, headers))
        return self.status, self.answer


def credential(method: str = "client_secret_post", expires_at: str | None = "2026-11-25T12:00:30Z") -> tuple:
    public = {"type": "mcp_oauth", "mcp_server_url": "https://mcp.example/mcp", "expires_at": expires_at,
              "refresh": {"client_id": "c id", "resource": "https://mcp.example/", "scope": None,
                          "token_endpoint": "https://auth.example/token", "token_endpoint_auth": {"type": method}}}
    return public, {"token": "old", "refresh_token": "r1", "client_secret": "s:e/c"}


def test_a_token_is_due_within_the_margin_of_its_expiry_and_only_with_a_refresh() -> None:
    public, _ = credential()
    assert refresh_due(public, NOW)
    assert not refresh_due({**public, "expires_at": "2026-11-25T12:05:00+00:00"}, NOW)
    assert not refresh_due({**public, "expires_at": None}, NOW)
    assert not refresh_due({**public, "refresh": None}, NOW)


async def test_client_secret_post_sends_the_secret_in_the_form_and_keeps_an_unrotated_refresh_token() -> None:
    endpoint = Endpoint(200, {"access_token": "new", "token_type": "bearer", "expires_in": 600})
    public, secret = await refresh_token(endpoint, *credential(), param="p", now=NOW)
    url, form, headers = endpoint.sent[0]
    assert url == "https://auth.example/token" and "Authorization" not in headers
    assert form == {"grant_type": "refresh_token", "refresh_token": "r1", "client_id": "c id",
                    "client_secret": "s:e/c", "resource": "https://mcp.example/"}
    assert secret == {"token": "new", "refresh_token": "r1", "client_secret": "s:e/c"}
    assert public["expires_at"] == "2026-11-25T12:10:00Z"


async def test_basic_form_encodes_both_parts_and_none_sends_no_secret() -> None:
    endpoint = Endpoint(200, {"access_token": "new", "token_type": "Bearer"})
    public, _ = await refresh_token(endpoint, *credential("client_secret_basic"), param="p", now=NOW)
    assert endpoint.sent[0][2]["Authorization"] == "Basic YyUyMGlkOnMlM0FlJTJGYw=="  # c%20id:s%3Ae%2Fc
    assert public["expires_at"] is None  # no expires_in: no known expiry
    await refresh_token(endpoint, *credential("none"), param="p", now=NOW)
    assert "client_secret" not in endpoint.sent[1][1] and endpoint.sent[1][1]["client_id"] == "c id"


@pytest.mark.parametrize(("status", "answer", "expected", "named"), [
    (400, {"error": "invalid_grant", "error_description": "r1 is revoked"}, 400, "invalid_grant"),
    (500, "<html>r1</html>", 502, "HTTP 500"),
    (200, {"token_type": "bearer"}, 502, "access_token"),
    (200, {"access_token": "t", "token_type": "mac"}, 502, "bearer"),
    (200, {"access_token": "a\r\nb"}, 502, "access_token"),
])
async def test_an_unusable_answer_is_an_error_naming_why_and_never_a_secret(
        status: int, answer: object, expected: int, named: str) -> None:
    with pytest.raises(APIError) as caught:
        await refresh_token(Endpoint(status, answer), *credential(), param="agent.tools[0].credential_id", now=NOW)
    error = caught.value
    assert (error.status, error.code, error.param) == (expected, "credential_refresh_failed",
                                                       "agent.tools[0].credential_id")
    assert named in error.message and "r1" not in error.message and "s:e/c" not in error.message


async def test_an_unreachable_endpoint_is_a_502() -> None:
    class Down:
        async def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]:
            raise ConnectionRefusedError("refused")

    with pytest.raises(APIError) as caught:
        await refresh_token(Down(), *credential(), param="p", now=NOW)
    assert caught.value.status == 502 and "ConnectionRefusedError" in caught.value.message


async def test_an_endless_answer_is_read_only_to_its_bound_and_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint that answers without end (8 MiB here) is read to 64 KiB and a chunk, then dropped: the body's
    iterator is closed where the read stops (not left to the garbage collector, which may finalize it on another
    thread), the connection with it."""
    import httpx2

    sent = asyncio.Event()
    iterators: list[Any] = []
    aiter_bytes = httpx2.Response.aiter_bytes

    def tracked(self: httpx2.Response, *args: Any, **kwargs: Any) -> Any:
        iterators.append(aiter_bytes(self, *args, **kwargs))
        return iterators[-1]

    monkeypatch.setattr(httpx2.Response, "aiter_bytes", tracked)

    async def endless(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse()
        await answer.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(128):
                await answer.write(b"x" * (64 << 10))
            sent.set()
        return answer

    app = web.Application()
    app.router.add_post("/token", endless)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        status, body = await GuardedTokenEndpoint(HostPolicy.parse("127.0.0.1")).post(
            f"http://127.0.0.1:{port}/token", {"grant_type": "refresh_token"}, {})
        assert status == 200 and MAX_ANSWER_BYTES < len(body) <= 2 * MAX_ANSWER_BYTES
        assert len(iterators) == 1 and iterators[0].ag_frame is None  # closed, though still referenced here
        await asyncio.sleep(0.2)
        assert not sent.is_set()  # the rest was never read
    finally:
        await runner.cleanup()
