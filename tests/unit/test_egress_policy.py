"""Network policies as a client writes them, and the deployment's rules: which hosts an allowlist lets through
(exact and ``*.`` entries, any case, IDNA, IP literals only when listed), which fields are refused with a 400 naming
them, and which addresses the proxy may connect to (the SSRF rules, widened only as the deployment says)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from responses_bridge.protocol.errors import APIError
from responses_bridge.sandbox.egress.policy import (
    MAX_SECRET_BYTES,
    MAX_SECRETS,
    EgressRules,
    NetworkPolicy,
    from_stored,
    match_entry,
    normalize_host,
    parse_policy,
    stored_form,
)


def allowlist(*domains: str, secrets: list[dict[str, object]] | None = None) -> NetworkPolicy:
    policy = parse_policy({"type": "allowlist", "allowed_domains": list(domains),
                           **({"domain_secrets": secrets} if secrets is not None else {})}, "network_policy")
    assert policy is not None
    return policy


def allowed(policy: NetworkPolicy, host: str) -> bool:
    normal = normalize_host(host)
    return normal is not None and policy.entry_for(normal) is not None


def test_exact_entries_match_only_themselves_in_any_case() -> None:
    policy = allowlist("api.example.com")
    assert allowed(policy, "api.example.com") and allowed(policy, "API.Example.COM") and allowed(
        policy, "api.example.com.")
    assert not allowed(policy, "example.com") and not allowed(policy, "x.api.example.com")
    assert not allowed(policy, "api.example.com.evil.net") and not allowed(policy, "evilapi.example.com")


def test_a_wildcard_matches_names_under_it_not_the_name_itself_nor_look_alikes() -> None:
    policy = allowlist("*.example.com")
    assert allowed(policy, "a.example.com") and allowed(policy, "a.b.EXAMPLE.com")
    assert not allowed(policy, "example.com") and not allowed(policy, "badexample.com")
    assert not allowed(policy, "example.com.evil.net")


def test_international_names_compare_in_their_idna_form() -> None:
    policy = allowlist("bücher.example")
    assert policy.domains == ("xn--bcher-kva.example",)
    assert allowed(policy, "xn--bcher-kva.example") and allowed(policy, "BÜCHER.example")
    assert not allowed(policy, "bucher.example")
    assert not allowed(allowlist("example.com"), "\u0435xample.com")  # a Cyrillic ie: another name


def test_ip_literals_pass_only_when_listed_themselves() -> None:
    policy = allowlist("*.example.com", "93.184.216.34", "2001:db8::1")
    assert allowed(policy, "93.184.216.34") and allowed(policy, "[2001:db8::1]") and allowed(policy, "2001:DB8::1")
    assert not allowed(policy, "93.184.216.35") and not allowed(allowlist("example.com"), "93.184.216.34")
    with pytest.raises(APIError) as refused:
        allowlist("*.10.0.0.1")
    assert refused.value.param == "network_policy.allowed_domains[0]"


@pytest.mark.parametrize(("policy", "param"), [
    ("allowlist", "network_policy"),
    ({"type": "open"}, "network_policy.type"),
    ({"type": "allowlist"}, "network_policy.allowed_domains"),
    ({"type": "allowlist", "allowed_domains": []}, "network_policy.allowed_domains"),
    ({"type": "allowlist", "allowed_domains": ["ok.com", 7]}, "network_policy.allowed_domains[1]"),
    ({"type": "allowlist", "allowed_domains": ["a b.com"]}, "network_policy.allowed_domains[0]"),
    ({"type": "allowlist", "allowed_domains": ["*"]}, "network_policy.allowed_domains[0]"),
    ({"type": "allowlist", "allowed_domains": ["a.*.com"]}, "network_policy.allowed_domains[0]"),
    ({"type": "allowlist", "allowed_domains": ["under_score.com"]}, "network_policy.allowed_domains[0]"),
    ({"type": "allowlist", "allowed_domains": ["a.com"], "extra": 1}, "network_policy.extra"),
    ({"type": "disabled", "allowed_domains": ["a.com"]}, "network_policy.allowed_domains"),
    ({"type": "allowlist", "allowed_domains": ["a.com"], "domain_secrets": [{"domain": "b.com", "name": "K",
                                                                           "value": "v"}]},
     "network_policy.domain_secrets[0].domain"),
    ({"type": "allowlist", "allowed_domains": ["a.com"], "domain_secrets": [{"domain": "a.com", "name": "PATH",
                                                                           "value": "v"}]},
     "network_policy.domain_secrets[0].name"),
    ({"type": "allowlist", "allowed_domains": ["a.com"], "domain_secrets": [{"domain": "a.com", "name": "LD_PRELOAD",
                                                                           "value": "v"}]},
     "network_policy.domain_secrets[0].name"),
    ({"type": "allowlist", "allowed_domains": ["a.com"], "domain_secrets": [{"domain": "a.com", "name": "1KEY",
                                                                           "value": "v"}]},
     "network_policy.domain_secrets[0].name"),
    ({"type": "allowlist", "allowed_domains": ["a.com"], "domain_secrets": [{"domain": "a.com", "name": "KEY",
                                                                           "value": "a\r\nX-Evil: 1"}]},
     "network_policy.domain_secrets[0].value"),
    ({"type": "allowlist", "allowed_domains": ["a.com"], "domain_secrets": [
        {"domain": "a.com", "name": "KEY", "value": "v"}, {"domain": "a.com", "name": "KEY", "value": "w"}]},
     "network_policy.domain_secrets[1].name"),
])
def test_a_bad_policy_is_a_400_naming_its_field(policy: object, param: str) -> None:
    with pytest.raises(APIError) as refused:
        parse_policy(policy, "network_policy")
    assert refused.value.status == 400 and refused.value.param == param


def _with_secrets(*values: str) -> dict[str, object]:
    return {"type": "allowlist", "allowed_domains": ["a.com"],
            "domain_secrets": [{"domain": "a.com", "name": f"K{at}", "value": value}
                               for at, value in enumerate(values)]}


@pytest.mark.parametrize(("values", "param", "bound"), [
    (["x" * (MAX_SECRET_BYTES + 1)], "network_policy.domain_secrets[0].value", f"{MAX_SECRET_BYTES} characters"),
    ([""], "network_policy.domain_secrets[0].value", "1 to"),
    ([f"secret-{at:04d}" for at in range(MAX_SECRETS + 1)], "network_policy.domain_secrets",
     f"at most {MAX_SECRETS} secrets"),
    (["inner-secret", "outer-inner-secret"], "network_policy.domain_secrets[1].value", "domain_secrets[0]"),
    (["outer-inner-secret", "inner-secret"], "network_policy.domain_secrets[1].value", "domain_secrets[0]"),
])
def test_secrets_past_a_bound_are_a_400_naming_it(values: list[str], param: str, bound: str) -> None:
    """What masking answers costs is bounded by what a container may have: 32 secrets of at most 8,192 characters,
    none inside another (where the inner one came back, the outer one would be masked only in part)."""
    with pytest.raises(APIError) as refused:
        parse_policy(_with_secrets(*values), "network_policy")
    assert refused.value.status == 400 and refused.value.param == param and bound in refused.value.message


def test_the_most_a_container_may_have_is_taken_and_equal_values_are_allowed() -> None:
    policy = parse_policy(_with_secrets(*(f"{at:02d}" + "v" * (MAX_SECRET_BYTES - 2) for at in range(MAX_SECRETS))),
                          "network_policy")
    assert policy is not None and len(policy.secrets) == MAX_SECRETS
    same = parse_policy(_with_secrets("same-value", "same-value"), "network_policy")
    assert same is not None and len(same.secrets) == 2


def test_disabled_and_absent_are_no_policy() -> None:
    assert parse_policy(None, "p") is None and parse_policy({"type": "disabled"}, "p") is None


def test_secrets_belong_to_the_hosts_their_domain_matches_and_are_stored_sealed() -> None:
    policy = allowlist("api.example.com", "*.svc.example", secrets=[
        {"domain": "API.example.com", "name": "API_KEY", "value": "s3cret-value"},
        {"domain": "*.svc.example", "name": "SVC_TOKEN", "value": "t0ken-value"}])
    assert [secret.name for secret in policy.secrets_for("api.example.com")] == ["API_KEY"]
    assert [secret.name for secret in policy.secrets_for("a.svc.example")] == ["SVC_TOKEN"]
    assert policy.secrets_for("other.example.com") == []
    assert "s3cret" not in repr(policy) and "s3cret" not in str(policy.public())
    stored = stored_form(policy, lambda value: f"sealed({value[::-1]})")
    assert "s3cret" not in str(stored)
    assert from_stored(stored, lambda sealed: sealed[len("sealed("):-1][::-1]) == policy


def test_the_rules_pass_public_addresses_and_refuse_what_mcp_refuses() -> None:
    rules = EgressRules.parse("")
    assert rules.allows(ipaddress.ip_address("93.184.216.34"), 443)
    for address in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "192.168.0.1", "::1", "fe80::1", "0.0.0.0",
                    "::ffff:127.0.0.1", "fc00::1", "100.64.0.1"):
        assert not rules.allows(ipaddress.ip_address(address), 80), address


def test_a_loopback_target_is_opened_one_port_at_a_time() -> None:
    rules = EgressRules.parse("127.0.0.1:8123, [::1]:8124, 10.0.0.0/8")
    assert rules.allows(ipaddress.ip_address("127.0.0.1"), 8123)
    assert rules.allows(ipaddress.ip_address("::ffff:127.0.0.1"), 8123)
    assert rules.allows(ipaddress.ip_address("::1"), 8124)
    assert not rules.allows(ipaddress.ip_address("127.0.0.1"), 8080)  # the bridge's own port, say
    assert not rules.allows(ipaddress.ip_address("127.0.0.2"), 8123)
    assert rules.allows(ipaddress.ip_address("10.9.9.9"), 5432) and not rules.allows(
        ipaddress.ip_address("192.168.1.1"), 80)
    for entry in ("127.0.0.0/8", "127.0.0.1", "0.0.0.0/0", "::/0", "::1", "nonsense", "1.2.3.4:0", "1.2.3.4:99999"):
        with pytest.raises(ValueError):
            EgressRules.parse(entry)


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
NAME = st.lists(LABEL, min_size=2, max_size=4).map(".".join)


@given(NAME, NAME)
def test_a_wildcard_never_matches_a_host_outside_its_suffix(suffix: str, host: str) -> None:
    entry = f"*.{suffix}"
    matched = match_entry((entry,), host) is not None
    assert matched == (host.endswith("." + suffix))


@given(st.text(max_size=80))
def test_normalizing_any_text_gives_none_or_a_stable_name(text: str) -> None:
    normal = normalize_host(text)
    if normal is not None:
        assert normalize_host(normal) == normal and normal == normal.lower() and normal.isascii()


def _own_address() -> str:
    """This machine's address on its way out (no packet is sent: a UDP socket's route choice)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))
        return str(probe.getsockname()[0])


def test_the_machines_own_addresses_are_refused_even_inside_a_listed_network() -> None:
    own = _own_address()
    if ipaddress.ip_address(own).is_loopback:
        pytest.skip("no address but loopback here")
    rules = EgressRules.parse(f"{own}/32")
    assert not rules.allows(ipaddress.ip_address(own), 8080)  # the bridge's ports listen on it too
    assert EgressRules.parse(f"{own}:8123").allows(ipaddress.ip_address(own), 8123)  # unless named with its port


@pytest.mark.parametrize("numeric", ["127.1", "0177.0.0.1", "0x7f.1", "2130706433", "0x7f000001", "127.0.1"])
def test_numeric_host_forms_are_addresses_and_never_match_a_name_pattern(numeric: str) -> None:
    from responses_bridge.sandbox.egress.policy import match_entry, normalize_host

    assert normalize_host(numeric) == "127.0.0.1"  # what inet_aton, and so the code's client, makes of it
    assert match_entry(("*.1", "*.0.1"), "127.0.0.1") is None


def test_a_wildcard_over_a_number_is_refused_as_an_allowlist_entry() -> None:
    for entry in ("*.1", "*.0x7f", "*.127.1"):
        with pytest.raises(APIError) as refused:
            parse_policy({"type": "allowlist", "allowed_domains": [entry]}, "network_policy")
        assert refused.value.param == "network_policy.allowed_domains[0]"
    listed = parse_policy({"type": "allowlist", "allowed_domains": ["0x7f.1"]}, "network_policy")
    assert listed is not None and listed.domains == ("127.0.0.1",)  # an address, listed as one
