"""The SigV4 check of ``codex exec-server --remote-transport direct --aws-sigv4``'s requests, against requests the
real codex 0.169 sent (its registration and its websocket, signed with ``AKIDPROBE`` / ``secretprobe``), and the
executor credentials and registrations (services/agents/executor/hub.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from responses_bridge.sealing import Sealer
from responses_bridge.services.agents.executor.hub import (
    MAX_PENDING_PER_TENANT,
    Claim,
    ExecutorHub,
    RegistrationRefused,
    access_key_id,
    key_owner,
    secret_access_key,
)
from responses_bridge.services.agents.executor.sigv4 import SignatureRefused, verify

REGISTRATION: dict[str, Any] = {
    "method": "POST", "raw_path": "/base/cloud/environment/env_probe/direct/register", "raw_query": "",
    "body": b'{"transport":"direct_jsonrpc_v1"}',
    "headers": {"content-type": "application/json", "x-amz-date": "20261126T064332Z", "host": "127.0.0.1:18765",
                "authorization": "AWS4-HMAC-SHA256 Credential=AKIDPROBE/20261126/us-east-1/execute-api/aws4_request, "
                                 "SignedHeaders=content-type;host;x-amz-date, "
                                 "Signature=d5cde19ab00321c82fd64b59f07986339c54d619b91d5f5af5b2b037aaccbb2b"}}
REGISTRATION_TIME = datetime(2026, 11, 26, 6, 43, 40, tzinfo=UTC)
WEBSOCKET: dict[str, Any] = {
    "method": "GET", "raw_path": "/base/ws/reg_1", "raw_query": "token=abc", "body": b"",
    "headers": {"Host": "127.0.0.1:18767", "x-amz-date": "20261126T064501Z", "Upgrade": "websocket",
                "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDPROBE/20261126/us-east-1/execute-api/aws4_request, "
                                 "SignedHeaders=host;x-amz-date, "
                                 "Signature=3e4787121002a8bc1affa4301fe919e558332b60e28e2d53030b4baa0a295428"}}


def secret(key_id: str) -> str | None:
    return "secretprobe" if key_id == "AKIDPROBE" else None


def test_the_real_clients_requests_verify() -> None:
    signed = verify(**REGISTRATION, secret_for=secret, now=REGISTRATION_TIME)
    assert (signed.access_key_id, signed.region, signed.service) == ("AKIDPROBE", "us-east-1", "execute-api")
    assert verify(**WEBSOCKET, secret_for=secret, now=datetime(2026, 11, 26, 6, 45, tzinfo=UTC)).access_key_id \
        == "AKIDPROBE"


@pytest.mark.parametrize("change", [
    {"body": b'{"transport":"direct_jsonrpc_v2"}'},
    {"raw_path": "/base/cloud/environment/env_other/direct/register"},
    {"raw_query": "token=abd"},
    {"method": "PUT"},
])
def test_any_change_breaks_the_signature(change: dict[str, Any]) -> None:
    request = {**(WEBSOCKET if "raw_query" in change else REGISTRATION), **change}
    with pytest.raises(SignatureRefused, match="does not match"):
        verify(**request, secret_for=secret, now=datetime(2026, 11, 26, 6, 44, tzinfo=UTC))


def test_what_is_refused_before_the_signature() -> None:
    with pytest.raises(SignatureRefused, match="unknown access key id"):
        verify(**REGISTRATION, secret_for=lambda key: None, now=REGISTRATION_TIME)
    with pytest.raises(SignatureRefused, match="5 minutes"):  # a replay later
        verify(**REGISTRATION, secret_for=secret, now=REGISTRATION_TIME + timedelta(minutes=6))
    bearer = {**REGISTRATION, "headers": {**REGISTRATION["headers"], "authorization": "Bearer sk-x"}}
    with pytest.raises(SignatureRefused, match="Signature Version 4"):
        verify(**bearer, secret_for=secret, now=REGISTRATION_TIME)
    unsigned_host = dict(REGISTRATION["headers"], authorization=REGISTRATION["headers"]["authorization"].replace(
        "content-type;host;x-amz-date", "content-type;x-amz-date"))
    with pytest.raises(SignatureRefused, match="host"):
        verify(**{**REGISTRATION, "headers": unsigned_host}, secret_for=secret, now=REGISTRATION_TIME)


def test_credentials_name_their_owner_and_only_the_bridge_makes_them() -> None:
    sealer, other = Sealer(b"k" * 32), Sealer(b"o" * 32)
    key = access_key_id("tenant/with,odd chars", "sess_1")
    assert key_owner(key) == ("tenant/with,odd chars", "sess_1") and "/" not in key and "," not in key
    assert key_owner("AKIDPROBE") is None and key_owner("RBX1!!!") is None and key_owner("RBX1" + "e30") is None
    mine = secret_access_key(sealer, "a", "sess_1")
    assert mine != secret_access_key(sealer, "b", "sess_1") != secret_access_key(sealer, "a", "sess_2")
    assert mine != secret_access_key(other, "a", "sess_1")  # another deployment's key makes another secret
    assert ExecutorHub(sealer).secret_for(access_key_id("a", "sess_1")) == mine


def test_a_registration_token_is_spent_once_and_bounded() -> None:
    hub = ExecutorHub(Sealer(b"k" * 32))
    claim = Claim("a", "sess_1", "env_1")
    registration_id, token = hub.register(claim)
    assert hub.claim(registration_id, "wrong") is None
    assert hub.claim(registration_id, token) == claim
    assert hub.claim(registration_id, token) is None  # spent
    for _ in range(MAX_PENDING_PER_TENANT):
        hub.register(claim)
    with pytest.raises(RegistrationRefused):
        hub.register(claim)
    hub.register(Claim("b", "sess_2", "env_2"))  # another tenant's are its own
