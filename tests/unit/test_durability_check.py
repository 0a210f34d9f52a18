"""What ``serve`` says at start about durable runs (commands/durability_check.py), and the keeper of the client's
``Authorization`` it reports on (services/responses/kept_authorization.py): kept sealed only where it goes
upstream and keeping is on, opened only under the same key and purpose."""

from __future__ import annotations

import os
from typing import Any

import pytest

from responses_bridge.commands.durability_check import durability
from responses_bridge.config.settings import Settings
from responses_bridge.sealing import Sealer
from responses_bridge.services.responses.kept_authorization import PURPOSE, KeptAuthorization
from responses_bridge.store.sqlite.responses import SQLiteResponseStore
from tests.support.runtime import runtime_over

UPSTREAM = "http://127.0.0.1:9/v1"


def settings(db: str = "/tmp/durability/bridge.db", **given: Any) -> Settings:
    values: dict[str, Any] = {"upstream": UPSTREAM, "db": db, "api_key": None, "sealing_key": None, **given}
    return Settings(**values)


@pytest.mark.parametrize(("given", "durable", "said"), [
    ({}, True, "kept sealed"),  # the usual self-hosted deployment: the client's header goes upstream, kept
    ({"api_key": "sk-upstream-key-000"}, True, "not forwarded"),  # the configured key goes instead
    ({"auth": "keys"}, True, "not forwarded"),  # the client's header is its key to the bridge: never forwarded
    ({"durable_client_credentials": False}, False, "RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS=false"),
    ({"durable_client_credentials": False, "api_key": "sk-upstream-key-000"}, True, "not forwarded"),
    ({"db": ":memory:"}, False, "in memory"),
])
async def test_the_start_up_line_says_whether_runs_are_durable_and_why(
        store: SQLiteResponseStore, given: dict[str, Any], durable: bool, said: str) -> None:
    configured = settings(**given)
    runtime = runtime_over(store, configured)
    found = durability(configured, runtime)
    assert found.durable is durable
    assert said in str(found.client_header if durable else found.reason), found
    if durable and said == "kept sealed":
        assert found.sealed_with == "sealing.key beside the database"


async def test_the_key_that_seals_is_named_as_configured(store: SQLiteResponseStore) -> None:
    configured = settings(sealing_key="A" * 43 + "=")
    assert durability(configured, runtime_over(store, configured)).sealed_with == "RESPONSES_BRIDGE_SEALING_KEY"


def test_kept_only_where_forwarded_and_opened_only_under_its_key_and_purpose() -> None:
    sealer = Sealer(os.urandom(32))
    forwarded = KeptAuthorization(sealer, forwarded=lambda model, _: model != "keyed")
    sealed = forwarded.seal("Bearer sk-client", "open-model")
    assert sealed is not None and "sk-client" not in sealed
    assert forwarded.open(sealed) == "Bearer sk-client"
    assert forwarded.seal("Bearer sk-client", "keyed") is None  # its upstream gets a configured key
    assert forwarded.seal(None, "open-model") is None and forwarded.seal("", "open-model") is None
    assert KeptAuthorization(sealer, enabled=False).seal("Bearer sk-client") is None
    # another deployment's key, another purpose's blob, a damaged value, nothing: not opened
    assert KeptAuthorization(Sealer(os.urandom(32))).open(sealed) is None
    assert forwarded.open(sealer.seal("background-request", "Bearer sk-client")) is None
    assert forwarded.open(sealed[:-4] + "AAAA") is None and forwarded.open(None) is None
    assert sealer.open(PURPOSE, sealed) == "Bearer sk-client"
