"""The memory budget's per-tenant share with real tenants (``RESPONSES_BRIDGE_AUTH=keys``, keys made with the CLI),
behind a real Envoy: one tenant's streams of large bodies held open fill its share and its next request is refused
naming it, while the other tenant's equally large request is served — through the HTTP door and through the
ext_proc door's body phase. The mechanism's other cases (idle bodies, their pace, ``auth: none``):
tests/integration/test_memory_fairness.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from responses_bridge.envoy_config import Auth, render_bootstrap
from tests.support.bridge import Sidecar, keys_command, running_sidecar
from tests.support.envoy import free_port, have_envoy, start_envoy
from tests.support.sdk import async_sdk
from tests.support.streams import held_stream

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
BUDGET = 64 << 20  # a share of 32 MiB
LARGE = "hold this [stall_after=1:120000] " + "x" * (5000 << 10)  # ~14.6 MiB of the budget: two fit in a share


@dataclass
class Tenants:
    envoy_url: str
    sidecar: Sidecar
    keys: dict[str, str]


@pytest.fixture(scope="module")
async def tenants(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Tenants]:
    if not have_envoy():
        pytest.skip("envoy binary not available")
    tmp = tmp_path_factory.mktemp("fair-keys")
    db = str(tmp / "bridge.db")
    keys = {}
    for tenant in ("attacker", "victim"):
        made = keys_command(db, "create", "--tenant", tenant)
        assert made.returncode == 0, made.stderr
        keys[tenant] = made.stdout.strip()
    listen_port = free_port()
    async with running_sidecar(str(tmp), fake_upstream, "--db", db, "--upstream-via",
                               f"http://127.0.0.1:{listen_port}/v1",
                               env={"RESPONSES_BRIDGE_AUTH": "keys",
                                    "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET)}) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0,
            auth=Auth("keys")))
        try:
            yield Tenants(f"http://127.0.0.1:{listen_port}", sidecar, keys)
        finally:
            envoy.stop()


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_one_tenant_at_its_share_is_refused_naming_it_and_the_other_tenant_is_served(
        tenants: Tenants, door: str) -> None:
    base = tenants.sidecar.http_url if door == "http" else tenants.envoy_url
    streams: list[Any] = []
    async with async_sdk(base_url=f"{base}/v1", api_key=tenants.keys["attacker"], max_retries=0,
                                  timeout=60) as attacker, \
            async_sdk(base_url=f"{base}/v1", api_key=tenants.keys["victim"], max_retries=0,
                               timeout=60) as victim:
        try:
            with pytest.raises(openai.InternalServerError) as caught:
                for _ in range(4):  # four would fit in the whole budget; two fill the share
                    streams.append(await held_stream(attacker, MODEL, LARGE))
            assert len(streams) == 2
            error = caught.value
            assert error.status_code == 503 and error.response.headers["retry-after"] == "1"
            assert isinstance(error.body, dict) and error.body["code"] == "memory_share_exceeded"
            streams.append(await held_stream(victim, MODEL, LARGE))
            assert (await victim.responses.create(model=MODEL, input="and more")).status == "completed"
        finally:
            for stream in streams:
                await stream.close()
