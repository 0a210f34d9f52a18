"""``multi_agent`` on a create request: a field of the beta surface only, checked, and taken off the body."""

from __future__ import annotations

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request_object
from responses_bridge.protocol.tools.multi_agent import NOT_BETA, BetaSurface, beta_surface, query_of

BETA = BetaSurface(query=True, header=True)


def _parse(extra: dict, beta: BetaSurface = BETA):  # type: ignore[no-untyped-def]
    return parse_request_object({"model": "m", "input": "hi", **extra}, beta=beta)


def test_the_beta_surface_is_the_query_and_the_header_together() -> None:
    assert beta_surface({"beta": "true"}, {"openai-beta": "assistants=v2, responses_multi_agent=v1"}).on
    assert not beta_surface({"beta": "true"}, {}).on
    assert not beta_surface({}, {"openai-beta": "responses_multi_agent=v1"}).on
    assert query_of("/v1/responses?stream=1&beta=true") == {"stream": "1", "beta": "true"}


def test_on_the_beta_surface_it_is_read_with_its_default() -> None:
    assert _parse({"multi_agent": {"enabled": True}}).multi_agent.max_concurrent_subagents == 6  # type: ignore[union-attr]
    assert _parse({"multi_agent": {"enabled": False, "max_concurrent_subagents": 2}}).multi_agent.enabled is False  # type: ignore[union-attr]
    assert _parse({}).multi_agent is None


@pytest.mark.parametrize(("beta", "lacks"), [
    (NOT_BETA, "lacks the query '?beta=true' and the header 'openai-beta: responses_multi_agent=v1'"),
    (BetaSurface(query=True), "lacks the header 'openai-beta: responses_multi_agent=v1'"),
    (BetaSurface(header=True), "lacks the query '?beta=true')"),
])
def test_off_the_beta_surface_it_is_a_400_saying_what_is_missing(beta: BetaSurface, lacks: str) -> None:
    with pytest.raises(APIError) as refused:
        _parse({"multi_agent": {"enabled": True}}, beta)
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, "multi_agent",
                                                                                "unknown_parameter")
    assert lacks in refused.value.message


@pytest.mark.parametrize(("value", "param"), [
    ("yes", "multi_agent"),
    ({}, "multi_agent.enabled"),
    ({"enabled": "true"}, "multi_agent.enabled"),
    ({"enabled": True, "max_concurrent_subagents": 0}, "multi_agent.max_concurrent_subagents"),
    ({"enabled": True, "max_concurrent_subagents": 65}, "multi_agent.max_concurrent_subagents"),
    ({"enabled": True, "max_concurrent_subagents": True}, "multi_agent.max_concurrent_subagents"),
    ({"enabled": True, "max_concurent_subagents": 2}, "multi_agent.max_concurent_subagents"),
])
def test_a_malformed_value_is_a_400_naming_it(value: object, param: str) -> None:
    with pytest.raises(APIError) as refused:
        _parse({"multi_agent": value})
    assert refused.value.status == 400 and refused.value.param == param


def test_the_beta_request_defines_no_field_the_table_lacks_but_multi_agent() -> None:
    """A beta request is walked against the GA request's table once ``multi_agent`` is taken off (the SDK's
    ``betas`` is the ``openai-beta`` header, never a body field). Should the SDK's beta request grow another field
    or nested key, this fails: the beta request then needs a table of its own."""
    from openai.types.beta import response_create_params as beta

    from responses_bridge.protocol.known_fields_table import REQUEST
    from tools.docs import known_fields

    table = known_fields._typed_dict(beta.ResponseCreateParamsBase, set())
    assert table.pop("multi_agent") == {"enabled": None, "max_concurrent_subagents": None}
    del table["betas"]
    for name in known_fields.UNCHECKED:
        table[name] = None
    for name in known_fields.EXTENSIONS:
        table.setdefault(name, None)
    for tool, name in known_fields.OPENED:  # the deployment opens them on both requests
        table["tools"][1][1][tool][name] = None
    assert table == REQUEST
