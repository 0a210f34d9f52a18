"""run/tools/mcp_config.py and net/host_policy.py: the mcp tool's declaration, its filters and approval rules, and which
addresses the host policy lets the bridge reach. Pure rules; the I/O is in test_mcp_tool.py."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.net.host_policy import HostNotAllowed, HostPolicy
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.tools.mcp import approval_required, parse_mcp_tool
from responses_bridge.run.tools.mcp_config import MCPLimits

BASE = {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com/mcp"}


def parse(**fields: Any) -> Any:
    return parse_mcp_tool({**BASE, **fields}, 3)


def test_the_sdk_shape_parses_into_a_server() -> None:
    server = parse(headers={"X-Api-Key": "k1"}, allowed_tools={"tool_names": ["a"], "read_only": True},
                   require_approval={"never": {"tool_names": ["a"]}}, server_description="Docs search",
                   defer_loading=True, allowed_callers=["direct"])
    assert server.server_label == "docs" and server.server_url == "https://mcp.example.com/mcp"
    assert dict(server.headers) == {"X-Api-Key": "k1"}
    assert server.allowed_tools is not None and server.allowed_tools.tool_names == {"a"}
    assert server.allowed_tools.read_only is True
    assert server.server_description == "Docs search" and server.defer_loading is True
    assert server.param("server_url") == "tools[3].server_url"


def test_authorization_becomes_a_bearer_header_that_wins_over_a_header_of_that_name() -> None:
    server = parse(headers={"authorization": "Basic old", "X-Other": "v"}, authorization="tok-123")
    assert dict(server.headers) == {"X-Other": "v", "Authorization": "Bearer tok-123"}


def test_secrets_stay_out_of_repr() -> None:
    server = parse(headers={"X-Api-Key": "hdr-secret-1"}, authorization="auth-secret-2")
    assert "hdr-secret-1" not in repr(server) and "auth-secret-2" not in repr(server)


@pytest.mark.parametrize(("fields", "param", "code"), [
    ({"server_label": ""}, "tools[3].server_label", "invalid_value"),
    ({"server_label": "has space"}, "tools[3].server_label", "invalid_value"),
    ({"server_url": None}, "tools[3].server_url", "missing_required_parameter"),
    ({"server_url": "ftp://mcp.example.com/"}, "tools[3].server_url", "invalid_value"),
    ({"server_url": "file:///etc/passwd"}, "tools[3].server_url", "invalid_value"),
    ({"connector_id": "connector_gmail"}, "tools[3].connector_id", "invalid_value"),  # with server_url
    ({"tunnel_id": "tun_1"}, "tools[3].tunnel_id", "unsupported_parameter"),
    ({"headers": ["X-A: b"]}, "tools[3].headers", "invalid_value"),
    ({"headers": {"X-A": "b\r\nX-Injected: 1"}}, "tools[3].headers", "invalid_value"),
    ({"headers": {"bad name": "v"}}, "tools[3].headers", "invalid_value"),
    ({"authorization": ""}, "tools[3].authorization", "invalid_value"),
    ({"allowed_tools": "add"}, "tools[3].allowed_tools", "invalid_value"),
    ({"allowed_tools": [1]}, "tools[3].allowed_tools", "invalid_value"),
    ({"allowed_tools": {"tool_names": "add"}}, "tools[3].allowed_tools.tool_names", "invalid_value"),
    ({"allowed_tools": {"names": ["add"]}}, "tools[3].allowed_tools.names", "unknown_parameter"),
    ({"require_approval": "sometimes"}, "tools[3].require_approval", "invalid_value"),
    ({"require_approval": {"always": {"read_only": "yes"}}}, "tools[3].require_approval.always.read_only",
     "invalid_value"),
    ({"require_approval": {"maybe": {}}}, "tools[3].require_approval.maybe", "unknown_parameter"),
    ({"surprise": 1}, "tools[3].surprise", "unknown_parameter"),
])
def test_bad_declarations_are_400s_naming_the_field(fields: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(APIError) as raised:
        parse(**fields)
    assert (raised.value.status, raised.value.param, raised.value.code) == (400, param, code)


def test_a_bad_header_value_is_not_quoted_back() -> None:
    with pytest.raises(APIError) as raised:
        parse(headers={"X-Api-Key": "secret-value\n"})
    assert "secret-value" not in raised.value.message


def test_allowed_tools_filters() -> None:
    assert parse().allows("anything", None)
    names = parse(allowed_tools=["add", "echo"])
    assert names.allows("add", None) and not names.allows("fail", None)
    read_only = parse(allowed_tools={"read_only": True})
    assert read_only.allows("lookup", True) and not read_only.allows("add", None)
    both = parse(allowed_tools={"tool_names": ["lookup", "add"], "read_only": True})
    assert both.allows("lookup", True) and not both.allows("add", False) and not both.allows("x", True)
    assert parse(allowed_tools={}).allows("anything", None)


@pytest.mark.parametrize(("rule", "tool", "read_only", "required"), [
    (None, "add", None, True),  # unset means always, as in OpenAI's API
    ("always", "add", None, True),
    ("never", "add", None, False),
    ({"never": {"tool_names": ["add"]}}, "add", None, False),
    ({"never": {"tool_names": ["add"]}}, "echo", None, True),  # not listed: the default, approval
    ({"always": {"tool_names": ["fail"]}}, "fail", None, True),
    ({"always": {"tool_names": ["fail"]}}, "add", None, True),
    ({"always": {"tool_names": ["fail"]}, "never": {"tool_names": ["add"]}}, "add", None, False),
    ({"always": {"tool_names": ["x"]}, "never": {"tool_names": ["x"]}}, "x", None, True),  # always wins
    ({"never": {"read_only": True}}, "lookup", True, False),
    ({"never": {"read_only": True}}, "add", None, True),
])
def test_approval_rules(rule: Any, tool: str, read_only: bool | None, required: bool) -> None:
    server = parse(require_approval=rule) if rule is not None else parse()
    assert approval_required(server, tool, read_only=read_only) is required


def addr(text: str) -> Any:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1",
                                     "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1",
                                     "fe80::1", "fc00::1", "fec0::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
                                     "::127.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::", "2002:a9fe:a9fe::1"])
def test_non_public_addresses_are_denied_by_default(address: str) -> None:
    assert not HostPolicy.parse("").allows_address(addr(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "64:ff9b::808:808",
                                     "2002:808:808::1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert HostPolicy.parse("").allows_address(addr(address))


def test_allow_list_entries_names_ips_and_cidrs() -> None:
    policy = HostPolicy.parse(" mcp.internal. , 10.0.0.0/8, 127.0.0.1, [::1], fd00::/8,")
    assert policy.allows_name("MCP.internal") and policy.allows_name("mcp.internal.")
    assert not policy.allows_name("other.internal")
    for allowed in ("10.200.3.4", "127.0.0.1", "::1", "fd12::5", "::ffff:127.0.0.1"):
        assert policy.allows_address(addr(allowed)), allowed
    for denied in ("127.0.0.2", "192.168.0.1", "169.254.169.254", "fe80::1"):
        assert not policy.allows_address(addr(denied)), denied


def test_a_name_is_refused_if_any_of_its_addresses_is() -> None:
    policy = HostPolicy.parse("")
    with pytest.raises(HostNotAllowed, match=r"resolves to 10\.0\.0\.5"):
        policy.check("mixed.example.com", [addr("93.184.216.34"), addr("10.0.0.5")])
    policy.check("public.example.com", [addr("93.184.216.34")])
    HostPolicy.parse("mixed.example.com").check("mixed.example.com", [addr("10.0.0.5")])


def test_settings_give_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"MCP_ALLOWED_HOSTS": "10.0.0.0/8", "MCP_CONNECT_TIMEOUT": "1.5",
                        "MCP_CALL_TIMEOUT": "7", "MCP_TOTAL_TIMEOUT": "9", "MCP_LIST_TTL": "0",
                        "MCP_MAX_OUTPUT_BYTES": "1000"}.items():
        monkeypatch.setenv(f"RESPONSES_BRIDGE_{name}", value)
    assert Settings().mcp_limits() == MCPLimits(allowed_hosts="10.0.0.0/8", connect_timeout=1.5,
                                                call_timeout=7, total_timeout=9, list_ttl=0,
                                                max_output_bytes=1000)


def test_settings_defaults_are_the_limits_defaults() -> None:
    assert Settings().mcp_limits() == MCPLimits()


def test_settings_refuse_a_zero_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_MCP_CALL_TIMEOUT", "0")
    with pytest.raises(ValueError):
        Settings()
