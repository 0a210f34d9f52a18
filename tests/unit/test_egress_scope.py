"""An agent environment's block list (which hosts it lets through, its 400s and bounds, its stored form), whether one
policy stays within another (what a template's network may be narrowed to), and the bounds on secrets that come
from a session's vaults."""

from __future__ import annotations

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.sandbox.egress.policy import (
    MAX_DOMAINS,
    MAX_SECRETS,
    DomainSecret,
    NetworkPolicy,
    from_stored,
    normalize_host,
    parse_policy,
    stored_form,
)
from responses_bridge.sandbox.egress.scope import block_list, check_secrets, within
from responses_bridge.services.agents.environments.environments import network_within


def allowlist(*domains: str) -> NetworkPolicy:
    policy = parse_policy({"type": "allowlist", "allowed_domains": list(domains)}, "p")
    assert policy is not None
    return policy


def passes(policy: NetworkPolicy, host: str) -> bool:
    normal = normalize_host(host)
    assert normal is not None
    return policy.entry_for(normal) is not None


def test_a_block_list_lets_through_every_host_but_its_names_and_those_under_them() -> None:
    policy = block_list(["Blocked.Example", "10.0.0.1"], "blocked_domains")
    assert policy.blocked and policy.domains == ("blocked.example", "10.0.0.1")
    assert not passes(policy, "blocked.example") and not passes(policy, "API.blocked.example.")
    assert not passes(policy, "10.0.0.1")
    assert passes(policy, "notblocked.example") and passes(policy, "example") and passes(policy, "10.0.0.2")
    assert passes(policy, "blocked.example.com")  # a name that merely starts alike
    assert policy.entry_for("other.example") == "*"
    nothing = block_list(None, "blocked_domains")  # access: enabled
    assert nothing.blocked and passes(nothing, "anything.example")


@pytest.mark.parametrize("value", [["*.example.com"], ["exa mple.com"], [7], "example.com",
                                   [f"d{n}.example" for n in range(MAX_DOMAINS + 1)]])
def test_a_bad_block_list_is_a_400_naming_it(value: object) -> None:
    with pytest.raises(APIError) as raised:
        block_list(value, "environment.network.blocked_domains")
    assert raised.value.status == 400
    assert raised.value.param is not None and raised.value.param.startswith("environment.network.blocked_domains")


def test_a_block_list_is_stored_and_opened_as_such() -> None:
    policy = NetworkPolicy(("blocked.example",), (DomainSecret("api.example", "TOKEN", "value-1"),), blocked=True)
    stored = stored_form(policy, lambda value: f"sealed:{value}")
    assert stored["type"] == "blocklist" and "allowed_domains" not in stored
    assert from_stored(stored, lambda sealed: sealed.removeprefix("sealed:")) == policy
    assert policy.public() == {"type": "allowlist"}
    plain = allowlist("a.example")
    assert from_stored(stored_form(plain, str), str) == plain


@pytest.mark.parametrize(("inner", "outer", "expected"), [
    (None, None, True),
    (None, allowlist("a.example"), True),
    (allowlist("a.example"), None, False),
    (allowlist("a.example"), allowlist("a.example", "b.example"), True),
    (allowlist("a.example", "c.example"), allowlist("a.example"), False),
    (allowlist("x.a.example"), allowlist("*.a.example"), True),
    (allowlist("*.x.a.example"), allowlist("*.a.example"), True),
    (allowlist("*.a.example"), allowlist("x.a.example"), False),
    (allowlist("a.example"), allowlist("*.a.example"), False),  # a wildcard is not the name itself
    (allowlist("*.example"), allowlist("*.a.example"), False),
    (block_list(["a.example"], "b"), allowlist("a.example"), False),
    (allowlist("b.example"), block_list(["a.example"], "b"), True),
    (allowlist("x.a.example"), block_list(["a.example"], "b"), False),
    (allowlist("*.example"), block_list(["a.example"], "b"), False),  # it would reach a.example's names
    (allowlist("*.x.a.example"), block_list(["a.example"], "b"), False),
    (allowlist("*.b.example"), block_list(["a.example"], "b"), True),
    (block_list(["a.example", "b.example"], "b"), block_list(["a.example"], "b"), True),
    (block_list(["example"], "b"), block_list(["a.example"], "b"), True),  # blocks a.example by being above it
    (block_list(["x.a.example"], "b"), block_list(["a.example"], "b"), False),
    (block_list(None, "b"), block_list(["a.example"], "b"), False),
    (block_list(["a.example"], "b"), block_list(None, "b"), True),
    (block_list(None, "b"), None, False),
])
def test_within_says_whether_a_policy_never_broadens_another(inner: NetworkPolicy | None,
                                                              outer: NetworkPolicy | None, expected: bool) -> None:
    assert within(inner, outer) is expected


def test_vault_secrets_are_held_to_the_policys_bounds() -> None:
    fine = [DomainSecret("a.example", "TOKEN", "abc"), DomainSecret("b.example", "TOKEN", "abc"),
            DomainSecret("a.example", "OTHER", "xyz")]
    assert check_secrets(fine, "vault_ids") == tuple(fine)
    bad = [
        [DomainSecret("a.example", "PATH", "abc")],  # one the sandbox sets itself
        [DomainSecret("a.example", "LD_PRELOAD", "abc")],
        [DomainSecret("a.example", "TOKEN", "line\nbreak")],
        [DomainSecret("a.example", "TOKEN", "abc"), DomainSecret("b.example", "TOKEN", "abd")],  # two values
        [DomainSecret("a.example", "ONE", "secret"), DomainSecret("a.example", "TWO", "a-secret-longer")],
        [DomainSecret("a.example", f"N{n}", f"value-{n:04d}") for n in range(MAX_SECRETS + 1)],
    ]
    for secrets in bad:
        with pytest.raises(APIError) as raised:
            check_secrets(secrets, "vault_ids")
        assert raised.value.status == 400 and raised.value.param == "vault_ids"
        assert not any(secret.value in str(raised.value) for secret in secrets if len(secret.value) > 3)


@pytest.mark.parametrize(("inner", "outer", "expected"), [
    ({"access": "disabled"}, {"access": "enabled"}, True),
    (None, {"access": "restricted", "allowed_domains": ["a.example"]}, True),
    ({"access": "enabled"}, {"access": "restricted", "blocked_domains": ["a.example"]}, False),
    ({"access": "restricted", "blocked_domains": ["a.example"]}, {"access": "enabled"}, True),
    ({"access": "restricted", "allowed_domains": ["b.example"]},
     {"access": "restricted", "blocked_domains": ["a.example"]}, True),
    ({"access": "restricted", "allowed_domains": ["A.example", "b.example"]},
     {"access": "restricted", "allowed_domains": ["a.example"]}, False),
    ({"access": "restricted", "allowed_domains": ["A.example"]},
     {"access": "restricted", "allowed_domains": ["a.example", "b.example"]}, True),
    ({"access": "restricted", "allowed_domains": ["a.example"]}, {"access": "disabled"}, False),
])
def test_an_environments_network_within_its_templates(inner: object, outer: object, expected: bool) -> None:
    assert network_within(inner, outer) is expected


def test_a_network_that_is_not_one_is_a_400_naming_it() -> None:
    with pytest.raises(APIError) as raised:
        network_within({"access": "restricted", "blocked_domains": ["*.a.example"]}, None)
    assert raised.value.param == "environment.network.blocked_domains[0]"
