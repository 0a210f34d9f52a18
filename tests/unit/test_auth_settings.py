"""The pieces of ``RESPONSES_BRIDGE_AUTH`` that need no running server: ``--expires``, ``envoy-config``'s identity
flags and what they render, and the start-up warning for ``auth: none`` beyond loopback."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from responses_bridge.cli import main
from responses_bridge.config import Settings
from responses_bridge.envoy_config import Auth, JwtExample, bootstrap_dict
from responses_bridge.keys_command import parse_expires
from responses_bridge.serve import warn_if_open

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
    for name in ("models", "chat_completions"):  # the processor checks the key and swaps it
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
