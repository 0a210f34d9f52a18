"""A sidecar whose tenants sign in with API keys, beside its Envoy: the stack of the tests that send the same
requests through both doors (the HTTP door, Envoy's ext_proc) and compare what each tenant got.

The sidecar's upstream goes through the Envoy listener (``--upstream-via``), so what either door sends the model
crosses the same proxy; each test module adds its own settings (memory budgets, MCP hosts, connection bounds)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from responses_bridge.demo.procs import free_port
from responses_bridge.envoy_config import Auth, render_bootstrap
from tests.support.bridge import Sidecar, create_keys, running_sidecar
from tests.support.envoy import have_envoy, start_envoy


@dataclass
class Stack:
    sidecar: Sidecar
    envoy_url: str
    keys: dict[str, str]
    """Each tenant's API key."""

    def url(self, door: str) -> str:
        """The base URL of ``door`` ("http": the sidecar's own; anything else: Envoy's listener)."""
        return self.sidecar.http_url if door == "http" else self.envoy_url


@asynccontextmanager
async def keyed_stack(fake_upstream: str, directory: Path, tenants: Sequence[str], *, db_name: str = "bridge.db",
                      env: dict[str, str]) -> AsyncIterator[Stack]:
    """A sidecar on ``directory``'s SQLite file ``db_name`` with a key for each of ``tenants`` and its Envoy
    (skipped without an Envoy binary); ``env``: the sidecar's settings besides ``RESPONSES_BRIDGE_AUTH=keys``."""
    if not have_envoy():
        pytest.skip("envoy binary not available")
    directory.mkdir(parents=True, exist_ok=True)
    db = str(directory / db_name)
    keys = create_keys(db, tenants)
    listen_port = free_port()
    async with running_sidecar(str(directory), fake_upstream, "--db", db, "--upstream-via",
                               f"http://127.0.0.1:{listen_port}/v1",
                               env={"RESPONSES_BRIDGE_AUTH": "keys", **env}) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0,
            auth=Auth("keys")))
        try:
            yield Stack(sidecar, f"http://127.0.0.1:{listen_port}", keys)
        finally:
            envoy.stop()


async def store_history(stack: Stack, door: str, items: int, *, tenant: str = "attacker",
                        model: str = "fake-model") -> str:
    """The id of ``tenant``'s stored response of ``items`` tiny input items, through ``door`` (sent as bytes: the
    SDK takes seconds to walk a list this long): the history a chained request then loads."""
    body = orjson.dumps({"model": model, "input": [{"role": "user", "content": "x"}] * items})
    async with aiohttp.ClientSession() as session, session.post(
            f"{stack.url(door)}/v1/responses", data=body, headers={
                "Authorization": f"Bearer {stack.keys[tenant]}", "Content-Type": "application/json"}) as answer:
        stored = await answer.json()
    assert answer.status == 200 and stored["status"] == "completed", stored
    return str(stored["id"])
