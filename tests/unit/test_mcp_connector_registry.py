"""run/tools/mcp_connectors.py and config/connectors.py: a request's ``connector_id`` resolved through the
operator's registry (its URL and headers, the caller's bearer forwarded or not), the refusals, and the setting as the
environment gives it. The served path (a real MCP server behind the registry): the integration tests."""

from __future__ import annotations

from typing import Any

import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.known_fields import check_known_fields
from responses_bridge.run.tools.mcp_config import parse_mcp_tool
from responses_bridge.run.tools.mcp_connectors import MCPConnectorEntry
from responses_bridge.run.tools.mcp_model import mask_authorization

REGISTRY = {"connector_googledrive": MCPConnectorEntry("https://drive-mcp.internal/mcp", {"X-Api-Key": "op-key-1"}),
            "asdk_app_notes": MCPConnectorEntry("https://notes.internal/mcp", {}, forward_authorization=False)}


def parse(**fields: Any) -> Any:
    return parse_mcp_tool({"type": "mcp", "server_label": "drive", **fields}, 2, REGISTRY)


def test_a_connector_id_is_its_registry_entrys_server_with_the_callers_bearer() -> None:
    server = parse(connector_id="connector_googledrive", authorization="oauth-tok-9",
                   headers={"X-Api-Key": "callers-own", "X-Trace": "t1"})
    assert server.server_url == "https://drive-mcp.internal/mcp" and server.connector_id == "connector_googledrive"
    # the operator's fixed header wins over the request's of that name; the caller's token is the bearer
    assert dict(server.headers) == {"X-Trace": "t1", "Authorization": "Bearer oauth-tok-9", "X-Api-Key": "op-key-1"}
    assert server.param("server_url") == "tools[2].connector_id"  # a refusal names what the caller gave
    assert "op-key-1" not in repr(server) and "oauth-tok-9" not in repr(server)


def test_an_entry_that_does_not_forward_authorization_sends_no_bearer() -> None:
    server = parse(connector_id="asdk_app_notes", authorization="oauth-tok-9")
    assert dict(server.headers) == {}


def test_an_unknown_connector_id_names_it_and_the_ids_served() -> None:
    with pytest.raises(APIError) as raised:
        parse(connector_id="connector_gmail")
    error = raised.value
    assert (error.status, error.param, error.code) == (400, "tools[2].connector_id", "invalid_value")
    assert "'connector_gmail'" in error.message and "'asdk_app_notes', 'connector_googledrive'" in error.message
    assert "RESPONSES_BRIDGE_MCP_CONNECTORS" in error.message
    with pytest.raises(APIError) as none:  # a server with no registry says it serves none
        parse_mcp_tool({"type": "mcp", "server_label": "d", "connector_id": "connector_gmail"}, 0)
    assert "serves no connectors" in none.value.message and none.value.param == "tools[0].connector_id"


def test_connector_id_with_server_url_is_refused() -> None:
    with pytest.raises(APIError) as raised:
        parse(connector_id="connector_googledrive", server_url="https://other.example.com/mcp")
    assert (raised.value.param, raised.value.code) == ("tools[2].connector_id", "invalid_value")
    assert "Only one of 'server_url' and 'connector_id'" in raised.value.message


def test_neither_server_url_nor_connector_id_is_a_missing_parameter() -> None:
    with pytest.raises(APIError) as raised:
        parse()
    assert (raised.value.param, raised.value.code) == ("tools[2].server_url", "missing_required_parameter")


def test_a_connectors_answer_is_masked_of_every_operator_header() -> None:
    server = parse(connector_id="connector_googledrive", authorization="oauth-tok-9")
    assert mask_authorization("key op-key-1 tok oauth-tok-9", server) == "key [redacted] tok [redacted]"
    plain = parse_mcp_tool({"type": "mcp", "server_label": "p", "server_url": "https://x.example.com/mcp",
                            "headers": {"X-Mine": "shown-ok"}}, 0)
    assert mask_authorization("shown-ok", plain) == "shown-ok"  # a caller's own header is the caller's


def test_any_connector_id_passes_the_known_fields_walk() -> None:
    # the SDK closes connector_id to OpenAI's eight; the registry decides here (a Codex app's id, an operator's)
    check_known_fields({"model": "m", "tools": [{"type": "mcp", "server_label": "n", "connector_id": "asdk_app_x"}]})


def test_the_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIVE_MCP_KEY", "env-key-3")
    monkeypatch.setenv("RESPONSES_BRIDGE_MCP_CONNECTORS", '{"connector_googledrive": {"server_url": '
                       '"http://127.0.0.1:9/mcp", "headers": {"X-Fixed": "lit-4"}, "headers_env": '
                       '{"X-Api-Key": "DRIVE_MCP_KEY"}}, "asdk_app_1": {"server_url": "https://a.internal/mcp", '
                       '"headers": {"Authorization": "Bearer op"}}}')
    settings = Settings()
    registry = settings.mcp_connector_registry()
    drive = registry["connector_googledrive"]
    assert drive.server_url == "http://127.0.0.1:9/mcp" and drive.forward_authorization is True
    assert dict(drive.headers) == {"X-Fixed": "lit-4", "X-Api-Key": "env-key-3"}
    # a fixed Authorization header is never replaced by the caller's token
    assert registry["asdk_app_1"].request_headers({}, "caller") == {"Authorization": "Bearer op"}
    assert "lit-4" not in str(settings.model_dump(mode="json"))  # config show prints it masked


@pytest.mark.parametrize(("value", "said"), [
    ('{"bad id!": {"server_url": "https://a.internal/mcp"}}', "not a connector id"),
    ('{"c": {"server_url": "ftp://a.internal/"}}', "http:// or https://"),
    ('{"c": {"server_url": "https://a.internal/", "headers_env": {"X-K": "NO_SUCH_VARIABLE_SET_1"}}}', "not set"),
    ('{"c": {"server_url": "https://a.internal/", "surprise": 1}}', "surprise"),
    ('{"c": {"server_url": "https://a.internal/", "headers": {"Authorization": "Bearer x"}, '
     '"forward_authorization": true}}', "drop one of them"),
])
def test_a_bad_setting_stops_the_start(monkeypatch: pytest.MonkeyPatch, value: str, said: str) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_MCP_CONNECTORS", value)
    with pytest.raises(ValueError, match=said):
        Settings()


async def test_a_connector_on_a_refused_address_names_the_id_and_not_the_host() -> None:
    from responses_bridge.run.tools.mcp import MCPTools
    from responses_bridge.run.tools.mcp_config import MCPLimits

    registry = {"connector_gmail": MCPConnectorEntry("http://127.0.0.1:9/mcp", {})}
    tools = MCPTools(MCPLimits(), connectors=registry)  # loopback is not among the allowed hosts
    server = parse_mcp_tool({"type": "mcp", "server_label": "mail", "connector_id": "connector_gmail"}, 1,
                            tools.connectors)
    with pytest.raises(APIError) as refused:
        await tools.check_server(server)
    error = refused.value
    assert (error.status, error.param, error.code) == (400, "tools[1].connector_id", "mcp_host_not_allowed")
    assert "connector_gmail" in error.message and "127.0.0.1" not in error.message
    await MCPTools(MCPLimits(allowed_hosts="127.0.0.1"), connectors=registry).check_server(server)  # allowed: no 400
