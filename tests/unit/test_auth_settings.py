"""The pieces of ``RESPONSES_BRIDGE_AUTH`` that need no running server: ``--expires``, ``envoy-config``'s identity
flags and what they render, and the start-up warning for ``auth: none`` beyond loopback."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from responses_bridge.cli import main
from responses_bridge.commands.keys import parse_expires
from responses_bridge.config.settings import Settings
from responses_bridge.envoy_config import Auth, JwtExample, bootstrap_dict
from responses_bridge.protocol.errors import APIError
from responses_bridge.serve import warn_if_open
from responses_bridge.services.tenancy.identity import Identity
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.sqlite.api_keys import SQLiteApiKeyStore

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", NOW + 30 * 86400), ("12h", NOW + 12 * 3600), ("90m", NOW + 5400), ("2w", NOW + 14 * 86400),
    ("2027-01-31", datetime(2027, 1, 31, tzinfo=UTC).timestamp()),
    ("2027-01-31T18:00:00+02:00", datetime(2027, 1, 31, 16, tzinfo=UTC).timestamp()),
    ("2027-01-31T18:00:00", datetime(2027, 1, 31, 18, tzinfo=UTC).timestamp()),
])
def test_expires_takes_a_duration_or_an_iso_date(text: str, expected: float) -> None:
    assert parse_expires(text, NOW) == int(expected)


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "0h", "1y", "2026-05-31", "2026-13-01", "tomorrow"])
def test_expires_refuses_the_rest(text: str) -> None:
    with pytest.raises(ValueError, match="--expires"):
        parse_expires(text, NOW)


def _filters(config: dict[str, Any]) -> list[dict[str, Any]]:
    listener = config["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]  # type: ignore[no-any-return]


def _routes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return {route["name"]: route for route in hcm["route_config"]["virtual_hosts"][0]["routes"]}


BASE: dict[str, Any] = {"listen_port": 10000, "extproc_port": 50051, "http_port": 8080, "upstream": "http://127.0.0.1:8090/v1"}


def test_header_mode_removes_the_clients_header_first_and_forwards_the_trusted_one() -> None:
    jwt = JwtExample(issuer="https://issuer.example", jwks_file="/etc/jwks.json", tenant_claim="org")
    filters = _filters(bootstrap_dict(**BASE, auth=Auth("header", "x-team", jwt)))
    assert [f["name"] for f in filters[:3]] == ["envoy.filters.http.header_mutation", "envoy.filters.http.jwt_authn",
                                                "envoy.filters.http.header_to_metadata"]
    assert filters[0]["typed_config"]["mutations"] == {"request_mutations": [{"remove": "x-team"}]}
    provider = filters[1]["typed_config"]["providers"]["tenant_jwt"]
    assert provider["claim_to_headers"] == [{"header_name": "x-team", "claim_name": "org"}]
    assert provider["local_jwks"] == {"filename": "/etc/jwks.json"} and provider["forward"] is False
    rules = filters[2]["typed_config"]["request_rules"]
    assert {"header": "x-team", "remove": False, "on_header_present": {
        "metadata_namespace": "responses_bridge", "key": "tenant", "type": "STRING"}} in rules


def test_keys_mode_keeps_the_clients_key_from_every_upstream_route() -> None:
    routes = _routes(bootstrap_dict(**BASE, auth=Auth("keys")))
    for name in ("responses", "responses_unversioned"):
        assert routes[name]["request_headers_to_remove"] == ["authorization"]
    for name in ("models", "embeddings", "images_generations", "chat_completions"):  # the processor checks the key
        config = routes[name]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
        assert config["disabled"] is False
        assert config["config"]["overrides"]["processing_mode"]["request_header_mode"] == "SEND"
    none = _routes(bootstrap_dict(**BASE))
    assert "request_headers_to_remove" not in none["responses"]
    assert none["models"]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    assert _filters(bootstrap_dict(**BASE))[0]["name"] == "envoy.filters.http.header_to_metadata"


def test_envoy_config_renders_the_jwt_example(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_AUTH", "header")
    assert main(["envoy-config", "--jwt-issuer", "https://issuer.example", "--jwt-jwks", '{"keys": []}',
                 "--jwt-audience", "bridge"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    provider = _filters(config)[1]["typed_config"]["providers"]["tenant_jwt"]
    assert provider["audiences"] == ["bridge"] and provider["local_jwks"] == {"inline_string": '{"keys": []}'}


@pytest.mark.parametrize(("argv", "message"), [
    (["--auth", "keys", "--jwt-issuer", "i", "--jwt-jwks", "{}"], "auth: header"),
    (["--auth", "header", "--jwt-issuer", "i"], "--jwt-jwks-file or --jwt-jwks"),
    (["--auth", "header", "--jwt-jwks", "{}"], "need --jwt-issuer"),
])
def test_envoy_config_refuses_an_incomplete_jwt_example(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                        message: str) -> None:
    assert main(["envoy-config", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


@pytest.mark.parametrize(("auth", "http_host", "extproc_host", "warned"), [
    ("none", "0.0.0.0", "127.0.0.1", ["http=0.0.0.0:8080"]),
    ("none", "127.0.0.1", "::", ["extproc=:::50051"]),
    ("none", "localhost", "::1", []),
    ("keys", "0.0.0.0", "0.0.0.0", []),
    ("header", "0.0.0.0", "0.0.0.0", []),
])
def test_auth_none_beyond_loopback_is_one_warning(auth: str, http_host: str, extproc_host: str,
                                                  warned: list[str]) -> None:
    settings = Settings(auth=auth, http_host=http_host, extproc_host=extproc_host)  # type: ignore[arg-type]
    with capture_logs() as logs:
        assert warn_if_open(settings) == warned
    expected = [{"event": "auth_none_beyond_loopback", "log_level": "warning", "doors": warned,
                 "hint": "every caller shares one tenant: set RESPONSES_BRIDGE_AUTH=keys or header"}]
    assert logs == (expected if warned else [])


def test_keys_finds_the_database_as_serve_does(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``--db`` over ``RESPONSES_BRIDGE_DB`` over the configuration file's ``db``."""
    monkeypatch.delenv("RESPONSES_BRIDGE_DB", raising=False)
    monkeypatch.delenv("RESPONSES_BRIDGE_CONFIG", raising=False)
    from_env, from_file, from_flag = tmp_path / "env.db", tmp_path / "file.db", tmp_path / "flag.db"
    config = tmp_path / "bridge.yaml"
    config.write_text(f"db: {from_file}\n")
    assert main(["keys", "create", "--tenant", "file", "--config", str(config)]) == 0
    monkeypatch.setenv("RESPONSES_BRIDGE_DB", str(from_env))
    assert main(["keys", "create", "--tenant", "env", "--config", str(config)]) == 0
    assert main(["keys", "create", "--tenant", "flag", "--db", str(from_flag)]) == 0
    capsys.readouterr()
    for path, tenant in ((from_file, "file"), (from_env, "env"), (from_flag, "flag")):
        assert main(["keys", "list", "--db", str(path)]) == 0
        rows = capsys.readouterr().out.splitlines()
        assert [row.split()[1] for row in rows[1:]] == [tenant]


async def test_identity_resolves_keys_and_headers(tmp_path: Path) -> None:
    async with SQLiteResponseStore(str(tmp_path / "keys.db")) as store:
        keys = SQLiteApiKeyStore(store)
        key, row = await keys.create_key("acme")
        identity = Identity("keys", keys=keys, sidecar_token="t" * 64)
        assert await identity.tenant(f"Bearer {key}", "other") == "acme"
        assert await identity.tenant(f"bearer   {key}", None) == "acme"
        other_last = "B" if key.endswith("A") else "A"  # a secret one character off (never the key itself)
        for bad, code in ((None, "invalid_api_key"), ("Basic abc", "invalid_api_key"), ("Bearer ", "invalid_api_key"),
                          (f"Bearer {key}x", "invalid_api_key"), (f"Bearer {key[:-1]}{other_last}", "invalid_api_key")):
            with pytest.raises(APIError) as caught:
                await identity.tenant(bad, "acme")
            assert (caught.value.status, caught.value.code) == (401, code)
            assert key not in caught.value.message
        assert await keys.revoke_key(row.id) and await keys.revoke_key(row.id)  # twice: the first time stays
        assert (await keys.list_keys())[0].revoked_at is not None
        with pytest.raises(APIError, match="revoked"):
            await identity.tenant(f"Bearer {key}", None)
        assert identity.is_sidecar("t" * 64) and not identity.is_sidecar("t" * 63) and not identity.is_sidecar(None)
    header = Identity("header", "X-Team")
    assert await header.tenant(f"Bearer {key}", " beta ") == "beta"
    with pytest.raises(APIError) as caught:
        await header.tenant(None, "  ")
    assert caught.value.code == "missing_tenant" and "x-team" in caught.value.message
    assert await Identity().tenant(None, "someone") == "" and not Identity().is_sidecar("t" * 64)
