"""The judgements behind ``auth: none``'s Host check (adapters/http/hosts.py) and the tenant name rule
(services/tenancy/tenant_names.py), case by case; the integration tests (test_host_names.py, test_console_edges.py)
show them through real sidecars."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from responses_bridge.adapters.http.hosts import KEPT, HostGate
from responses_bridge.envoy_config.names import VIA_DOOR
from responses_bridge.services.tenancy.tenant_names import MAX_CHARS, tenant_name_problem


def admits(gate: HostGate, host: str | None, **headers: str) -> bool:
    given = CIMultiDict(headers)
    if host is not None:
        given["Host"] = host
    return gate.admits(make_mocked_request("GET", "/v1/models", headers=given))


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "LOCALHOST:1", "localhost.:8080", "a.localhost",
                                  "deep.name.localhost:9", "127.0.0.1", "127.0.0.1:8080", "127.255.0.9:1", "[::1]",
                                  "[::1]:8080", "localhost.localdomain"])
def test_loopback_names_and_addresses_are_admitted(host: str) -> None:
    assert admits(HostGate(), host)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "localhost.evil.example", "evillocalhost",
                                  "127.0.0.1.nip.io", "0.0.0.0:8080", "10.0.0.1", "[2001:db8::1]:80", "[::1", "[]",
                                  ":8080", "127.1", "2130706433", "a b", "\x00"])
def test_other_names_are_refused(host: str) -> None:
    assert not admits(HostGate(), host)


def test_named_hosts_any_case_any_port_and_the_star() -> None:
    gate = HostGate(" Bridge.Internal , 10.1.2.3,[fd00::1] ,")
    for host in ("bridge.internal", "BRIDGE.internal:8080", "10.1.2.3:1", "[fd00::1]:80", "localhost"):
        assert admits(gate, host), host
    for host in ("other.internal", "internal", "10.1.2.4"):
        assert not admits(gate, host), host
    assert admits(HostGate("*"), "anything.example:1")


def test_the_bound_host_counts_when_it_is_loopback_only() -> None:
    assert not admits(HostGate(bound_host="0.0.0.0"), "0.0.0.0:8080")
    assert not admits(HostGate(bound_host="bridge.example"), "bridge.example")


def test_a_request_without_host_is_no_browsers_and_envoys_via_admits_any_name() -> None:
    gate = HostGate()
    assert admits(gate, None)
    assert admits(gate, "gateway.example", Via=VIA_DOOR)
    assert admits(gate, "gateway.example", Via=f"1.0 front, {VIA_DOOR}")
    assert not admits(gate, "gateway.example", Via="1.1 squid")
    assert not admits(gate, "gateway.example")  # what Envoy admitted is not remembered for others


def test_judgements_kept_are_bounded() -> None:
    gate = HostGate()
    for n in range(KEPT * 4):
        assert not admits(gate, f"n{n}.example")
    assert len(gate._judged) == KEPT
    assert admits(gate, "localhost:1") and not admits(gate, "n0.example")


@pytest.mark.parametrize("name", ["alpha", "operator", "team.a_b-c@x+y~z", "équipe", "租户7", "A" * MAX_CHARS])
def test_tenant_names_of_letters_digits_and_five_marks_are_accepted(name: str) -> None:
    assert tenant_name_problem(name) is None


@pytest.mark.parametrize(("name", "said"), [
    ("", "empty"), ("a" * (MAX_CHARS + 1), f"{MAX_CHARS + 1} characters"), ("a" * 5000, "5000 characters"),
    ("*", "'*'"), ("a\nb", "U+000A"), ("a\x00b", "U+0000"), ("a\u202eb", "U+202E"), ("a b", "U+0020"),
    ("a/b", "'/'"), ("a\\b", "'\\\\'"), ("a:b", "':'"), ("a,b", "','"), ("a;b", "';'"), ("a|b", "'|'"),
    ("a'b", "\"'\""), ("a\u200bb", "U+200B"), ("a\tb", "U+0009"),
])
def test_bad_tenant_names_are_refused_saying_why(name: str, said: str) -> None:
    problem = tenant_name_problem(name)
    assert problem is not None and said in problem and "letters, digits" in problem
    assert "\n" not in problem and "\x00" not in problem and len(problem) < 400
